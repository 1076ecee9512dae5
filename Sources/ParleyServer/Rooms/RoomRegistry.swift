import ParleyProtocol
import SFU
import Store
import WebRTC

/// Where a join goes: a room open here, or the node that holds it.
public enum JoinTarget: Sendable {
    case room(Room)
    case elsewhere(node: String, signalingURL: String)
}

/// All open rooms by name. Rooms are created on first join (when `room.autoCreate`) or by the
/// admin API, pinned to the least-loaded media worker, and dropped from here when they close.
public actor RoomRegistry {
    private var rooms: [String: Room] = [:]
    private let services: RoomServices
    private let workers: MediaWorkers
    private var shuttingDown = false
    /// In a cluster, a room opens here only once this node holds its lease.
    private let membership: ClusterMembership?

    public init(services: RoomServices, workers: MediaWorkers, membership: ClusterMembership? = nil) {
        self.services = services
        self.workers = workers
        self.membership = membership
    }

    public var defaultOptions: RoomOptions {
        RoomOptions(
            maxParticipants: services.config.roomMaxParticipants, emptyTimeout: services.config.roomEmptyTimeout,
            autoRecord: services.config.roomAutoRecord.isEmpty ? nil : services.config.roomAutoRecord)
    }

    public func room(named name: String) -> Room? { rooms[name] }

    /// Every worker's media figures (its port's and its SFU's), each read on its own loop.
    public nonisolated func mediaSnapshot() async -> MediaFigures {
        var total = MediaFigures()
        for (port, sfu) in zip(workers.ports, workers.sfuStatistics) {
            if let figures = try? await port.loop.submit({ (port.snapshot(), sfu.counts, sfu.downlink()) }).get() {
                total.media.add(figures.0)
                total.sfu.add(figures.1)
                total.downlink.add(figures.2)
            }
        }
        return total
    }

    /// The room a participant joins here: the open one, or a new one when auto-create is on; or,
    /// in a cluster, the node that holds it (or that placement picked), to relay the client to.
    /// `anywhere` false (a connection another node relayed here) never sends it elsewhere: a
    /// room another node holds is then `unavailable`. At most one database round trip.
    public func roomForJoin(_ name: String, anywhere: Bool) async throws(ProtocolError) -> JoinTarget {
        if let room = rooms[name], await !room.isClosed { return .room(room) }
        guard !shuttingDown else { throw ProtocolError(.notFound, "the server is shutting down") }
        try Self.validate(roomName: name)
        let autoCreate = services.config.roomAutoCreate
        if let membership {
            let owner: RoomOwnership
            if autoCreate {
                owner = try await membership.place(room: name, anywhere: anywhere)
            } else {
                // Only the admin API creates rooms: find the one it made, wherever it is.
                guard let held = try await membership.ownerOrUnavailable(of: name), held.node != membership.nodeName else {
                    throw ProtocolError(.notFound, "room \(name) does not exist")
                }
                owner = held
            }
            if owner.node != membership.nodeName {
                guard anywhere else {
                    throw ProtocolError(.unavailable, "room \(name) lives on node \(owner.node); connect there")
                }
                guard let url = await membership.signalingURL(of: owner.node) else {
                    throw ProtocolError(.unavailable, "room \(name) lives on node \(owner.node), which this node does not know yet; try again shortly")
                }
                return .elsewhere(node: owner.node, signalingURL: url)
            }
        } else if !autoCreate {
            throw ProtocolError(.notFound, "room \(name) does not exist")
        }
        // Another join may have opened it while the claim was in flight.
        if let room = rooms[name], await !room.isClosed { return .room(room) }
        return .room(try await make(name, options: defaultOptions))
    }

    /// Creates a room through the admin API; `conflict` when it is already open. In a cluster it
    /// opens here (the admin API's node), and `unavailable` names the node that holds it.
    public func create(_ name: String, options: RoomOptions) async throws(ProtocolError) -> Room {
        if let room = rooms[name], await !room.isClosed {
            throw ProtocolError(.conflict, "room \(name) already exists")
        }
        guard !shuttingDown else { throw ProtocolError(.notFound, "the server is shutting down") }
        try Self.validate(roomName: name)
        if let membership {
            let owner = try await membership.place(room: name, anywhere: false)
            if owner.node != membership.nodeName {
                let url = await membership.signalingURL(of: owner.node) ?? "an unknown address"
                throw ProtocolError(.unavailable, "room \(name) lives on node \(owner.node) at \(url); connect there")
            }
        }
        if let room = rooms[name], await !room.isClosed {
            throw ProtocolError(.conflict, "room \(name) already exists")
        }
        return try await make(name, options: options)
    }

    /// Sends every room's participants to other nodes (the end of a drain): each room's lease
    /// goes to the least loaded node that is not draining, its participants get `reconnect` with
    /// that node's URL, and the room closes here. Returns the participants moved.
    func moveAll(reason: String) async -> Int {
        guard let membership else { return 0 }
        var moved = 0
        for (index, room) in rooms.values.enumerated() {
            let target = await membership.drainTarget(for: await room.info().numParticipants ?? 0, refresh: index == 0)
            var url: String?
            if let target, await membership.transfer(room: room.name, to: target.name) { url = target.signalingURL }
            moved += await room.move(reason: reason, url: url)
        }
        return moved
    }

    private func make(_ name: String, options: RoomOptions) async throws(ProtocolError) -> Room {
        guard !shuttingDown else { throw ProtocolError(.notFound, "the server is shutting down") }
        try Self.validate(roomName: name)
        let (index, loop) = workers.assign()
        let room = Room(
            name: name, options: options, worker: index, loop: loop, port: workers.ports[index],
            sfuStatistics: workers.sfuStatistics[index], services: services,
            onClose: { [weak self] room in await self?.closed(room) })
        rooms[name] = room
        // Until someone joins, the room is empty and its countdown runs.
        await room.start()
        return room
    }

    private func closed(_ room: Room) {
        workers.release(room.worker)
        guard rooms[room.name] === room else { return }
        rooms[room.name] = nil
        // Not awaited: with the database down, closing rooms (a shutdown) must not wait on it; a
        // release that fails leaves a lease that lapses, and a reopened room's renewal takes its
        // row again.
        if let membership {
            let name = room.name
            Task { await membership.release(room: name) }
        }
    }

    public func list() async -> [RoomInfo] {
        var infos: [RoomInfo] = []
        for room in rooms.values.sorted(by: { $0.name < $1.name }) {
            infos.append(await room.info())
        }
        return infos
    }

    public var count: Int { rooms.count }

    /// Closes every room (graceful shutdown): participants get `room.closed`.
    public func closeAll(reason: String) async {
        shuttingDown = true
        for room in Array(rooms.values) {
            await room.close(reason: reason)
        }
    }

    static func validate(roomName name: String) throws(ProtocolError) {
        guard !name.isEmpty, name.utf8.count <= 128 else {
            throw ProtocolError(.badRequest, "room name must have 1 to 128 bytes")
        }
        guard !name.contains(where: { $0.isNewline || $0 == "/" || $0 == "\\" || $0.asciiValue.map { $0 < 0x20 } == true }) else {
            throw ProtocolError(.badRequest, "room name may not contain slashes or control characters")
        }
    }
}
