import Auth
import Foundation
import Logging
import NIOConcurrencyHelpers
import ParleyProtocol
import Placement
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
    let placement: RoomPlacement
    /// To mark the recordings of lost nodes interrupted.
    let recordings: RecordingLog?
    let cores = ProcessInfo.processInfo.activeProcessorCount
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
    /// Cores used over the last renewal, for this node's own load at a join.
    private let lastCPU = NIOLockedValueBox(0.0)
    /// Set by a drain: new rooms go to other nodes, and the record says so.
    let draining = NIOLockedValueBox(false)

    init(
        nodeName: String, repository: any ClusterRepository, clock: any ServerClock, leaseDuration: Duration, renewInterval: Duration,
        maxParticipants: Int, maxCPU: Double, secret: [UInt8], recordings: RecordingLog?, metrics: ServerMetrics, logger: Logger
    ) {
        self.recordings = recordings
        self.placement = RoomPlacement(maxCPUFraction: maxCPU)
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
    func claim(room: String, for node: String) async throws(ProtocolError) -> RoomOwnership {
        let now = clock.wallMilliseconds()
        do {
            return try await repository.claim(room: room, node: node, now: now, leaseUntil: now + leaseMilliseconds)
        } catch {
            metrics.placementFailures.increment()
            throw ProtocolError(.unavailable, "room \(room) cannot be placed now (\(error)); try again shortly")
        }
    }

    /// Places a room nobody holds: on this node while it has room, else on the least loaded node
    /// of the last view (`RoomPlacement`); a room someone holds stays theirs. One round trip.
    /// `anywhere` false (a connection another node relayed here) places it here or nowhere.
    func place(room: String, anywhere: Bool) async throws(ProtocolError) -> RoomOwnership {
        var target = nodeName
        if anywhere {
            let here = NodeLoad(
                name: nodeName, participants: metrics.participantsNow, maxParticipants: maxParticipants,
                cpu: lastCPU.withLockedValue { $0 }, cores: cores, draining: draining.withLockedValue { $0 })
            var view = lastView.withLockedValue { $0 }.map(NodeLoad.init)
            if !placement.hasRoom(here), let live = try? await liveNodes() {
                // Sending the room away: choose from the cluster as it is now (a node may have
                // joined since the last renewal), one more read only when this node is full.
                lastView.withLockedValue { $0 = live }
                view = live.map(NodeLoad.init)
            }
            guard let chosen = placement.choose(joining: here, nodes: view) else {
                metrics.placementFailures.increment()
                throw ProtocolError(.unavailable, "every node of the cluster is draining; room \(room) cannot be placed")
            }
            target = chosen
        }
        let owner = try await claim(room: room, for: target)
        if owner.node != nodeName, target != nodeName {
            metrics.roomsPlacedElsewhere.increment()
        }
        if owner.node != nodeName {
            // Until the next renewal reports it, count the join on the node that took the room, so
            // a burst of first joins spreads instead of landing on one node.
            lastView.withLockedValue { view in
                if let index = view.firstIndex(where: { $0.name == owner.node }) { view[index].participants += 1 }
            }
        }
        return owner
    }

    /// Hands a room this node holds to `node` (a drain), so the participants it sends there find it
    /// theirs. False when this node no longer holds it.
    func transfer(room: String, to node: String) async -> Bool {
        let now = clock.wallMilliseconds()
        do {
            return try await repository.transfer(room: room, from: nodeName, to: node, now: now, leaseUntil: now + leaseMilliseconds)
        } catch {
            logger.warning("room transfer failed", metadata: ["room": "\(room)", "to": "\(node)", "error": "\(error)"])
            return false
        }
    }

    /// Where a drained room with `participants` goes: the least loaded live node that is not
    /// draining. The view is read again when `refresh` (the first room of a drain); each room sent
    /// counts on its node at once, so a drain's rooms spread instead of landing on one node.
    func drainTarget(for participants: Int, refresh: Bool) async -> NodeRecord? {
        if refresh {
            guard let live = try? await liveNodes() else { return nil }
            lastView.withLockedValue { $0 = live }
        }
        return lastView.withLockedValue { view -> NodeRecord? in
            let others = view.filter { $0.name != nodeName }
            let here = NodeLoad(name: nodeName, participants: 0, maxParticipants: 0, cpu: 0, cores: cores, draining: true)
            guard let chosen = placement.choose(joining: here, nodes: others.map(NodeLoad.init)),
                  let index = view.firstIndex(where: { $0.name == chosen })
            else { return nil }
            view[index].participants += participants
            return view[index]
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
    func renew(registry: RoomRegistry) async throws {
        guard let address = announcedAddress.withLockedValue({ $0 }) else { return }
        let rooms = await registry.list()
        let now = clock.wallMilliseconds()
        let used = cpu.withLockedValue { $0.coresSinceLastCall(wallMilliseconds: now) }
        lastCPU.withLockedValue { $0 = used }
        let record = NodeRecord(
            name: nodeName, signalingURL: address.signalingURL, mediaAddresses: address.media, turnAddress: address.turn,
            participants: rooms.reduce(0) { $0 + ($1.numParticipants ?? 0) }, rooms: rooms.count,
            cpu: used, cores: cores, maxParticipants: maxParticipants,
            draining: draining.withLockedValue { $0 }, startedAt: startedAt, leaseUntil: now + leaseMilliseconds)
        try await repository.announce(record, rooms: rooms.map(\.name), now: now)
        let live = try await repository.liveNodes(now: now)
        lastView.withLockedValue { $0 = live }
        metrics.clusterNodes.set(Double(live.count))
        if let recordings, let lost = try? await recordings.markInterrupted(exceptNodes: live.map(\.name), stoppedAt: now), !lost.isEmpty {
            for recording in lost {
                logger.notice(
                    "recording interrupted: its node was lost",
                    metadata: ["recording": "\(recording.id)", "room": "\(recording.room)", "node": "\(recording.node ?? "")"])
            }
        }
    }

    /// The room's owner while its lease runs.
    func owner(of room: String) async throws -> RoomOwnership? {
        try await repository.owner(room: room, now: clock.wallMilliseconds())
    }

    /// `owner(of:)` for a join: a database that cannot be read is `unavailable`.
    func ownerOrUnavailable(of room: String) async throws(ProtocolError) -> RoomOwnership? {
        do {
            return try await owner(of: room)
        } catch {
            throw ProtocolError(.unavailable, "where room \(room) lives cannot be read now (\(error)); try again shortly")
        }
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
            participants: record.participants, rooms: record.rooms, cpu: record.cpu, cores: record.cores, maxParticipants: record.maxParticipants,
            draining: record.draining, startedAt: record.startedAt, leaseUntil: record.leaseUntil)
    }
}

extension NodeLoad {
    init(_ record: NodeRecord) {
        self.init(
            name: record.name, participants: record.participants, maxParticipants: record.maxParticipants, cpu: record.cpu,
            cores: record.cores, draining: record.draining)
    }
}
