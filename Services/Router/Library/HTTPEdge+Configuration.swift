import Foundation

/// How the edge listens: address, TLS, limits, and the notification streams' heartbeat.
extension HTTPEdge {
    public struct Configuration: Sendable {
        public var host = "127.0.0.1"
        /// 0: any free port (read `port()` once running).
        public var port = 8080
        /// The scheme and host providers were given for webhooks (e.g. `https://edge.example.org`),
        /// so the signed URL can be rebuilt behind a proxy; without it, `http://` and the `Host` header.
        public var publicURL: String?
        /// The largest body taken (1 MiB).
        public var maxBody = 1 << 20
        public var timeout: Duration = .seconds(30)
        /// How often an idle notification stream gets a comment line (proxies close silent ones).
        public var streamHeartbeat: Duration = .seconds(15)

        /// The certificate chain and private key (PEM files) the edge serves HTTPS with; nil: plain
        /// HTTP, which only loopback gets unless `allowPlain`.
        public var tls: TLSFiles?
        /// Plain HTTP on an address other than loopback: a proxy in front terminates TLS.
        public var allowPlain = false

        public struct TLSFiles: Sendable, Equatable {
            public var certificateChain: String
            public var privateKey: String

            public init(certificateChain: String, privateKey: String) {
                self.certificateChain = certificateChain
                self.privateKey = privateKey
            }
        }

        public init() {}

        /// `CAREMESH_HTTP_ADDRESS` (`127.0.0.1:8080`; `off` disables the edge),
        /// `CAREMESH_HTTP_PUBLIC_URL`, `CAREMESH_HTTP_TLS_CERT_FILE` and `CAREMESH_HTTP_TLS_KEY_FILE`
        /// (PEM: HTTPS), `CAREMESH_HTTP_PLAIN=allow` (plain HTTP off loopback, behind a TLS proxy).
        /// Plain HTTP on an address other than loopback, without that, is refused: passwords and
        /// PHI cross the edge.
        public init?(environment env: [String: String]) throws(EdgeConfigurationError) {
            let address = env["CAREMESH_HTTP_ADDRESS"] ?? "127.0.0.1:8080"
            guard address.lowercased() != "off" else { return nil }
            if let colon = address.lastIndex(of: ":"), let p = Int(address[address.index(after: colon)...]) {
                host = String(address[..<colon])
                port = p
            }
            publicURL = env["CAREMESH_HTTP_PUBLIC_URL"].flatMap { $0.isEmpty ? nil : ($0.hasSuffix("/") ? String($0.dropLast()) : $0) }
            allowPlain = env["CAREMESH_HTTP_PLAIN"]?.lowercased() == "allow"
            if let text = env["CAREMESH_HTTP_STREAM_HEARTBEAT_S"], !text.isEmpty {
                guard let seconds = Int(text), (1...300).contains(seconds) else {
                    throw EdgeConfigurationError("CAREMESH_HTTP_STREAM_HEARTBEAT_S must be whole seconds from 1 to 300, not \(text)")
                }
                streamHeartbeat = .seconds(seconds)
            }
            let cert = env["CAREMESH_HTTP_TLS_CERT_FILE"].flatMap { $0.isEmpty ? nil : $0 }
            let key = env["CAREMESH_HTTP_TLS_KEY_FILE"].flatMap { $0.isEmpty ? nil : $0 }
            switch (cert, key) {
            case (let cert?, let key?):
                for (variable, path) in [("CAREMESH_HTTP_TLS_CERT_FILE", cert), ("CAREMESH_HTTP_TLS_KEY_FILE", key)]
                    where !FileManager.default.isReadableFile(atPath: path) {
                    throw EdgeConfigurationError("\(variable) names \(path), which cannot be read")
                }
                tls = TLSFiles(certificateChain: cert, privateKey: key)
            case (nil, nil):
                guard isLoopback || allowPlain else {
                    throw EdgeConfigurationError("""
                        the HTTP edge would serve plain HTTP on \(host): give CAREMESH_HTTP_TLS_CERT_FILE and \
                        CAREMESH_HTTP_TLS_KEY_FILE (PEM), or CAREMESH_HTTP_PLAIN=allow behind a proxy that terminates TLS
                        """)
                }
            default:
                throw EdgeConfigurationError("CAREMESH_HTTP_TLS_CERT_FILE and CAREMESH_HTTP_TLS_KEY_FILE go together")
            }
        }

        /// Whether the edge listens on loopback only.
        public var isLoopback: Bool {
            ["127.0.0.1", "localhost", "::1", "[::1]"].contains(host) || host.hasPrefix("127.")
        }
    }
}
