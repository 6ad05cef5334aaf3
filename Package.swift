// swift-tools-version:6.1
import PackageDescription

/// Upcoming language features the library builds with (as Hummingbird does).
let upcoming: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny"), .enableUpcomingFeature("MemberImportVisibility"), .enableUpcomingFeature("InternalImportsByDefault")]

let package = Package(
    name: "koala-router",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "koala-router", targets: ["koala-router"]),
        // The library, one target per pipeline stage (see README, Development).
        .library(name: "KoalaRouter", targets: ["KoalaCore", "KoalaStore", "KoalaDelivery", "KoalaApp"]),
        // The fuzz targets' bodies, for the libFuzzer builds in Fuzz/ and the regression tests.
        .library(name: "FuzzHarness", targets: ["FuzzHarness"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0", traits: [.defaults, "YAML"]),
        .package(url: "https://github.com/apple/swift-system", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
        // Exports the spans over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set; linked into the executable only, and
        // without its gRPC exporter (grpc-swift's build would double this one's).
        .package(url: "https://github.com/swift-otel/swift-otel", from: "1.6.0", traits: ["OTLPHTTP"]),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.3.0"),
        // Counts allocations for the benchmark (koala-router-allocations); linked into nothing else.
        .package(url: "https://github.com/ordo-one/malloc-interposer", from: "1.6.1"),
        // postgres-nio accepts swift-crypto 3 to 5; stay on 3.x, which async-http-client's stack already builds.
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"4.0.0"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        // The pure core: model values, the rule language, signature verification, routing. No server library.
        .target(
            name: "KoalaCore",
            dependencies: [
                "COpenSSL",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: upcoming
        ),
        // Rule tooling beside the core: rule tests, sample checks, expectation updates (check/test, the console's rules page).
        .target(
            name: "KoalaRuleTools",
            dependencies: [
                "KoalaCore",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: upcoming
        ),
        // The durable journal and outbox: the store protocol, SQLite and PostgreSQL, retention.
        .target(
            name: "KoalaStore",
            dependencies: [
                "KoalaCore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: upcoming
        ),
        // Delivery to Koala: batching, the client, the sender and its health; the metrics registry.
        .target(
            name: "KoalaDelivery",
            dependencies: [
                "KoalaCore",
                "KoalaStore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: upcoming
        ),
        // The service: HTTP ingest and admin API (Hummingbird), configuration, rule reloading, background services.
        .target(
            name: "KoalaApp",
            dependencies: [
                "KoalaCore",
                "KoalaStore",
                "KoalaDelivery",
                "KoalaRuleTools",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: upcoming
        ),
        .executableTarget(
            name: "koala-router",
            dependencies: [
                "KoalaCore",
                "KoalaStore",
                "KoalaDelivery",
                "KoalaRuleTools",
                "KoalaApp",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "OTel", package: "swift-otel"),
            ]
        ),
        .target(
            name: "FuzzHarness",
            dependencies: [
                "KoalaCore",
                "KoalaStore",
                "KoalaApp",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Load-benchmark helpers (scripts/bench/run): the bare verify-only baseline and a fast fake Koala.
        .executableTarget(
            name: "koala-router-bench",
            dependencies: [
                "KoalaCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Allocations per webhook on ingest's pure path (scripts/bench/run), counted by the preloaded malloc interposer.
        .executableTarget(
            name: "koala-router-allocations",
            dependencies: [
                "KoalaCore",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "MallocInterposerSwift", package: "malloc-interposer"),
            ]
        ),
        // Helpers every test target shares: the repository root, temporary folders, signed sample webhooks.
        .target(
            name: "KoalaTestSupport",
            dependencies: [
                "KoalaCore",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/KoalaTestSupport"
        ),
        // Unit tests, one target per library target: no network, no database server, no binary.
        .testTarget(
            name: "KoalaCoreTests",
            dependencies: [
                "KoalaCore", "KoalaRuleTools", "KoalaTestSupport",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "KoalaStoreTests",
            dependencies: ["KoalaCore", "KoalaStore"]
        ),
        .testTarget(
            name: "KoalaDeliveryTests",
            dependencies: ["KoalaCore", "KoalaStore", "KoalaDelivery", "KoalaTestSupport"]
        ),
        .testTarget(
            name: "KoalaAppTests",
            dependencies: ["KoalaCore", "KoalaApp", "KoalaTestSupport", .product(name: "Logging", package: "swift-log")]
        ),
        // Integration tests: real SQLite files and a real PostgreSQL server (scripts/test starts it), the HTTP server,
        // the real koala-router binary, the fuzz corpus.
        .testTarget(
            name: "KoalaIntegrationTests",
            dependencies: [
                "KoalaCore",
                "KoalaRuleTools",
                "KoalaStore",
                "KoalaDelivery",
                "KoalaApp",
                "KoalaTestSupport",
                "FuzzHarness",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
    ]
)
