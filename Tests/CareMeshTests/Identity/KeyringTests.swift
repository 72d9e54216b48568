import Crypto
@testable import IdentityService
import Testing

/// Signing-key rotation, without a database: which key signs, and when the next is made.
@Suite struct KeyringRotationTests {
    func key(_ kid: String, from: Int64, retires: Int64) -> Keyring.Key {
        let k = Curve25519.Signing.PrivateKey()
        return Keyring.Key(kid: kid, publicKey: k.publicKey, privateKey: k, activeFrom: from, retiresAt: retires)
    }

    @Test("the newest active key signs; before any is active, the earliest pending one; retired keys never")
    func signingKey() {
        let a = key("a", from: 0, retires: 1_000), b = key("b", from: 500, retires: 2_000)
        #expect(Keyring.signing(in: [a, b], at: 100)?.kid == "a")
        #expect(Keyring.signing(in: [a, b], at: 600)?.kid == "b")
        #expect(Keyring.signing(in: [b], at: 100)?.kid == "b")
        #expect(Keyring.signing(in: [a], at: 1_000) == nil)
    }

    @Test("the first key is made at once; the next one publish-lead ahead of the rotation, and only once")
    func nextKey() {
        let rotation: Int64 = 1_000, lead: Int64 = 100
        #expect(Keyring.leadForNewKey([], now: 50, rotation: rotation, publishLead: lead) == 0)
        let a = key("a", from: 0, retires: 2_000)
        #expect(Keyring.leadForNewKey([a], now: 899, rotation: rotation, publishLead: lead) == nil)
        #expect(Keyring.leadForNewKey([a], now: 900, rotation: rotation, publishLead: lead) == lead)
        let pending = key("b", from: 1_000, retires: 3_000)
        #expect(Keyring.leadForNewKey([a, pending], now: 950, rotation: rotation, publishLead: lead) == nil)
        #expect(Keyring.leadForNewKey([pending], now: 950, rotation: rotation, publishLead: lead) == nil)
    }
}
