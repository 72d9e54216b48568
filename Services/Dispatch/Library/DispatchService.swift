import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO

/// The dispatch service: a worker of MDP service "dispatch" that owns schema `dispatch`:
/// responders' locations, availability and eligibility (from identity's events), SOS
/// requests with their offer waves and feedback, the seed's queries, zones, and appointments.
public enum DispatchService {
    /// The MDP service name, and the name of its schema.
    public static let name = DispatchMethods.serviceName!

    /// The schema's own migrations (after the platform's).
    public static let migrations: [Migration] = DispatchMigrations.all

    /// Store, migrations, outbox, jobs, identity's event consumer and worker, configured from
    /// the environment (`DISPATCH_DATABASE_URL` or `DATABASE_URL`; `DispatchConfiguration`;
    /// `DISPATCH_SERVICE_SECRET` to sign in to the router as a service; `WorkerConfiguration`
    /// for the bus).
    public static func make(environment: [String: String] = ProcessInfo.processInfo.environment,
                            logger: Logger = Logger(label: "caremesh.dispatch")) async throws -> ServiceHost {
        let configuration = try DispatchConfiguration(environment: environment)
        let client = try RPCClient.forService(name, environment: environment, logger: logger)
        return try await ServiceHost.make(service: name, migrations: migrations, environment: environment, logger: logger) { store, outbox in
            let desk = SosDesk(store: store, outbox: outbox, configuration: configuration, logger: logger)
            return ServiceHost.Parts(
                handlers: handlers(store: store, outbox: outbox, desk: desk, people: PersonDirectory(client: client), logger: logger),
                jobs: [
                    SosDesk.waveJob: { job, c in try await desk.waveTimedOut(job, c) },
                    SosDesk.rateReportJob: { job, _ in try await reportRateLimit(job, client: client) },
                ],
                background: [
                    ClientLifetime(client),
                    EventConsumer(source: "identity", store: store, client: client, logger: logger) { event, c in
                        try await Responders.apply(event, c, logger: logger)
                    },
                ])
        }
    }

    static func handlers(store: Store, outbox: Outbox, desk: SosDesk, people: PersonDirectory, logger: Logger) -> RPCHandlers {
        var h = RPCHandlers()
        let responders = Responders(store: store, logger: logger)
        h.register(DispatchMethods.updateLocation) { r, ctx in try await responders.updateLocation(r, ctx) }
        h.register(DispatchMethods.setAvailability) { r, ctx in try await responders.setAvailability(r, ctx) }
        h.register(DispatchMethods.getResponder) { r, ctx in try await responders.get(r, ctx) }
        h.register(DispatchMethods.createSos) { r, ctx in try await desk.create(r, ctx) }
        h.register(DispatchMethods.getSos) { r, ctx in try await desk.get(r, ctx) }
        h.register(DispatchMethods.listMyOffers) { r, ctx in try await desk.listMyOffers(r, ctx) }
        h.register(DispatchMethods.acceptSos) { r, ctx in try await desk.accept(r, ctx) }
        h.register(DispatchMethods.declineSos) { r, ctx in try await desk.decline(r, ctx) }
        h.register(DispatchMethods.answerOffer) { r, ctx in try await desk.answer(r, ctx) }
        h.register(DispatchMethods.startSos) { r, ctx in try await desk.start(r, ctx) }
        h.register(DispatchMethods.resolveSos) { r, ctx in try await desk.resolve(r, ctx) }
        h.register(DispatchMethods.cancelSos) { r, ctx in try await desk.cancel(r, ctx) }
        h.register(DispatchMethods.submitFeedback) { r, ctx in try await desk.feedback(r, ctx) }
        h.register(DispatchMethods.listMySos) { r, ctx in try await desk.listMySos(r, ctx) }
        h.register(DispatchMethods.listVolunteerSos) { r, ctx in try await desk.listVolunteerSos(r, ctx) }
        h.register(DispatchMethods.activeBoard) { r, ctx in try await desk.activeBoard(r, ctx) }
        h.register(DispatchMethods.getVolunteerPerformance) { r, ctx in try await desk.volunteerPerformance(r, ctx) }
        let zones = Zones(store: store, logger: logger)
        h.register(DispatchMethods.putZone) { r, ctx in try await zones.put(r, ctx) }
        h.register(DispatchMethods.listZones) { r, ctx in try await zones.list(r, ctx) }
        h.register(DispatchMethods.findZone) { r, ctx in try await zones.find(r, ctx) }
        let book = Appointments(store: store, outbox: outbox, people: people, logger: logger)
        h.register(DispatchMethods.setSchedule) { r, ctx in try await book.setSchedule(r, ctx) }
        h.register(DispatchMethods.getSchedule) { r, ctx in try await book.getSchedule(r, ctx) }
        h.register(DispatchMethods.addBlockedTime) { r, ctx in try await book.addBlockedTime(r, ctx) }
        h.register(DispatchMethods.removeBlockedTime) { r, ctx in try await book.removeBlockedTime(r, ctx) }
        h.register(DispatchMethods.findFreeSlots) { r, ctx in try await book.findFreeSlots(r, ctx) }
        h.register(DispatchMethods.bookAppointment) { r, ctx in try await book.book(r, ctx) }
        h.register(DispatchMethods.getAppointment) { r, ctx in try await book.get(r, ctx) }
        h.register(DispatchMethods.confirmAppointment) { r, ctx in try await book.confirm(r, ctx) }
        h.register(DispatchMethods.cancelAppointment) { r, ctx in try await book.cancel(r, ctx) }
        h.register(DispatchMethods.completeAppointment) { r, ctx in try await book.complete(r, ctx) }
        h.register(DispatchMethods.listAppointments) { r, ctx in try await book.list(r, ctx) }
        h.register(DispatchMethods.listAppointmentAudit) { r, ctx in try await book.listAudit(r, ctx) }
        return h
    }

    /// Tells identity that someone went over the SOS rate limit (a job, so it survives
    /// identity being down: retried with backoff).
    static func reportRateLimit(_ job: Job, client: RPCClient) async throws {
        guard let fields = try JSONSerialization.jsonObject(with: job.payload) as? [String: String] else { return }
        var r = Caremesh_Identity_V1_RecordSuspiciousActivityRequest()
        r.userID = fields["user_id"] ?? ""
        r.activityType = "RATE_LIMIT_EXCEEDED"
        r.details = ["source": "dispatch.CreateSos", "recent": fields["recent"] ?? "", "window_s": fields["window_s"] ?? ""]
        _ = try await client.call(IdentityMethods.recordSuspiciousActivity, request: r)
    }
}
