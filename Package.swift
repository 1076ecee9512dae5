// swift-tools-version: 6.2
import PackageDescription

let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

// The packet path's modules: release builds skip the run-time exclusivity checks (a
// begin/end-access call pair around each counter and stream-table update, about 1 % of the
// server's CPU under load); the compile-time checks and debug builds keep them.
let packetPathSettings: [SwiftSetting] = strictSettings + [
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "parley",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "parley", targets: ["parley"]),
        .library(name: "ParleyServer", targets: ["ParleyServer"]),
        .library(name: "ParleyClient", targets: ["ParleyClient"]),
        .library(name: "ParleyTools", targets: ["ParleyTools"]),
        .library(name: "ParleyProtocol", targets: ["ParleyProtocol"]),
        .library(name: "Auth", targets: ["Auth"]),
        .library(name: "Store", targets: ["Store"]),
        .library(name: "WebRTC", targets: ["WebRTC"]),
        .library(name: "Addresses", targets: ["Addresses"]),
        .library(name: "STUN", targets: ["STUN"]),
        .library(name: "RTP", targets: ["RTP"]),
        .library(name: "SDP", targets: ["SDP"]),
        .library(name: "SFU", targets: ["SFU"]),
        .library(name: "TURN", targets: ["TURN"]),
        .library(name: "Recording", targets: ["Recording"]),
        .library(name: "Opus", targets: ["Opus"]),
        .library(name: "Congestion", targets: ["Congestion"]),
        .library(name: "StreamAllocation", targets: ["StreamAllocation"]),
        .library(name: "Placement", targets: ["Placement"]),
        .library(name: "Webhooks", targets: ["Webhooks"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        // System-library shims: each C library is wrapped once, here.
        .systemLibrary(name: "CParleyOpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CParleySRTP", pkgConfig: "libsrtp2", providers: [.apt(["libsrtp2-dev"])]),
        .systemLibrary(name: "CParleyOpus", pkgConfig: "opus", providers: [.apt(["libopus-dev"])]),

        // Linux calls Glibc's module leaves out (epoll, eventfd, recvmmsg/sendmmsg).
        .target(name: "CParleyLinux"),

        .target(name: "ParleyProtocol", swiftSettings: strictSettings),

        // IPv4/IPv6 and transport addresses as plain values: what codecs and policies share.
        .target(name: "Addresses", swiftSettings: strictSettings),
        // Pure codecs: no I/O, no clocks; tested with RFC vectors and fuzzed.
        .target(
            name: "STUN", dependencies: ["Addresses", .product(name: "Crypto", package: "swift-crypto")], swiftSettings: strictSettings),
        .target(name: "RTP", swiftSettings: packetPathSettings),
        .target(name: "SDP", swiftSettings: strictSettings),
        // Transport-wide congestion control: TWCC feedback, the send-side bandwidth estimator.
        // Pure: times are passed in; tested with link traces and fuzzed.
        .target(name: "Congestion", swiftSettings: strictSettings),
        // Per subscriber: which simulcast and temporal layer of each track fits the estimate; dynacast's needed layers. Pure.
        .target(name: "StreamAllocation", swiftSettings: strictSettings),
        // Which node a new room opens on, by the nodes' load and caps. Pure: the caller passes the view.
        .target(name: "Placement", swiftSettings: strictSettings),
        // Webhook bodies in LiveKit's shape and their delivery from the store's outbox, in order per room, with retries.
        .target(
            name: "Webhooks", dependencies: ["Store", .product(name: "Logging", package: "swift-log")], swiftSettings: strictSettings),
        // libopus: the encoder and decoder the recorder's mixer and the tools use.
        .target(name: "Opus", dependencies: ["CParleyOpus"], swiftSettings: strictSettings),
        // Socket addresses (STUN's, NIO's, the kernel's), raw UDP sockets and sendmmsg batches.
        .target(
            name: "NetworkAddress", dependencies: ["Addresses", "STUN", "CParleyLinux", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: packetPathSettings),
        // ICE-lite, DTLS and SRTP (both on OpenSSL) and the RFC 7983 demux for one transport.
        .target(name: "WebRTC", dependencies: [
                "Addresses", "STUN", "NetworkAddress", "CParleyOpenSSL", "CParleyLinux",
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: packetPathSettings),
        // The forwarding core: publications, down-tracks, RTCP feedback, speakers, its counters.
        .target(
            name: "SFU",
            dependencies: ["RTP", "WebRTC", "Congestion", "StreamAllocation"],
            swiftSettings: packetPathSettings
        ),
        // The STUN/TURN server: allocations, permissions, channels, UDP relays, credentials.
        .target(
            name: "TURN",
            dependencies: [
                "Addresses", "STUN", "NetworkAddress", "CParleyLinux", .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: strictSettings),
        // Recording: Ogg Opus and Matroska/WebM writers, depacketizers (RTP payloads, not
        // headers: the SFU hands them over), jitter buffer, mixer.
        .target(
            name: "Recording",
            dependencies: ["Opus", .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            swiftSettings: strictSettings),
        .target(
            name: "Auth",
            dependencies: [
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "Store",
            dependencies: [
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "ParleyServer",
            dependencies: [
                "ParleyProtocol", "Auth", "Store", "Placement", "StreamAllocation", "Webhooks", "Addresses", "STUN", "WebRTC", "SFU", "RTP", "SDP", "TURN",
                "Recording",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            resources: [.copy("Public")],
            swiftSettings: strictSettings
        ),
        // The Swift SDK: signaling, transports, the TURN client, rooms. No libopus, no token issuer.
        .target(
            name: "ParleyClient",
            dependencies: [
                "ParleyProtocol", "Addresses", "WebRTC", "SDP", "RTP", "STUN", "NetworkAddress", "Congestion",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        // Built on the SDK: the load tester, the Janus client, synthetic media, the recording bot.
        .target(
            name: "ParleyTools",
            dependencies: [
                "ParleyClient", "ParleyProtocol", "Auth", "Opus", "Recording", "RTP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "parley",
            dependencies: [
                "ParleyServer", "ParleyClient", "ParleyTools", "ParleyProtocol", "Auth",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings
        ),

        .testTarget(name: "AuthTests", dependencies: ["Auth", .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "StoreTests", dependencies: ["Store"]),
        .testTarget(name: "AddressesTests", dependencies: ["Addresses"]),
        .testTarget(name: "STUNTests", dependencies: ["STUN", "Addresses"]),
        .testTarget(name: "RTPTests", dependencies: ["RTP"]),
        .testTarget(name: "CongestionTests", dependencies: ["Congestion"]),
        .testTarget(name: "StreamAllocationTests", dependencies: ["StreamAllocation"]),
        .testTarget(name: "PlacementTests", dependencies: ["Placement"]),
        .testTarget(name: "WebhooksTests", dependencies: ["Webhooks", "Store", .product(name: "NIOConcurrencyHelpers", package: "swift-nio"), .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "SDPTests", dependencies: ["SDP"], resources: [.copy("Fixtures")]),
        .testTarget(name: "WebRTCTests", dependencies: ["WebRTC", "STUN", "Addresses", "CParleySRTP"]),
        .testTarget(name: "RecordingTests", dependencies: ["Recording"]),
        .testTarget(
            name: "TURNTests",
            dependencies: ["TURN", "STUN", "Addresses", .product(name: "NIOPosix", package: "swift-nio")]),
        .testTarget(
            name: "SFUTests",
            dependencies: ["SFU", "WebRTC", "RTP", "STUN", "Addresses", .product(name: "NIOPosix", package: "swift-nio")]),
        .testTarget(
            name: "ParleyServerTests",
            dependencies: [
                "ParleyServer", "ParleyClient", "ParleyTools", "ParleyProtocol", "Auth", "Recording", "TURN", "STUN", "Addresses",
                "NetworkAddress", "RTP", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(name: "SystemLibraryTests", dependencies: ["CParleyOpenSSL", "CParleySRTP", "CParleyOpus"]),
    ]
)
