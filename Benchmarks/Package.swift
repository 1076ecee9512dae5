// swift-tools-version: 6.2
// Micro-benchmarks for Parley's hot paths (package-benchmark). Run with `make bench`.
import Foundation
import PackageDescription

// A path dependency's identity is its folder's name, which depends on where the repo was cloned.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent.lowercased()

let package = Package(
    name: "ParleyBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "ChatFanout",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "ParleyServer", package: root),
                .product(name: "Auth", package: root),
                .product(name: "ParleyProtocol", package: root),
                .product(name: "Store", package: root),
            ],
            path: "Benchmarks/ChatFanout",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "MediaPath",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "WebRTC", package: root),
                .product(name: "RTP", package: root),
                .product(name: "SFU", package: root),
                .product(name: "STUN", package: root),
                .product(name: "Addresses", package: root),
                .product(name: "Congestion", package: root),
                .product(name: "Recording", package: root),
            ],
            path: "Benchmarks/MediaPath",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "RecordingPath",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "Recording", package: root),
            ],
            path: "Benchmarks/RecordingPath",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
