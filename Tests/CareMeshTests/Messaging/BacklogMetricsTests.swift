import AlertsService
import CareMeshContracts
import CareMeshRPC
import CareMeshRouter
import CareMeshTesting
import Foundation
import Testing

/// The edge's `/metrics` carries every service's backlog (`Health/Backlog`): live workers,
/// outbox heads, consumers' cursors and lag, due and failed jobs, messaging's queues. Checked
/// against the database through a stack of identity, dispatch and messaging.
@Suite(.serialized) struct BacklogMetricsTests {
    /// The value of the sample `series` (name and labels, as written) in a scrape.
    static func sample(_ scrape: String, _ series: String) -> Double? {
        for line in scrape.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }

    static func scrape(_ s: SmsTests.Stack) async throws -> String {
        let (status, text) = try await SmsTests.get("\(s.edgeURL)/metrics")
        #expect(status == 200)
        return text
    }

    @Test("/metrics: workers, outbox heads, cursors and lag, due and failed jobs, messaging's queues, as the database has them")
    func backlogOfEveryService() async throws {
        try await SmsTests().withStack(dispatch: true) { s in
            // A bare worker (no database, no Backlog) is counted as a worker and left out of the rest.
            let bare = ServiceWorker(configuration: TestStack.workerConfiguration("bare", endpoint: s.router.boundEndpoints.worker),
                                     logger: TestStack.quietLogger("bare"))
            try await TestStack.withServices([bare]) {
                // Dispatch applies identity's events (the admin's registration made some): its lag reaches 0.
                let identityHead = try await s.db.count("SELECT coalesce(max(seq), 0) FROM identity.outbox")
                #expect(identityHead > 0)
                let settled = try await TestStack.eventually(timeout: .seconds(10)) {
                    let text = try await Self.scrape(s)
                    for service in ["identity", "dispatch", "messaging", "bare"] {
                        guard Self.sample(text, #"caremesh_router_workers{service="\#(service)"}"#) == 1 else {
                            throw RPCError(.unavailable, "\(service) not registered yet")
                        }
                    }
                    guard Self.sample(text, #"caremesh_event_consumer_lag{service="dispatch",source="identity"}"#) == 0 else {
                        throw RPCError(.unavailable, "dispatch still behind identity")
                    }
                    return text
                }
                for service in ["identity", "dispatch", "messaging"] {
                    #expect(Self.sample(settled, #"caremesh_backlog_up{service="\#(service)"}"#) == 1)
                }
                #expect(!settled.contains(#"service="bare",source"#) && !settled.contains(#"caremesh_backlog_up{service="bare"}"#))
                // Messaging asks for alerts' events, but no alerts worker ever registered: not listed.
                #expect(!settled.contains(#"caremesh_router_workers{service="alerts"}"#))
                #expect(Self.sample(settled, #"caremesh_outbox_head_seq{service="identity"}"#) == Double(identityHead))
                #expect(Self.sample(settled, #"caremesh_event_cursor_seq{service="dispatch",source="identity"}"#) == Double(identityHead))
                #expect(Self.sample(settled, #"caremesh_jobs_due{service="messaging"}"#) == 0)
                #expect(Self.sample(settled, #"caremesh_queue_waiting{service="messaging",queue="sms_due"}"#) == 0)

                // Work that waits: a job of a kind nobody runs, due 90 s ago; one that failed for
                // good; an SMS due and held by another sender's lease.
                _ = try await s.db.sql("""
                    INSERT INTO messaging.jobs (kind, run_at) VALUES ('backlog-test', now() - interval '90 seconds')
                    """)
                _ = try await s.db.sql("""
                    INSERT INTO messaging.jobs (kind, state, attempts, finished_at, last_error)
                    VALUES ('backlog-test', 'failed', 10, now(), 'gave up')
                    """)
                _ = try await s.db.sql("""
                    INSERT INTO messaging.sms_messages (phone_number, message_content, message_type, encoding, segments,
                        client_correlator, sender_address, status, next_attempt_at, lease_until, created_by)
                    VALUES ('+33610000000', 'held', 'custom', 'GSM-7', 1, 'backlog-test', 'CareMesh', 'pending',
                        now() - interval '1 minute', now() + interval '1 hour', 'test')
                    """)
                let text = try await Self.scrape(s)
                #expect(Self.sample(text, #"caremesh_jobs_due{service="messaging"}"#) == 1)
                let oldest = Self.sample(text, #"caremesh_jobs_oldest_due_seconds{service="messaging"}"#) ?? 0
                #expect(oldest >= 90 && oldest < 150)
                #expect(Self.sample(text, #"caremesh_jobs_failed{service="messaging"}"#) == 1)
                #expect(Self.sample(text, #"caremesh_jobs_failed{service="identity"}"#) == 0)
                #expect(Self.sample(text, #"caremesh_queue_waiting{service="messaging",queue="sms_due"}"#) == 1)
                #expect(Self.sample(text, #"caremesh_queue_waiting{service="messaging",queue="webhooks_waiting"}"#) == 0)
                #expect(Self.sample(text, #"caremesh_queue_waiting{service="messaging",queue="calls_due"}"#) == 0)
                // Each family is declared once, as Prometheus' text format requires.
                #expect(text.components(separatedBy: "# TYPE caremesh_event_cursor_seq gauge").count == 2)

                // Every lag is its source's head less the consumer's cursor, in the same scrape.
                for line in text.split(separator: "\n") where line.hasPrefix("caremesh_event_consumer_lag{") {
                    let labels = line[line.index(after: line.firstIndex(of: "{")!)..<line.firstIndex(of: "}")!]
                    let source = labels.split(separator: ",").first { $0.hasPrefix("source=") }!.dropFirst(8).dropLast()
                    let head = Self.sample(text, #"caremesh_outbox_head_seq{service="\#(source)"}"#)!
                    let cursor = Self.sample(text, "caremesh_event_cursor_seq{\(labels)}")!
                    #expect(Self.sample(text, "caremesh_event_consumer_lag{\(labels)}") == max(0, head - cursor))
                }

                // A service that answered once and then stopped is reported down, with no workers.
                let env = s.db.environment.merging(TestStack.workerEnvironment(s.router)) { $1 }
                let alerts = try await AlertsService.make(environment: env, logger: TestDatabase.logger)
                try await TestStack.withHosts([alerts]) {
                    _ = try await TestStack.eventually(timeout: .seconds(10)) {
                        let text = try await Self.scrape(s)
                        guard Self.sample(text, #"caremesh_backlog_up{service="alerts"}"#) == 1 else {
                            throw RPCError(.unavailable, "alerts not answering yet")
                        }
                    }
                }
                let after = try await TestStack.eventually(timeout: .seconds(10)) {
                    let text = try await Self.scrape(s)
                    guard Self.sample(text, #"caremesh_router_workers{service="alerts"}"#) == 0 else {
                        throw RPCError(.unavailable, "alerts' worker still registered")
                    }
                    return text
                }
                #expect(Self.sample(after, #"caremesh_backlog_up{service="alerts"}"#) == 0)
                #expect(Self.sample(after, #"caremesh_outbox_head_seq{service="alerts"}"#) == nil)
                #expect(Self.sample(after, #"caremesh_backlog_up{service="messaging"}"#) == 1)
            }
        }
    }
}
