import CareMeshAuth
import CareMeshContracts
@testable import CareMeshRouter
import Foundation
import Testing

/// The router's revocation entries, without sockets.
@Suite struct RevokedTokensTests {
    func claims(sub: String = "u1", sid: String = "s1", tv: Int64? = nil) -> AccessClaims {
        AccessClaims(iss: "i", aud: "a", sub: sub, roles: ["user"], sid: sid, iat: 0, nbf: 0, exp: 100, jti: "j", tv: tv)
    }

    func event(user: String = "u1", session: String = "", version: Int64 = 0, until: Int64 = 1_000) -> Caremesh_Identity_V1_TokensRevoked {
        var e = Caremesh_Identity_V1_TokensRevoked()
        e.userID = user
        e.sessionID = session
        e.minVersion = version
        e.until = until
        return e
    }

    @Test("a session entry refuses that session only; a version entry refuses older tokens of that user only; entries expire")
    func entries() {
        var r = RevokedTokens()
        #expect(r.isEmpty && r.refusal(claims()) == nil)
        r.apply(event(session: "s1"))
        #expect(r.refusal(claims(sid: "s1")) != nil)
        #expect(r.refusal(claims(sid: "s2")) == nil)
        r.apply(event(user: "u2", version: 3))
        #expect(r.refusal(claims(sub: "u2", sid: "x", tv: 2)) != nil)
        #expect(r.refusal(claims(sub: "u2", sid: "x")) != nil, "a token from before versions is version 0")
        #expect(r.refusal(claims(sub: "u2", sid: "x", tv: 3)) == nil)
        #expect(r.refusal(claims(sub: "u3", sid: "x", tv: 0)) == nil)
        // A late, older announcement never loosens an entry.
        r.apply(event(user: "u2", version: 2))
        #expect(r.refusal(claims(sub: "u2", sid: "x", tv: 2)) != nil)
        #expect(r.count == 2)
        r.apply(event(user: "u4", version: 1, until: 50))
        r.expire(now: 60)
        #expect(r.count == 2)
        r.expire(now: 1_000)
        #expect(r.isEmpty)
    }
}
