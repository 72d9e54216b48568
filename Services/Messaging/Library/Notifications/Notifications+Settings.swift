import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO

/// Each person's notification settings: read and replaced by the person (row-level security
/// shows only their own), read by routing (`settings(of:on:)`).
extension Notifications {
    func getSettings(_ context: RPCContext) async throws -> Caremesh_Messaging_V1_GetMyNotificationSettingsResponse {
        let caller = try context.requireCaller()
        let me = try caller.requireUserID()
        let settings = try await store.withActor(me.text, roles: caller.roles) { c in try await Self.settings(of: [me], on: c, logger: self.logger)[me] }
        return .with { $0.settings = Self.proto(settings ?? .defaults) }
    }

    func putSettings(_ r: Caremesh_Messaging_V1_PutMyNotificationSettingsRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_PutMyNotificationSettingsResponse
    {
        let caller = try context.requireCaller()
        let me = try caller.requireUserID()
        let settings = try Self.validated(r.settings)
        let quiet = settings.quiet
        _ = try await store.withActor(me.text, roles: caller.roles) { c in
            try await c.query("""
                INSERT INTO notification_settings (person_id, time_zone, quiet_start, quiet_end, channels_off, updated_at)
                VALUES (\(me), \(settings.timeZone.identifier), \(quiet?.start.description), \(quiet?.end.description),
                        \(settings.off.sorted()), now())
                ON CONFLICT (person_id) DO UPDATE SET time_zone = excluded.time_zone, quiet_start = excluded.quiet_start,
                    quiet_end = excluded.quiet_end, channels_off = excluded.channels_off, updated_at = now()
                """, logger: self.logger)
        }
        return .with { $0.settings = Self.proto(settings) }
    }

    /// The settings a request gives, or `INVALID_ARGUMENT` naming each bad field.
    static func validated(_ s: Caremesh_Messaging_V1_NotificationSettings) throws(RPCError) -> PersonSettings {
        var v = FieldViolations()
        let zone = s.timeZone.isEmpty ? TimeZone.gmt : TimeZone(identifier: s.timeZone)
        v.check(zone != nil, "settings.time_zone", "must be an IANA time zone such as Europe/Paris")
        var quiet: QuietWindow?
        if s.hasQuietHours {
            let start = LocalTime(s.quietHours.start), end = LocalTime(s.quietHours.end)
            v.check(start != nil, "settings.quiet_hours.start", "must be HH:MM (24-hour)")
            v.check(end != nil, "settings.quiet_hours.end", "must be HH:MM (24-hour)")
            v.check(start == nil || start != end, "settings.quiet_hours.end", "must differ from the start")
            if let start, let end { quiet = QuietWindow(start: start, end: end) }
        }
        var off = Set<String>()
        v.check(s.kinds.count <= 16, "settings.kinds", "at most 16")
        for (i, k) in s.kinds.enumerated() {
            let field = "settings.kinds[\(i)]"
            guard k.kind.storedName != nil else {
                v.check(false, "\(field).kind", "must be a notification kind")
                continue
            }
            v.check(!k.kind.isCritical, "\(field).kind", "\(k.kind.storedName!) is critical: it goes on every channel you allow, at any hour")
            for (j, channel) in k.off.enumerated() {
                v.check([.push, .sms, .email].contains(channel), "\(field).off[\(j)]", "must be PUSH, SMS or EMAIL (the stream carries every kind)")
                off.insert(PersonSettings.key(k.kind, channel))
            }
        }
        try v.throwIfAny()
        return PersonSettings(timeZone: zone!, quiet: quiet, off: off)
    }

    static func proto(_ s: PersonSettings) -> Caremesh_Messaging_V1_NotificationSettings {
        var out = Caremesh_Messaging_V1_NotificationSettings()
        out.timeZone = s.timeZone.identifier == "GMT" ? "UTC" : s.timeZone.identifier
        if let quiet = s.quiet {
            out.quietHours = .with {
                $0.start = quiet.start.description
                $0.end = quiet.end.description
            }
        }
        var byKind: [Caremesh_Messaging_V1_NotificationKind: [Caremesh_Messaging_V1_DeliveryChannel]] = [:]
        for entry in s.off.sorted() {
            let parts = entry.split(separator: ":").map(String.init)
            guard parts.count == 2 else { continue }
            byKind[.init(storedName: parts[0]), default: []].append(.init(storedName: parts[1]))
        }
        out.kinds = byKind.sorted { $0.key.rawValue < $1.key.rawValue }.map { kind, channels in
            .with {
                $0.kind = kind
                $0.off = channels
            }
        }
        return out
    }

    /// The settings of `people` who have any, by id (read as whoever `c` acts as).
    static func settings(of people: [UUID], on c: PostgresConnection, logger: Logger) async throws -> [UUID: PersonSettings] {
        var out: [UUID: PersonSettings] = [:]
        let rows = try await c.query("""
            SELECT person_id, time_zone, quiet_start, quiet_end, channels_off FROM notification_settings WHERE person_id = ANY(\(people))
            """, logger: logger)
        for try await (person, zone, start, end, off) in rows.decode((UUID, String, String?, String?, [String]).self) {
            let quiet = start.flatMap(LocalTime.init).flatMap { s in end.flatMap(LocalTime.init).map { QuietWindow(start: s, end: $0) } }
            out[person] = PersonSettings(timeZone: TimeZone(identifier: zone) ?? .gmt, quiet: quiet, off: Set(off))
        }
        return out
    }
}
