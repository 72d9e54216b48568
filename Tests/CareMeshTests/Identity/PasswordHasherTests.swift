import Foundation
@testable import IdentityService
import Testing

@Suite struct PasswordHasherTests {
    /// Cheap parameters for the logic; one test below runs the real defaults.
    let fast = PasswordHasher(parameters: .init(logN: 10, r: 8, p: 1))

    @Test("hash and verify; a wrong password, another salt, a tampered string all fail")
    func roundTrip() throws {
        let a = try fast.hash("correct horse battery staple")
        let b = try fast.hash("correct horse battery staple")
        #expect(a != b, "a fresh salt per hash")
        #expect(a.hasPrefix("$scrypt$ln=10,r=8,p=1$"))
        #expect(try fast.verify("correct horse battery staple", against: a))
        #expect(try fast.verify("correct horse battery staple", against: b))
        #expect(try !fast.verify("correct horse battery stapl", against: a))
        #expect(try !fast.verify("", against: a))
        var tampered = Array(a)
        tampered[tampered.count - 3] = tampered[tampered.count - 3] == "A" ? "B" : "A"
        #expect(try !fast.verify("correct horse battery staple", against: String(tampered)))
        #expect(throws: PasswordHasher.Failure.malformed) { try fast.verify("x", against: "$argon2id$v=19$…") }
        #expect(throws: PasswordHasher.Failure.malformed) { try fast.verify("x", against: "$scrypt$ln=99,r=8,p=1$AAAAAAAAAAA=$AAAA") }
    }

    @Test("hashes keep their parameters: old ones verify and are flagged for rehash")
    func parameterUpgrade() throws {
        let old = try fast.hash("pw")
        let current = PasswordHasher(parameters: .init(logN: 11, r: 8, p: 1))
        #expect(try current.verify("pw", against: old))
        #expect(current.needsRehash(old))
        #expect(!current.needsRehash(try current.hash("pw")))
        #expect(!fast.needsRehash(try current.hash("pw")))
    }

    @Test("the defaults are OWASP's scrypt parameters and work (128 MiB)")
    func owaspDefaults() throws {
        let hasher = PasswordHasher()
        #expect(hasher.parameters.atLeast(.init(logN: 17, r: 8, p: 1)))
        let h = try hasher.hash("s3cret")
        #expect(h.hasPrefix("$scrypt$ln=17,r=8,p=1$"))
        #expect(try hasher.verify("s3cret", against: h))
    }
}
