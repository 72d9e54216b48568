import CareMeshRPC
import Foundation
import Testing

/// The MDP/0.2 codec in both dialects.
@Suite struct MDPTests {
    let body = [Data("h".utf8), Data("m".utf8)]

    @Test("client requests round-trip in both dialects", arguments: [MDP.Dialect.strict, .delimited])
    func clientRequest(dialect: MDP.Dialect) throws {
        let frames = MDP.clientRequest(dialect, service: "echo", body: body)
        #expect(frames.first?.isEmpty == (dialect == .delimited))
        let (d, m) = try #require(MDP.decodeAtBroker(frames[...]))
        #expect(d == dialect)
        #expect(m == .clientRequest(service: "echo", body: body))
    }

    @Test("the client command bytes of WIRE.md")
    func commandBytes() {
        #expect(MDP.clientRequest(.strict, service: "s", body: [])[1] == Data([0x01]))
        #expect(MDP.clientRequest(.delimited, service: "s", body: [])[2] == Data([0x02]))
        #expect(MDP.clientReply(.strict, final: true, service: "s", body: [])[1] == Data([0x03]))
        #expect(MDP.clientReply(.strict, final: true, service: "s", body: [])[2] == Data("s".utf8))
        #expect(MDP.clientReply(.delimited, final: true, service: "s", body: [Data("b".utf8)]) ==
                [Data(), MDP.clientHeader, Data([0x04]), Data("b".utf8)])
        #expect(MDP.clientReply(.delimited, final: false, service: "s", body: [])[2] == Data([0x03]))
    }

    @Test("replies decode at the client in both dialects", arguments: [MDP.Dialect.strict, .delimited])
    func clientReply(dialect: MDP.Dialect) throws {
        let frames = MDP.clientReply(dialect, final: true, service: "echo", body: body)
        #expect(MDP.decodeAtClient(frames) == MDP.ClientInbound(final: true, body: body))
    }

    @Test("worker commands round-trip in both dialects", arguments: [MDP.Dialect.strict, .delimited])
    func workerCommands(dialect: MDP.Dialect) throws {
        let ready = MDP.worker(dialect, .ready, [Data("echo".utf8), Data("info".utf8)])
        #expect(MDP.decodeAtBroker(ready[...])?.1 == .workerReady(service: "echo", extra: [Data("info".utf8)]))
        let final = MDP.worker(dialect, .final, [Data("c".utf8), Data()] + body)
        #expect(MDP.decodeAtBroker(final[...])?.1 == .workerReply(final: true, client: Data("c".utf8), body: body))
        let request = MDP.worker(dialect, .request, [Data("c".utf8), Data()] + body)
        #expect(MDP.decodeAtWorker(request) == .request(client: Data("c".utf8), body: body))
        #expect(MDP.decodeAtWorker(MDP.worker(dialect, .heartbeat)) == .heartbeat)
        #expect(MDP.decodeAtWorker(MDP.worker(dialect, .disconnect)) == .disconnect)
    }

    static let malformedMessages: [[Data]] = [
        [Data("x".utf8)],
        [Data("MDPC02".utf8), Data([0x07]), Data("s".utf8), Data()],
        [Data("MDPC02".utf8), Data([0x01])],
        [Data("MDPW02".utf8), Data([0x09])],
        [Data("MDPW02".utf8), Data([0x04]), Data("c".utf8), Data("not empty".utf8)],
        [Data("MDPX02".utf8), Data([0x01]), Data("s".utf8), Data()],
        [Data(), Data(), Data()],
    ]

    @Test("malformed messages decode to nil", arguments: malformedMessages)
    func malformed(frames: [Data]) {
        #expect(MDP.decodeAtBroker(frames[...]) == nil)
    }
}
