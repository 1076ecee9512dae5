import ParleyProtocol
import SFU
import WebRTC

/// All open rooms by name. Rooms are created on first join (when `room.autoCreate`) or by the
/// admin API, pinned to the least-loaded media worker, and dropped from here when they close.
public actor RoomRegistry {
    private var rooms: [String: Room] = [:]
    private let services: RoomServices
    private let workers: MediaWorkers
    private var shuttingDown = false

    public init(services: RoomServices, workers: MediaWorkers) {
        self.services = services
        self.workers = workers
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
        return try await make(name, options: defaultOptions)
    }

    /// Creates a room through the admin API; `conflict` when it is already open.
    public func create(_ name: String, options: RoomOptions) async throws(ProtocolError) -> Room {
        if let room = rooms[name], await !room.isClosed {
            throw ProtocolError(.conflict, "room \(name) already exists")
        }
        return try await make(name, options: options)
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
        if rooms[room.name] === room { rooms[room.name] = nil }
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
