import CareMeshContracts
import CareMeshRPC
import CareMeshStore
import Foundation
import Logging
import PostgresNIO
import SwiftProtobuf

/// Each person's push devices: registered by the app with its FCM registration token or APNs
/// device token, listed and removed by their person (forced row-level security, migration
/// 0115). A token is one app install's: registered by another account, it moves there, as a
/// new device, so nothing queued for its previous person reaches it.
struct PushDevices: Sendable {
    let store: Store
    let logger: Logger

    /// The most devices a person keeps: registering one more forgets the least recently registered.
    static let perPerson = 20

    /// The token's platform-specific shape, or the reason it is not one.
    static func validate(_ platform: Caremesh_Messaging_V1_PushPlatform, _ token: String, _ v: inout FieldViolations) -> String {
        switch platform {
        case .fcm:
            v.check((20...4_096).contains(token.utf8.count) && token.utf8.allSatisfy { $0.isTokenByte },
                    "token", "must be an FCM registration token (20 to 4096 characters of A-Z a-z 0-9 _ : - .)")
            return token
        case .apns:
            let hex = token.lowercased()
            v.check((64...200).contains(hex.utf8.count) && hex.utf8.count % 2 == 0 && hex.utf8.allSatisfy { $0.isHexDigit },
                    "token", "must be an APNs device token in hex (64 to 200 digits)")
            return hex
        default:
            v.check(false, "platform", "must be FCM or APNS")
            return token
        }
    }

    func register(_ r: Caremesh_Messaging_V1_RegisterMyPushDeviceRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_RegisterMyPushDeviceResponse
    {
        let me = try context.requireCaller().requireUserID()
        var v = FieldViolations()
        let token = Self.validate(r.platform, r.token, &v)
        let name = r.name.trimmingCharacters(in: .whitespaces)
        v.check(name.count <= 60 && !name.contains(where: { $0.isNewline || ($0.asciiValue.map { $0 < 32 } ?? false) }),
                "name", "at most 60 characters on one line")
        try v.throwIfAny()
        let platform = r.platform.storedName ?? ""
        // As the service: the token may be someone else's until now.
        return try await store.withActor(MessagingService.actor, roles: ["service"]) { c in
            try await c.query("""
                DELETE FROM push_devices WHERE platform = \(platform) AND token = \(token) AND person_id <> \(me)
                """, logger: self.logger)
            let row = try await c.query("""
                INSERT INTO push_devices AS d (person_id, platform, token, name) VALUES (\(me), \(platform), \(token), \(name))
                ON CONFLICT (platform, token) DO UPDATE SET name = excluded.name, updated_at = now()
                RETURNING \(unescaped: Self.columns), xmax = 0
                """, logger: self.logger).collect()
            guard let row = row.first else { throw RPCError(.aborted, "the device raced another registration; try again") }
            try await c.query("""
                DELETE FROM push_devices WHERE person_id = \(me) AND id NOT IN (
                    SELECT id FROM push_devices WHERE person_id = \(me) ORDER BY updated_at DESC, id DESC LIMIT \(Self.perPerson))
                """, logger: self.logger)
            var response = Caremesh_Messaging_V1_RegisterMyPushDeviceResponse()
            response.device = try Self.device(row)
            response.created = try row.decode((UUID, String, String, String, Double, Double, Bool).self).6
            return response
        }
    }

    func list(_ context: RPCContext) async throws -> Caremesh_Messaging_V1_ListMyPushDevicesResponse {
        let caller = try context.requireCaller()
        let me = try caller.requireUserID()
        return try await store.withActor(me.text, roles: caller.roles) { c in
            var response = Caremesh_Messaging_V1_ListMyPushDevicesResponse()
            for try await row in try await c.query("""
                SELECT \(unescaped: Self.columns) FROM push_devices d WHERE d.person_id = \(me) ORDER BY d.created_at, d.id
                """, logger: self.logger) { response.devices.append(try Self.device(row)) }
            return response
        }
    }

    func remove(_ r: Caremesh_Messaging_V1_RemoveMyPushDeviceRequest, _ context: RPCContext) async throws
        -> Caremesh_Messaging_V1_RemoveMyPushDeviceResponse
    {
        let caller = try context.requireCaller()
        let me = try caller.requireUserID()
        var v = FieldViolations()
        let id = v.uuid(r.deviceID, "device_id")
        try v.throwIfAny()
        let removed = try await store.withActor(me.text, roles: caller.roles) { c in
            try await c.query("DELETE FROM push_devices WHERE id = \(id!) AND person_id = \(me) RETURNING id", logger: self.logger)
                .first(UUID.self)
        }
        guard removed != nil else { throw RPCError.notFound(field: "device_id", "no such device of yours") }
        return .init()
    }

    static let columns = "d.id, d.platform, d.token, d.name, extract(epoch FROM d.created_at)::float8, extract(epoch FROM d.updated_at)::float8"

    static func device(_ row: PostgresRow) throws -> Caremesh_Messaging_V1_PushDevice {
        let (id, platform, token, name, created, updated) = try row.decode((UUID, String, String, String, Double, Double).self)
        return .with {
            $0.id = id.text
            $0.platform = .init(storedName: platform)
            $0.name = name
            $0.tokenHint = String(token.suffix(8))
            $0.createdAt = Google_Protobuf_Timestamp(epochSeconds: created)
            $0.updatedAt = Google_Protobuf_Timestamp(epochSeconds: updated)
        }
    }
}

private extension UInt8 {
    var isHexDigit: Bool { (0x30...0x39).contains(self) || (0x61...0x66).contains(self) }
    /// FCM registration tokens: letters, digits, `_ : - .`.
    var isTokenByte: Bool { isHexDigit || (0x41...0x5A).contains(self) || (0x61...0x7A).contains(self) || [0x5F, 0x3A, 0x2D, 0x2E].contains(self) }
}
