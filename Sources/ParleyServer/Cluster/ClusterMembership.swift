import Auth
import Foundation
import Logging
import NIOConcurrencyHelpers
import ParleyProtocol
import ServiceLifecycle
import Store

/// This node's part in a cluster: it announces itself (address, load) and renews its lease and
/// its rooms' leases every `cluster.renewInterval`; it claims a room before opening it, so a room
/// lives on exactly one node; it withdraws when it shuts down. Without PostgreSQL there is no
/// cluster and the node places every room on itself.
public final class ClusterMembership: Sendable {
    public let nodeName: String
    let repository: any ClusterRepository
    let clock: any ServerClock
    let leaseDuration: Duration
    let renewInterval: Duration
    let maxParticipants: Int
    let metrics: ServerMetrics
    let logger: Logger
    let startedAt: Int64
    /// `cluster.secret`: what this node signs its relayed and forwarded requests with.
    let secret: [UInt8]
    /// Set once the listener is bound (its port may be chosen by the OS).
    let announcedAddress = NIOLockedValueBox<(signalingURL: String, media: [String], turn: String)?>(nil)
    /// The live nodes as of the last renewal, for /metrics.
    let lastView = NIOLockedValueBox<[NodeRecord]>([])
    private let cpu = NIOLockedValueBox(ProcessCPU())

    init(
        nodeName: String, repository: any ClusterRepository, clock: any ServerClock, leaseDuration: Duration, renewInterval: Duration,
        maxParticipants: Int, secret: [UInt8], metrics: ServerMetrics, logger: Logger
    ) {
        self.secret = secret
        self.nodeName = nodeName
        self.repository = repository
        self.clock = clock
        self.leaseDuration = leaseDuration
        self.renewInterval = renewInterval
        self.maxParticipants = maxParticipants
        self.metrics = metrics
        self.logger = logger
        self.startedAt = clock.wallMilliseconds()
    }

    var leaseMilliseconds: Int64 { leaseDuration.milliseconds }

    /// This node's `ClusterCredential` as of now, for a request it relays or forwards.
    func credential() -> String {
        ClusterCredential.sign(node: nodeName, unixTime: Int64(Date().timeIntervalSince1970), secret: secret)
    }

    /// Takes `room` for this node, or says which node has it. A database that cannot be reached
    /// means no placement: `unavailable`.
    func claim(room: String) async throws(ProtocolError) -> RoomOwnership {
        let now = clock.wallMilliseconds()
        do {
            return try await repository.claim(room: room, node: nodeName, now: now, leaseUntil: now + leaseMilliseconds)
        } catch {
            metrics.placementFailures.increment()
            throw ProtocolError(.unavailable, "room \(room) cannot be placed now (\(error)); try again shortly")
        }
    }

    /// Gives a closed room up, so another node may open it at once.
    func release(room: String) async {
        do {
            try await repository.release(room: room, node: nodeName)
        } catch {
            logger.warning("room release failed; its lease will lapse", metadata: ["room": "\(room)", "error": "\(error)"])
        }
    }

    /// The signaling URL of a live node: from the last renewal's view, else read now (a node
    /// that joined since).
    func signalingURL(of node: String) async -> String? {
        if let known = lastView.withLockedValue({ view in view.first { $0.name == node }?.signalingURL }) { return known }
        guard let live = try? await liveNodes() else { return nil }
        lastView.withLockedValue { $0 = live }
        return live.first { $0.name == node }?.signalingURL
    }

    /// One renewal: this node's record and the leases of the rooms it holds; then the live view.
    func renew(registry: RoomRegistry, draining: Bool = false) async throws {
        guard let address = announcedAddress.withLockedValue({ $0 }) else { return }
        let rooms = await registry.list()
        let now = clock.wallMilliseconds()
        let record = NodeRecord(
            name: nodeName, signalingURL: address.signalingURL, mediaAddresses: address.media, turnAddress: address.turn,
            participants: rooms.reduce(0) { $0 + ($1.numParticipants ?? 0) }, rooms: rooms.count,
            cpu: cpu.withLockedValue { $0.coresSinceLastCall(wallMilliseconds: now) }, maxParticipants: maxParticipants,
            draining: draining, startedAt: startedAt, leaseUntil: now + leaseMilliseconds)
        try await repository.announce(record, rooms: rooms.map(\.name), now: now)
        let live = try await repository.liveNodes(now: now)
        lastView.withLockedValue { $0 = live }
        metrics.clusterNodes.set(Double(live.count))
    }

    /// The room's owner while its lease runs.
    func owner(of room: String) async throws -> RoomOwnership? {
        try await repository.owner(room: room, now: clock.wallMilliseconds())
    }

    func liveNodes() async throws -> [NodeRecord] {
        try await repository.liveNodes(now: clock.wallMilliseconds())
    }

    func withdraw() async {
        do {
            try await repository.withdraw(node: nodeName)
            logger.info("left the cluster", metadata: ["node": "\(nodeName)"])
        } catch {
            logger.warning("could not withdraw from the cluster; the lease will lapse", metadata: ["error": "\(error)"])
        }
    }
}

/// Renews the node's lease until shutdown, then withdraws it.
struct ClusterHeartbeat: Service {
    let membership: ClusterMembership
    let registry: RoomRegistry

    func run() async throws {
        await cancelWhenGracefulShutdown {
            var failing = false
            // The record needs the bound ports: wait for the listener.
            while membership.announcedAddress.withLockedValue({ $0 == nil }), !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(20))
            }
            while !Task.isCancelled {
                do {
                    try await membership.renew(registry: registry)
                    if failing {
                        membership.logger.info("cluster lease renewed again")
                        failing = false
                    }
                } catch {
                    membership.metrics.leaseRenewalFailures.increment()
                    if !failing {
                        membership.logger.error("cluster lease renewal failed", metadata: ["error": "\(error)"])
                        failing = true
                    }
                }
                try? await membership.clock.sleep(for: membership.renewInterval)
            }
        }
        await membership.withdraw()
    }
}

/// The process's CPU time from /proc/self/stat, as cores used between two calls.
struct ProcessCPU {
    private var lastTicks: Int64?
    private var lastWall: Int64 = 0

    mutating func coresSinceLastCall(wallMilliseconds now: Int64) -> Double {
        guard let ticks = Self.ticks() else { return 0 }
        defer {
            lastTicks = ticks
            lastWall = now
        }
        guard let last = lastTicks, now > lastWall else { return 0 }
        let seconds = Double(ticks - last) / Double(sysconf(Int32(_SC_CLK_TCK)))
        return seconds / (Double(now - lastWall) / 1000)
    }

    /// utime + stime, the 14th and 15th fields (after the parenthesised command name).
    static func ticks() -> Int64? {
        guard let text = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
              let end = text.lastIndex(of: ")")
        else { return nil }
        let fields = text[text.index(after: end)...].split(separator: " ")
        guard fields.count > 13, let user = Int64(fields[11]), let system = Int64(fields[12]) else { return nil }
        return user + system
    }
}

extension NodeInfo {
    init(_ record: NodeRecord) {
        self.init(
            name: record.name, signalingURL: record.signalingURL, mediaAddresses: record.mediaAddresses, turnAddress: record.turnAddress,
            participants: record.participants, rooms: record.rooms, cpu: record.cpu, maxParticipants: record.maxParticipants,
            draining: record.draining, startedAt: record.startedAt, leaseUntil: record.leaseUntil)
    }
}
