import ParleyProtocol
import SFU
import WebRTC

/// All open rooms by name. Rooms are created on first join (when `room.autoCreate`) or by the
/// admin API, pinned to the least-loaded media worker, and dropped from here when they close.
/// Where a room lives, for a join.
public enum RoomLocation: Sendable, Equatable {
    case here
    case elsewhere(node: String, signalingURL: String)
}

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

    /// The room a participant joins: the open one, or a new one when auto-create is on.
    public func roomForJoin(_ name: String) async throws(ProtocolError) -> Room {
        if let room = rooms[name], await !room.isClosed { return room }
        guard services.config.roomAutoCreate else { throw ProtocolError(.notFound, "room \(name) does not exist") }
        try await place(name)
        // Another join may have opened it while the claim was in flight.
        if let room = rooms[name], await !room.isClosed { return room }
        return try await make(name, options: defaultOptions)
    }

    /// Creates a room through the admin API; `conflict` when it is already open.
    public func create(_ name: String, options: RoomOptions) async throws(ProtocolError) -> Room {
        if let room = rooms[name], await !room.isClosed {
            throw ProtocolError(.conflict, "room \(name) already exists")
        }
        try await place(name)
        if let room = rooms[name], await !room.isClosed {
            throw ProtocolError(.conflict, "room \(name) already exists")
        }
        return try await make(name, options: options)
    }

    /// Where a join of `name` belongs: here (the room is open here, or this node now holds its
    /// lease, or there is no cluster), or the node that holds it, to relay the client to.
    public func locate(_ name: String) async throws(ProtocolError) -> RoomLocation {
        if let room = rooms[name], await !room.isClosed { return .here }
        guard let membership else { return .here }
        guard !shuttingDown else { throw ProtocolError(.notFound, "the server is shutting down") }
        try Self.validate(roomName: name)
        let owner = try await membership.claim(room: name)
        if owner.node == membership.nodeName { return .here }
        guard let url = await membership.signalingURL(of: owner.node) else {
            throw ProtocolError(.unavailable, "room \(name) lives on node \(owner.node), which this node does not know yet; try again shortly")
        }
        return .elsewhere(node: owner.node, signalingURL: url)
    }

    /// In a cluster, takes the room's lease for this node. A room held by another node is
    /// `unavailable` here (joins reach it through `locate` and the relay; the admin API's create
    /// names the node).
    private func place(_ name: String) async throws(ProtocolError) {
        guard !shuttingDown else { throw ProtocolError(.notFound, "the server is shutting down") }
        try Self.validate(roomName: name)
        if case .elsewhere(let node, let url) = try await locate(name) {
            throw ProtocolError(.unavailable, "room \(name) lives on node \(node) at \(url); connect there")
        }
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
