import CareMeshContracts
import CareMeshRPC
@testable import CareMeshRouter
import Foundation
import Testing
import ZMQ

/// The bus's keys and who may register, without sockets: Z85 keys, the allowlist as operators
/// write it, the settings' errors, and the router state machine's check of a worker's key.
@Suite struct BusAllowlistTests {
    typealias SM = RouterStateMachine

    @Test("keys: Z85 round-trips, a secret key gives its public key, anything else is refused")
    func keys() throws {
        #expect(CurveKeyPair.isAvailable)
        let pair = CurveKeyPair.generate()
        #expect(pair.publicKey.z85.count == 40 && pair.secretKey.z85.count == 40)
        #expect(CurveKey(z85: pair.publicKey.z85) == pair.publicKey)
        #expect(CurveKey(z85: "  \(pair.publicKey.z85)\n") == pair.publicKey)
        #expect(CurveKeyPair(secretKey: pair.secretKey) == pair)
        #expect(CurveKeyPair.generate() != pair)
        // ZeroMQ's own test vector (RFC 32): Z85 of 86 4F D2 6F B5 59 F7 5B is "HelloWorld".
        #expect(CurveKey(z85: String(repeating: "HelloWorld", count: 4))?.bytes.prefix(8) == [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B])
        for bad in ["", "short", String(pair.publicKey.z85.dropLast()), String(repeating: "~", count: 40), pair.publicKey.z85 + "0"] {
            #expect(CurveKey(z85: bad) == nil, "\(bad)")
        }
        #expect(pair.publicKey.id == String(pair.publicKey.z85.prefix(12)))
    }

    @Test("allowlist: lines or ';', several services per key, two keys per service, comments; bad entries name the line")
    func allowlistText() throws {
        let a = CurveKeyPair.generate().publicKey, b = CurveKeyPair.generate().publicKey, c = CurveKeyPair.generate().publicKey
        let text = """
            # the workers
            identity \(a.z85)
            identity  \(b.z85); alerts,messaging \(c.z85)

            """
        let list = try BusAllowlist(environment: [BusSettings.workerKeys: text])
        #expect(list.allows(keyID: a.id, toServe: "identity"))
        #expect(list.allows(keyID: b.id, toServe: "identity"))
        #expect(list.allows(keyID: c.id, toServe: "alerts") && list.allows(keyID: c.id, toServe: "messaging"))
        #expect(!list.allows(keyID: a.id, toServe: "dispatch"))
        #expect(!list.allows(keyID: c.id, toServe: "identity"))
        #expect(!list.allows(keyID: "", toServe: "identity"))
        #expect(list.workerKeyID(a) == a.id)
        #expect(list.workerKeyID(CurveKeyPair.generate().publicKey) == nil)
        // No client list: any client key; with one, those and the workers' keys.
        let stranger = CurveKeyPair.generate().publicKey
        #expect(list.allowsClient(stranger))
        let clients = try BusAllowlist(environment: [BusSettings.workerKeys: text, BusSettings.clientKeys: "\(stranger.z85)\n"])
        #expect(clients.allowsClient(stranger) && clients.allowsClient(a))
        #expect(!clients.allowsClient(CurveKeyPair.generate().publicKey))

        for bad in ["identity", "identity not-a-key", "\(a.z85)", "identity \(a.z85) extra", ", \(a.z85)"] {
            #expect(throws: BusConfigurationError.self, "\(bad)") { try BusAllowlist(environment: [BusSettings.workerKeys: "# ok\n\(bad)"]) }
        }
        do {
            _ = try BusAllowlist(environment: [BusSettings.workerKeys: "identity \(a.z85)\ndispatch nope"])
            Issue.record("a bad entry was accepted")
        } catch {
            #expect(error.variable == BusSettings.workerKeys && error.problem.contains("entry 2"))
        }
    }

    @Test("settings: keys inline or from files; a missing, unreadable or malformed key names its variable; off is explicit")
    func settings() throws {
        let router = CurveKeyPair.generate(), own = CurveKeyPair.generate()
        #expect(try BusLink.worker(service: "identity", environment: [BusSettings.security: "off"]) == .plain)
        #expect(throws: BusConfigurationError.self) { try BusLink.worker(service: "identity", environment: [BusSettings.security: "maybe"]) }
        // Secured by default: a worker needs the router's key and its own.
        do {
            _ = try BusLink.worker(service: "identity", environment: [:])
            Issue.record("a worker without keys was configured")
        } catch { #expect(error.variable == BusSettings.routerPublicKey) }
        do {
            _ = try BusLink.worker(service: "identity", environment: [BusSettings.routerPublicKey: router.publicKey.z85])
            Issue.record("a worker without its own key was configured")
        } catch { #expect(error.variable == BusSettings.ownSecretKey) }
        do {
            _ = try BusLink.worker(service: "identity", environment: [BusSettings.routerPublicKey: "not a key"])
            Issue.record("a malformed key was taken")
        } catch { #expect(error.variable == BusSettings.routerPublicKey && error.description.contains("Z85")) }
        // The service's own variable first, from a file.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bus-keys-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("identity.key")
        try (own.secretKey.z85 + "\n").write(to: file, atomically: true, encoding: .utf8)
        let env = [BusSettings.routerPublicKey: router.publicKey.z85, "IDENTITY_BUS_SECRET_KEY_FILE": file.path,
                   BusSettings.ownSecretKey: CurveKeyPair.generate().secretKey.z85]
        #expect(try BusLink.worker(service: "identity", environment: env) == .curve(router: router.publicKey, own: own))
        do {
            _ = try BusLink.worker(service: "identity", environment: [BusSettings.routerPublicKey: router.publicKey.z85,
                                                                      "IDENTITY_BUS_SECRET_KEY_FILE": dir.appendingPathComponent("none").path])
            Issue.record("an unreadable key file was taken")
        } catch { #expect(error.variable == "IDENTITY_BUS_SECRET_KEY_FILE") }
        // A client without a key of its own gets a fresh one; the router needs its key and workers.
        guard case .curve(let r, _) = try BusLink.client(environment: [BusSettings.routerPublicKey: router.publicKey.z85]) else {
            Issue.record("the client link is not CurveZMQ")
            return
        }
        #expect(r == router.publicKey)
        do {
            _ = try RouterConfiguration(environment: [BusSettings.routerSecretKey: router.secretKey.z85])
            Issue.record("a router with no worker keys was configured")
        } catch { #expect(error.variable == BusSettings.workerKeys) }
        let configured = try RouterConfiguration(environment: [BusSettings.routerSecretKey: router.secretKey.z85,
                                                               BusSettings.workerKeys: "identity \(own.publicKey.z85)"])
        #expect(configured.security?.keys == router)
        #expect(try RouterConfiguration(environment: [BusSettings.security: "off"]).security == nil)
    }

    // MARK: - The state machine's check

    func readyFrames(_ service: String) -> MDP.BrokerInbound {
        var info = WorkerInfo()
        info.capacity = 1_000
        info.instanceID = "\(service)-1"
        info.version = "9.9"
        return .workerReady(service: service, extra: [info.wireBytes()])
    }

    @Test("state machine: a READY registers only with a key bound to its service; others are disconnected and recorded")
    func readyNeedsBoundKey() {
        let identity = CurveKeyPair.generate().publicKey, dispatch = CurveKeyPair.generate().publicKey
        var allowlist = BusAllowlist()
        try! allowlist.allowWorker(identity, services: ["identity"])
        try! allowlist.allowWorker(dispatch, services: ["dispatch"])
        var sm = SM(configuration: .init(), workerKeys: allowlist)
        let peer = PeerAddress(socket: 1, identity: Data([1]))
        var actions: [SM.Action] = []
        for (userID, service) in [(nil, "identity"), (dispatch.id, "identity"), ("someone", "identity")] as [(String?, String)] {
            actions.removeAll()
            sm.handle(.fromWorker(peer, .delimited, readyFrames(service), ZMQPeerProperties(userID: userID, address: "10.0.0.9")),
                      now: 0, into: &actions)
            #expect(actions == [.toWorker(peer, .delimited, .disconnect, [])])
            #expect(sm.liveWorkers(of: "identity") == 0)
        }
        #expect(sm.stats.workersRefused == 3 && sm.stats.workersRegistered == 0)
        #expect(sm.registrations.map(\.refusal) == ["no CurveZMQ key", "key not bound to this service", "key not bound to this service"])
        #expect(sm.registrations[1].keyID == dispatch.id && sm.registrations[1].address == "10.0.0.9")
        #expect(sm.registrations[1].instanceID == "identity-1" && sm.registrations[1].version == "9.9")
        #expect(sm.workersByService["identity"] == nil, "a refused name is not kept")

        // Its own key registers; a later READY of another name from the same peer is refused and
        // takes the registration away.
        actions.removeAll()
        sm.handle(.fromWorker(peer, .delimited, readyFrames("identity"), ZMQPeerProperties(userID: identity.id, address: "10.0.0.9")),
                  now: 0, into: &actions)
        #expect(sm.liveWorkers(of: "identity") == 1)
        #expect(sm.registrations.last?.refusal == nil && sm.stats.workersRegistered == 1)
        sm.handle(.fromWorker(peer, .delimited, readyFrames("dispatch"), ZMQPeerProperties(userID: identity.id, address: "10.0.0.9")),
                  now: 0, into: &actions)
        #expect(sm.liveWorkers(of: "identity") == 0 && sm.liveWorkers(of: "dispatch") == 0)

        // Without keys (the bus's own tests), any READY registers as before.
        var open = SM(configuration: .init())
        open.handle(.fromWorker(peer, .delimited, readyFrames("identity")), now: 0, into: &actions)
        #expect(open.liveWorkers(of: "identity") == 1)
    }

    @Test("state machine: a worker command on the client endpoint registers nothing")
    func clientEndpointNeverRegisters() {
        var sm = SM(configuration: .init())
        sm.workerCommandOnClientEndpoint(readyFrames("identity"), ZMQPeerProperties(userID: nil, address: "10.0.0.7"))
        sm.workerCommandOnClientEndpoint(.workerHeartbeat, nil)
        #expect(sm.liveWorkers(of: "identity") == 0 && sm.workersByService.isEmpty)
        #expect(sm.stats.workersRefused == 1 && sm.stats.malformed == 1)
        #expect(sm.registrations.first?.refusal == "READY on the client endpoint")
        #expect(sm.registrations.first?.address == "10.0.0.7")
    }
}
