// swift-tools-version:6.2
import PackageDescription

// CareMesh: separate executables (router, identity, dispatch, alerts, messaging) that exchange
// protobuf messages over ZeroMQ (MDP/0.2) through a router, plus the `caremesh` CLI.
// Each service is a library plus a thin `@main`, so tests build it in-process.

let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "CareMesh",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "router", targets: ["RouterMain"]),
        .executable(name: "identity", targets: ["IdentityMain"]),
        .executable(name: "dispatch", targets: ["DispatchMain"]),
        .executable(name: "alerts", targets: ["AlertsMain"]),
        .executable(name: "messaging", targets: ["MessagingMain"]),
        .executable(name: "sandbox", targets: ["SandboxMain"]),
        .executable(name: "caremesh", targets: ["CareMeshCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        // libzmq from Debian (libzmq3-dev), through a system-library target.
        .systemLibrary(name: "CZMQ", path: "Shared/CZMQ", providers: [.apt(["libzmq3-dev"])]),
        // A thin Swift wrapper over libzmq: sockets owned by one thread, frames, polling.
        .target(name: "ZMQ", dependencies: ["CZMQ"], path: "Shared/ZMQ", swiftSettings: swiftSettings),
        // Generated protobuf Swift (committed; scripts/generate-protos.sh) and method descriptors.
        .target(
            name: "CareMeshContracts",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
            path: "Shared/Contracts",
            swiftSettings: swiftSettings
        ),
        // The wire protocol, the worker runtime and the client.
        .target(
            name: "CareMeshRPC",
            dependencies: [
                "ZMQ", "CareMeshContracts",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Shared/RPC",
            swiftSettings: swiftSettings
        ),
        // PostgreSQL: the pooled store, migrations, provisioning, the embedded cluster.
        .target(
            name: "CareMeshStore",
            dependencies: ["CareMeshRPC", "CareMeshContracts", "ZMQ",
                           .product(name: "PostgresNIO", package: "postgres-nio"),
                           .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                           .product(name: "_ConnectionPoolModule", package: "postgres-nio"),
                           .product(name: "NIOCore", package: "swift-nio"),
                           .product(name: "NIOPosix", package: "swift-nio"),
                           .product(name: "Crypto", package: "swift-crypto"),
                           .product(name: "Logging", package: "swift-log"),
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            path: "Shared/Store",
            exclude: ["Migrations"],
            swiftSettings: swiftSettings
        ),
        // The MDP/0.2 broker.
        // Access tokens: EdDSA JWTs, signed by identity, verified by the router.
        .target(
            name: "CareMeshAuth",
            dependencies: ["CareMeshContracts", "CareMeshRPC", .product(name: "Crypto", package: "swift-crypto")],
            path: "Shared/Auth",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CareMeshRouter",
            dependencies: ["CareMeshRPC", "ZMQ", "CareMeshContracts", "CareMeshAuth",
                           .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                           .product(name: "Hummingbird", package: "hummingbird"),
                           .product(name: "HummingbirdCore", package: "hummingbird"),
                           .product(name: "HummingbirdTLS", package: "hummingbird"),
                           .product(name: "NIOSSL", package: "swift-nio-ssl"),
                           .product(name: "Logging", package: "swift-log"),
                           .product(name: "Metrics", package: "swift-metrics"),
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            path: "Services/Router/Library",
            swiftSettings: swiftSettings
        ),
        .executableTarget(name: "RouterMain", dependencies: ["CareMeshRouter"],
                          path: "Services/Router/Main", swiftSettings: swiftSettings),
        // Domain services: a library each, plus a thin main.
        .target(name: "IdentityService", dependencies: ["CareMeshRPC", "CareMeshStore", "CareMeshAuth",
                                                 .product(name: "Crypto", package: "swift-crypto"),
                                                 .product(name: "CryptoExtras", package: "swift-crypto")],
                path: "Services/Identity/Library", swiftSettings: swiftSettings),
        .executableTarget(name: "IdentityMain", dependencies: ["IdentityService", "CareMeshStore"],
                          path: "Services/Identity/Main", swiftSettings: swiftSettings),
        .target(name: "DispatchService", dependencies: ["CareMeshRPC", "CareMeshStore"],
                path: "Services/Dispatch/Library", swiftSettings: swiftSettings),
        .executableTarget(name: "DispatchMain", dependencies: ["DispatchService", "CareMeshStore"],
                          path: "Services/Dispatch/Main", swiftSettings: swiftSettings),
        .target(name: "AlertsService", dependencies: ["CareMeshRPC", "CareMeshStore"],
                path: "Services/Alerts/Library", swiftSettings: swiftSettings),
        .executableTarget(name: "AlertsMain", dependencies: ["AlertsService", "CareMeshStore"],
                          path: "Services/Alerts/Main", swiftSettings: swiftSettings),
        .target(name: "MessagingService",
                dependencies: ["CareMeshRPC", "CareMeshStore", "CareMeshContracts", .product(name: "Crypto", package: "swift-crypto"),
                               .product(name: "CryptoExtras", package: "swift-crypto"),
                               .product(name: "AsyncHTTPClient", package: "async-http-client")],
                path: "Services/Messaging/Library", swiftSettings: swiftSettings),
        // The provider sandbox: a local HTTP server speaking Twilio's and Orange's APIs, posting
        // signed status callbacks with scripted outcomes (tests and `caremesh up`).
        .target(name: "ProviderSandbox",
                dependencies: ["MessagingService", "CareMeshRPC", .product(name: "Hummingbird", package: "hummingbird"),
                               .product(name: "Crypto", package: "swift-crypto"), .product(name: "CryptoExtras", package: "swift-crypto"),
                               .product(name: "AsyncHTTPClient", package: "async-http-client")],
                path: "Services/Sandbox/Library", swiftSettings: swiftSettings),
        .executableTarget(name: "SandboxMain", dependencies: ["ProviderSandbox", "CareMeshRPC"],
                          path: "Services/Sandbox/Main", swiftSettings: swiftSettings),
        .executableTarget(name: "MessagingMain", dependencies: ["MessagingService", "CareMeshStore"],
                          path: "Services/Messaging/Main", swiftSettings: swiftSettings),
        // The command line: call, health, up/down/status, bench.
        .executableTarget(
            name: "CareMeshCLI",
            dependencies: [
                "CareMeshRPC", "CareMeshRouter", "CareMeshContracts", "CareMeshStore", "CareMeshAuth", "ZMQ",
                "IdentityService", "DispatchService", "AlertsService", "MessagingService",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Services/CLI",
            swiftSettings: swiftSettings
        ),
        // Test support: free ports, in-process router and workers, child processes.
        .target(
            name: "CareMeshTesting",
            dependencies: ["CareMeshRPC", "CareMeshRouter", "CareMeshStore", "ZMQ",
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            path: "Shared/Testing",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CareMeshTests",
            dependencies: ["CareMeshTesting", "CareMeshRouter", "CareMeshRPC", "CareMeshContracts", "CareMeshStore", "ZMQ",
                           "CareMeshAuth", .product(name: "Crypto", package: "swift-crypto"),
                           .product(name: "PostgresNIO", package: "postgres-nio"),
                           "IdentityService", "DispatchService", "AlertsService", "MessagingService", "ProviderSandbox",
                           .product(name: "AsyncHTTPClient", package: "async-http-client"),
                           .product(name: "NIOSSL", package: "swift-nio-ssl")],
            path: "Tests/CareMeshTests",
            swiftSettings: swiftSettings
        ),
    ]
)
