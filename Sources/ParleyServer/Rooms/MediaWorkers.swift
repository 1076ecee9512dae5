import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The media workers: one event loop each (by default one per core). A room is pinned to one
/// worker for its life; its actor runs on that worker's loop, which will also own the room's UDP
/// traffic, so a packet reaches its room with no thread hop.
public final class MediaWorkers: Sendable {
    public let group: MultiThreadedEventLoopGroup
    private let loops: [any EventLoop]
    private let assigned: NIOLockedValueBox<[Int]>

    public init(count: Int) {
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, count))
        loops = Array(group.makeIterator())
        assigned = NIOLockedValueBox(Array(repeating: 0, count: loops.count))
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
        try await group.shutdownGracefully()
    }
}
