import CareMeshAuth
import CareMeshContracts
import CareMeshRPC
@testable import CareMeshRouter
import Crypto
import Foundation
import Synchronization
import Testing

/// Token checks at the router, without sockets: what passes, what is refused and why, and
/// the caller stamped on what passes.
@Suite struct RouterAuthTests {
    typealias SM = RouterStateMachine
    let client = PeerAddress(socket: 0, identity: Data([1]))
    let worker = PeerAddress(socket: 1, identity: Data([0xA1]))
    let key = Curve25519.Signing.PrivateKey()
    let kid = "test-key-1"
    let now: Int64 = 1_800_000_000
    static let whoAmI = "/caremesh.identity.v1.Identity/WhoAmI"

    func machine() -> SM {
        var c = SM.Configuration()
        let now = self.now
        c.wallClock = { now }
        var sm = SM(configuration: c)
        sm.setSigningKeys([kid: key.publicKey])
        var actions: [SM.Action] = []
        var info = WorkerInfo()
        info.capacity = 10
        sm.handle(.fromWorker(worker, .delimited, .workerReady(service: "identity", extra: [info.wireBytes()])), now: 0,
                  into: &actions)
        return sm
    }

    func claims(sub: String = "user-1", roles: [String] = ["volunteer"], exp: Int64? = nil, nbf: Int64? = nil,
                iss: String = AccessToken.issuer) -> AccessClaims {
        AccessClaims(iss: iss, aud: AccessToken.audience, sub: sub, roles: roles, sid: "s-1", iat: now - 10,
                     nbf: nbf ?? now - 10, exp: exp ?? now + 900, jti: "j")
    }

    func token(_ c: AccessClaims, key: Curve25519.Signing.PrivateKey? = nil, kid: String? = nil) throws -> String {
        try AccessToken.sign(c, kid: kid ?? self.kid, key: key ?? self.key)
    }

    /// Sends one request; returns the caller the worker got, or the status the client got.
    func send(_ sm: inout SM, method: String = whoAmI, authorization: String?, spoofed: Bool = false)
        -> (caller: Caller?, refused: ResponseHeader?)
    {
        var h = RequestHeader()
        h.method = method
        h.requestID = 7
        h.timeoutMs = 1_000
        if let authorization { h.metadata["authorization"] = authorization }
        if spoofed { h.caller.subject = "admin-mallory"; h.caller.roles = ["admin"] }
        var actions: [SM.Action] = []
        sm.handle(.fromClient(client, .delimited, service: "identity", body: [h.wireBytes(), Data()]), now: 0, into: &actions)
        for a in actions {
            if case .toWorker(_, _, .request, let frames) = a {
                let forwarded = try! RequestHeader(serializedBytes: frames[2])
                return (forwarded.hasCaller ? forwarded.caller : nil, nil)
            }
            if case .toClient(_, _, _, true, let body) = a { return (nil, try! ResponseHeader(serializedBytes: body[0])) }
        }
        return (nil, nil)
    }

    func refusal(_ r: (caller: Caller?, refused: ResponseHeader?)) -> (StatusCode, String)? {
        guard let h = r.refused else { return nil }
        return (h.status.code, h.status.details.first?.errorInfo.reason ?? "")
    }

    @Test("a valid token passes and its subject, roles and session are stamped as the caller")
    func validToken() throws {
        var sm = machine()
        let r = send(&sm, authorization: "Bearer \(try token(claims()))")
        #expect(r.caller?.subject == "user-1")
        #expect(r.caller?.roles == ["volunteer"])
        #expect(r.caller?.sessionID == "s-1")
        #expect(sm.stats.authenticated == 1)
    }

    @Test("a caller the client wrote is removed: the token's subject is stamped, never the claimed admin")
    func spoofedCaller() throws {
        var sm = machine()
        let r = send(&sm, authorization: "Bearer \(try token(claims()))", spoofed: true)
        #expect(r.caller?.subject == "user-1")
        #expect(r.caller?.roles == ["volunteer"])
        // Without a token the spoofed caller gets nowhere.
        #expect(refusal(send(&sm, authorization: nil, spoofed: true))?.0 == .unauthenticated)
        // On a public method it is removed and the call goes through anonymous.
        let open = send(&sm, method: "/caremesh.identity.v1.Identity/Login", authorization: nil, spoofed: true)
        #expect(open.refused == nil && open.caller == nil)
    }

    @Test("missing, malformed, forged, alg none, wrong issuer, expired and not-yet-valid tokens are UNAUTHENTICATED")
    func refusals() throws {
        var sm = machine()
        #expect(refusal(send(&sm, authorization: nil))! == (.unauthenticated, "TOKEN_MISSING"))
        #expect(refusal(send(&sm, authorization: "Basic dXNlcjpwYXNz"))! == (.unauthenticated, "TOKEN_INVALID"))
        #expect(refusal(send(&sm, authorization: "Bearer not.a.jwt"))! == (.unauthenticated, "TOKEN_INVALID"))
        // Signed by another key under the trusted kid.
        let forged = try token(claims(roles: ["admin"]), key: Curve25519.Signing.PrivateKey())
        #expect(refusal(send(&sm, authorization: "Bearer \(forged)"))! == (.unauthenticated, "TOKEN_INVALID"))
        // A genuine signature over other claims: roles raised in the payload.
        let genuine = try token(claims()).split(separator: ".")
        let raised = Base64URL.encode(try JSONEncoder().encode(claims(roles: ["admin"])))
        #expect(refusal(send(&sm, authorization: "Bearer \(genuine[0]).\(raised).\(genuine[2])"))! == (.unauthenticated, "TOKEN_INVALID"))
        // alg none, with and without a signature.
        let none = Base64URL.encode(Data(#"{"alg":"none","typ":"JWT","kid":"test-key-1"}"#.utf8))
        let payload = Base64URL.encode(try JSONEncoder().encode(claims(roles: ["admin"])))
        #expect(refusal(send(&sm, authorization: "Bearer \(none).\(payload)."))! == (.unauthenticated, "TOKEN_INVALID"))
        #expect(refusal(send(&sm, authorization: "Bearer \(none).\(payload).\(genuine[2])"))! == (.unauthenticated, "TOKEN_INVALID"))
        // HS256 "signed" with the public key (the classic confusion).
        let hs = Base64URL.encode(Data(#"{"alg":"HS256","typ":"JWT","kid":"test-key-1"}"#.utf8))
        let mac = HMAC<SHA256>.authenticationCode(for: Data("\(hs).\(payload)".utf8), using: SymmetricKey(data: key.publicKey.rawRepresentation))
        #expect(refusal(send(&sm, authorization: "Bearer \(hs).\(payload).\(Base64URL.encode(Data(mac)))"))! == (.unauthenticated, "TOKEN_INVALID"))
        #expect(refusal(send(&sm, authorization: "Bearer \(try token(claims(iss: "someone-else")))"))! == (.unauthenticated, "TOKEN_INVALID"))
        // Expired beyond the 30 s leeway; not valid until later than the leeway.
        #expect(refusal(send(&sm, authorization: "Bearer \(try token(claims(exp: now - 31)))"))! == (.unauthenticated, "TOKEN_EXPIRED"))
        #expect(send(&sm, authorization: "Bearer \(try token(claims(exp: now - 5)))").caller != nil)
        #expect(refusal(send(&sm, authorization: "Bearer \(try token(claims(nbf: now + 120)))"))! == (.unauthenticated, "TOKEN_INVALID"))
        #expect(sm.stats.unauthenticated == 11)
    }

    @Test("an unknown kid asks for the keys again; with no keys at all the router answers UNAVAILABLE")
    func unknownKey() throws {
        var sm = machine()
        let other = try token(claims(), key: Curve25519.Signing.PrivateKey(), kid: "rotated-key")
        #expect(refusal(send(&sm, authorization: "Bearer \(other)"))?.0 == .unauthenticated)
        #expect(sm.wantsSigningKeys)
        sm.setSigningKeys([:])
        #expect(refusal(send(&sm, authorization: "Bearer \(try token(claims()))"))! == (.unavailable, "SIGNING_KEYS_UNAVAILABLE"))
    }

    @Test("a verified token is cached until it expires; a key change forgets the cache")
    func cache() throws {
        var verifier = TokenVerifier()
        verifier.setKeys([kid: key.publicKey])
        let t = try token(claims(exp: now + 60))
        #expect(try verifier.verify(t, now: now).sub == "user-1")
        #expect(verifier.cachedCount == 1)
        #expect(try verifier.verify(t, now: now + 10).sub == "user-1")
        #expect(throws: AccessToken.Failure.expired) { try verifier.verify(t, now: now + 91) }
        #expect(verifier.cachedCount == 0)
        _ = try verifier.verify(t, now: now)
        verifier.setKeys([kid: Curve25519.Signing.PrivateKey().publicKey])
        #expect(verifier.cachedCount == 0)
        #expect(throws: AccessToken.Failure.badSignature) { try verifier.verify(t, now: now) }
    }
}
