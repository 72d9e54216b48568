import AsyncHTTPClient
import CareMeshRouter
import CareMeshTesting
import Foundation
import NIOSSL
import Testing

/// The HTTP edge carries passwords and PHI: it serves TLS when given a certificate, and plain
/// HTTP only on loopback unless told that a proxy in front terminates TLS.
@Suite struct EdgeTLSTests {
    /// A self-signed certificate for 127.0.0.1 and its key, made by openssl in a fresh folder.
    func selfSigned() async throws -> (cert: String, key: String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("edge-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let cert = dir.appendingPathComponent("cert.pem").path, key = dir.appendingPathComponent("key.pem").path
        let made = try await TestStack.run(URL(fileURLWithPath: "/usr/bin/openssl"), [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert,
        ])
        try #require(made.status == 0, "openssl: \(made.stderr)")
        return (cert, key)
    }

    @Test("with a certificate the edge serves HTTPS (a client trusting it gets /healthz; plain HTTP gets nothing)")
    func servesTLS() async throws {
        let (cert, key) = try await selfSigned()
        var configuration = try #require(try HTTPEdge.Configuration(environment: [
            "CAREMESH_HTTP_ADDRESS": "127.0.0.1:0", "CAREMESH_HTTP_TLS_CERT_FILE": cert, "CAREMESH_HTTP_TLS_KEY_FILE": key,
        ]))
        configuration.port = 0
        let router = try TestStack.startRouter()
        defer { router.stop() }
        let edge = HTTPEdge(configuration: configuration, router: router, logger: TestStack.quietLogger("edge"))
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(cert))
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
        try await TestStack.withServices([edge]) {
            let port = await edge.port()
            let ok = try await client.execute(HTTPClientRequest(url: "https://127.0.0.1:\(port)/healthz"), timeout: .seconds(10))
            #expect(ok.status == .ok)
            let plain = try? await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)/healthz"), timeout: .seconds(5))
            #expect(plain == nil || plain?.status != .ok)
        }
        try await client.shutdown()
    }

    @Test("plain HTTP is refused off loopback unless a proxy terminates TLS; a missing certificate file is named")
    func plainOnlyOnLoopback() async throws {
        #expect(try HTTPEdge.Configuration(environment: [:])?.tls == nil)
        #expect(try HTTPEdge.Configuration(environment: ["CAREMESH_HTTP_ADDRESS": "[::1]:8080"]) != nil)
        #expect(try HTTPEdge.Configuration(environment: ["CAREMESH_HTTP_ADDRESS": "off"]) == nil)
        for address in ["0.0.0.0:8080", "10.1.2.3:8080"] {
            do {
                _ = try HTTPEdge.Configuration(environment: ["CAREMESH_HTTP_ADDRESS": address])
                Issue.record("plain HTTP on \(address) was configured")
            } catch { #expect("\(error)".contains("CAREMESH_HTTP_TLS_CERT_FILE")) }
            #expect(try HTTPEdge.Configuration(environment: ["CAREMESH_HTTP_ADDRESS": address, "CAREMESH_HTTP_PLAIN": "allow"]) != nil)
        }
        do {
            _ = try HTTPEdge.Configuration(environment: ["CAREMESH_HTTP_ADDRESS": "0.0.0.0:8443", "CAREMESH_HTTP_TLS_CERT_FILE": "/nonexistent.pem",
                                                          "CAREMESH_HTTP_TLS_KEY_FILE": "/nonexistent.key"])
            Issue.record("a missing certificate was configured")
        } catch { #expect("\(error)".contains("CAREMESH_HTTP_TLS_CERT_FILE")) }
    }
}
