// swift-tools-version:6.1
// libFuzzer targets over koala-router's input paths. Build and run them with scripts/fuzz (from the repository
// root), which passes `-sanitize=fuzzer,address -parse-as-library` to every Swift module.
import PackageDescription

let targets = ["FuzzJSON": "json", "FuzzExpression": "expression", "FuzzVerify": "verify", "FuzzIngest": "ingest", "FuzzRules": "rules"]

let package = Package(
    name: "koala-router-fuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "koala-router", path: ".."),
    ],
    targets: [.target(name: "FuzzDriver")] + targets.keys.sorted().map { name in
        .executableTarget(name: name, dependencies: ["FuzzDriver", .product(name: "FuzzHarness", package: "koala-router")])
    }
)
