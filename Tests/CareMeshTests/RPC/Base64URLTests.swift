import CareMeshRPC
import Foundation
import Testing

@Suite struct Base64URLTests {
    /// RFC 4648 §10's vectors, in the URL alphabet without padding.
    @Test func rfc4648Vectors() {
        let vectors = ["": "", "f": "Zg", "fo": "Zm8", "foo": "Zm9v", "foob": "Zm9vYg", "fooba": "Zm9vYmE", "foobar": "Zm9vYmFy"]
        for (plain, encoded) in vectors {
            #expect(Base64URL.encode(Data(plain.utf8)) == encoded)
            #expect(Base64URL.decode(encoded) == Data(plain.utf8))
        }
    }

    /// Every length from 0 to 100 with random bytes: the same text as Foundation's base64 with
    /// the alphabet swapped and padding dropped, and back.
    @Test func agreesWithFoundation() {
        var rng = SystemRandomNumberGenerator()
        for length in 0...100 {
            let bytes = Data((0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) })
            let expected = bytes.base64EncodedString()
                .map { $0 == "+" ? "-" : $0 == "/" ? "_" : $0 }.filter { $0 != "=" }
            let encoded = Base64URL.encode(bytes)
            #expect(encoded == String(expected), "length \(length)")
            #expect(Base64URL.decode(encoded) == bytes, "length \(length)")
        }
    }

    /// Padding, the standard alphabet, whitespace, an impossible length and non-zero unused
    /// bits are all refused: one encoding per byte string.
    @Test func refusesWhatIsNotCanonical() {
        for text in ["Zg==", "Zm8=", "a+b/", "Zm 9v", "Z", "Zm9vY", "Zh", "Zm9", "\u{00e9}"] {
            #expect(Base64URL.decode(text) == nil, "\(text)")
        }
        #expect(Base64URL.decode("Zg") == Data("f".utf8))
        #expect(Base64URL.decode("Zm8") == Data("fo".utf8))
    }
}
