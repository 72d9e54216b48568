import ArgumentParser
import CareMeshRPC
import Foundation
import MessagingService
import ZMQ

/// `caremesh keys generate`: a CurveZMQ key pair for the bus, as libzmq's `curve_keygen` prints
/// it, or written to files.
struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "CurveZMQ keys for the bus (the router's, each service's, a client's).",
        subcommands: [Generate.self])

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a CurveZMQ key pair (Z85, 40 characters each).",
            discussion: """
                Prints the pair as curve_keygen does. With --out PATH, writes PATH.key (the secret \
                key, mode 600) and PATH.pub instead, for the …_FILE variables:
                  caremesh keys generate --out secrets/router     # CAREMESH_ROUTER_SECRET_KEY_FILE, …_PUBLIC_KEY_FILE
                  caremesh keys generate --out secrets/identity   # IDENTITY_BUS_SECRET_KEY_FILE; the .pub goes in
                                                                  # the router's CAREMESH_BUS_WORKER_KEYS as 'identity KEY'
                """)

        @Option(help: "Write PATH.key and PATH.pub instead of printing.") var out: String?
        @Option(help: "Make a whole stack's keys in DIR (kept if there): router, identity, dispatch, alerts, messaging, the router's allowlist 'workers', and the provider sandbox's push credentials for compose (sandbox-fcm.json, sandbox-apns.p8).")
        var stack: String?

        func run() throws {
            if let stack {
                let dir = URL(fileURLWithPath: stack)
                try BusKeyFiles.makeStack(in: dir)
                _ = try SandboxPushKeys.make(in: dir, sandboxURL: "http://sandbox:8090")
                print("\(dir.path): router.key router.pub \(StackLayout.services.map { "\($0).key" }.joined(separator: " ")) workers"
                      + " sandbox-fcm.json sandbox-apns.p8")
                return
            }
            let pair = CurveKeyPair.generate()
            guard let out else {
                print("== CURVE PUBLIC KEY ==\n\(pair.publicKey.z85)\n== CURVE SECRET KEY ==\n\(pair.secretKey.z85)")
                return
            }
            try BusKeyFiles.write(pair, to: URL(fileURLWithPath: out))
            print("\(out).pub: \(pair.publicKey.z85)\n\(out).key: the secret key (mode 600)")
        }
    }
}

/// Key pairs kept as `NAME.key` (the secret key, mode 600) and `NAME.pub`.
enum BusKeyFiles {
    static func write(_ pair: CurveKeyPair, to path: URL) throws {
        let key = path.appendingPathExtension("key"), pub = path.appendingPathExtension("pub")
        for file in [key, pub] where FileManager.default.fileExists(atPath: file.path) {
            throw ValidationError("\(file.path) exists; keys are never overwritten")
        }
        guard FileManager.default.createFile(atPath: key.path, contents: Data((pair.secretKey.z85 + "\n").utf8),
                                             attributes: [.posixPermissions: 0o600]),
              FileManager.default.createFile(atPath: pub.path, contents: Data((pair.publicKey.z85 + "\n").utf8)) else {
            throw ValidationError("could not write \(key.path)")
        }
    }

    /// A stack's keys in `dir` (0700), each made once: the router's pair, each service's pair, and
    /// `workers`, the router's allowlist binding each service's public key to its name (rewritten
    /// from the keys each time).
    static func makeStack(in dir: URL) throws {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        _ = try readOrMake(dir.appendingPathComponent("router"))
        var allowlist = "# The router's allowlist: SERVICE PUBLIC_KEY (CAREMESH_BUS_WORKER_KEYS_FILE). Add a second line per\n"
            + "# service to rotate its key without downtime.\n"
        for service in StackLayout.services {
            allowlist += "\(service) \(try readOrMake(dir.appendingPathComponent(service)).publicKey.z85)\n"
        }
        let file = dir.appendingPathComponent("workers")
        try? FileManager.default.removeItem(at: file)
        guard FileManager.default.createFile(atPath: file.path, contents: Data(allowlist.utf8)) else {
            throw ValidationError("could not write \(file.path)")
        }
    }

    /// The pair kept at `path`, made there first if there is none.
    static func readOrMake(_ path: URL) throws -> CurveKeyPair {
        let file = path.appendingPathExtension("key")
        if let text = try? String(contentsOf: file, encoding: .utf8) {
            guard let secret = CurveKey(z85: text) else { throw ValidationError("\(file.path) does not hold a CurveZMQ secret key") }
            return CurveKeyPair(secretKey: secret)
        }
        let pair = CurveKeyPair.generate()
        try write(pair, to: path)
        return pair
    }
}

/// The provider sandbox's push credentials, made once in a folder as the providers' consoles
/// hand them out: a Google service account's key file (`sandbox-fcm.json`, its `token_uri` the
/// sandbox's) and an APNs auth key (`sandbox-apns.p8`); the same files serve the sandbox (to
/// verify) and messaging (to sign).
enum SandboxPushKeys {
    static let apnsKeyID = "SANDBOXK01", apnsTeamID = "SANDBOXT01", apnsTopic = "org.caremesh.app"

    /// The two files in `dir`, made there first if missing.
    static func make(in dir: URL, sandboxURL: String) throws -> (fcm: URL, apns: URL) {
        let fcm = dir.appendingPathComponent("sandbox-fcm.json"), apns = dir.appendingPathComponent("sandbox-apns.p8")
        if !FileManager.default.fileExists(atPath: fcm.path) {
            let account = try FcmServiceAccount.generate(projectID: "caremesh-sandbox",
                                                         clientEmail: "messaging@caremesh-sandbox.iam.gserviceaccount.com",
                                                         tokenURI: sandboxURL + "/token")
            guard FileManager.default.createFile(atPath: fcm.path, contents: try account.json(), attributes: [.posixPermissions: 0o600]) else {
                throw ValidationError("could not write \(fcm.path)")
            }
        }
        if !FileManager.default.fileExists(atPath: apns.path) {
            guard FileManager.default.createFile(atPath: apns.path, contents: Data(ApnsKey.generatePEM().utf8),
                                                 attributes: [.posixPermissions: 0o600]) else {
                throw ValidationError("could not write \(apns.path)")
            }
        }
        return (fcm, apns)
    }

    /// The sandbox's and messaging's settings for these files, messaging sending to `sandboxURL`.
    static func environment(fcm: String, apns: String, sandboxURL: String) -> [String: String] {
        [
            "SANDBOX_FCM_CREDENTIALS_FILE": fcm, "MESSAGING_FCM_CREDENTIALS_FILE": fcm, "MESSAGING_FCM_URL": sandboxURL,
            "SANDBOX_APNS_KEY_FILE": apns, "MESSAGING_APNS_KEY_FILE": apns, "MESSAGING_APNS_URL": sandboxURL,
            "SANDBOX_APNS_KEY_ID": apnsKeyID, "MESSAGING_APNS_KEY_ID": apnsKeyID, "SANDBOX_APNS_TEAM_ID": apnsTeamID,
            "MESSAGING_APNS_TEAM_ID": apnsTeamID, "SANDBOX_APNS_TOPIC": apnsTopic, "MESSAGING_APNS_TOPIC": apnsTopic,
        ]
    }
}
