import Addresses
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SFU
import WebRTC

/// The media workers: one event loop each (by default one per core). A room is pinned to one
/// worker for its life; its actor runs on that worker's loop, which will also own the room's UDP
/// traffic, so a packet reaches its room with no thread hop.
public final class MediaWorkers: Sendable {
    public let group: MultiThreadedEventLoopGroup
    private let loops: [any EventLoop]
    private let assigned: NIOLockedValueBox<[Int]>
    /// Each worker's UDP media port: worker N listens on `rtc.port + N`.
    public let ports: [MediaPort]
    /// Each worker's SFU counters, which every room on that worker adds to.
    public let sfuStatistics: [SFUWorkerStatistics]

    public init(count: Int, firstPort: Int = 0, now: @escaping @Sendable () -> UInt64 = { NIODeadline.now().uptimeNanoseconds }) {
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, count))
        loops = Array(group.makeIterator())
        assigned = NIOLockedValueBox(Array(repeating: 0, count: loops.count))
        ports = loops.enumerated().map { index, loop in MediaPort(loop: loop, port: firstPort == 0 ? 0 : firstPort + index, now: now) }
        sfuStatistics = loops.map { _ in SFUWorkerStatistics() }
    }

    /// Binds every worker's sockets on `addresses` (the ICE host candidates).
    public func startMedia(addresses: [IPAddress]) async throws {
        for port in ports { try await port.start(addresses: addresses) }
    }

    public func stopMedia() async {
        for port in ports { await port.stop() }
    }

    /// The addresses to advertise when `rtc.nodeIPs` is empty: every up, non-loopback IPv4
    /// interface address, then the global and unique-local IPv6 ones (link-local ones need a
    /// scope a candidate cannot carry); loopback when there is none, and in dev mode (browsers on
    /// this machine).
    public static func detectNodeAddresses(dev: Bool) -> [IPAddress] {
        var v4: [IPAddress] = [], v6: [IPAddress] = []
        for device in (try? System.enumerateDevices()) ?? [] {
            guard let address = device.address, let transport = TransportAddress(address) else { continue }
            switch transport.ip {
            case .v4(let value):
                if value >> 24 != 127, !v4.contains(transport.ip) { v4.append(transport.ip) }
            case .v6(let high, let low):
                let isLoopback = high == 0 && low == 1
                let isLinkLocal = high >> 54 == 0x3FA  // fe80::/10
                let isMappedOrUnspecified = high == 0
                if !isLoopback, !isLinkLocal, !isMappedOrUnspecified, !v6.contains(transport.ip) { v6.append(transport.ip) }
            }
        }
        var found = v4 + v6
        if dev || found.isEmpty { found.insert(IPAddress("127.0.0.1")!, at: 0) }
        return found
    }

    public var count: Int { loops.count }

    /// The worker with the fewest rooms, and its index so the room can give it back.
    public func assign() -> (index: Int, loop: any EventLoop) {
        assigned.withLockedValue { counts in
            let index = counts.indices.min { counts[$0] < counts[$1] } ?? 0
            counts[index] += 1
            return (index, loops[index])
        }
    }

    public func release(_ index: Int) {
        assigned.withLockedValue { $0[index] = max(0, $0[index] - 1) }
    }

    public func roomsPerWorker() -> [Int] { assigned.withLockedValue { $0 } }

    public func shutdown() async throws {
        await stopMedia()
        try await group.shutdownGracefully()
    }
}
