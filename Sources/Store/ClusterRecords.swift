/// A node of a cluster as the store keeps it: where to reach it, how loaded it is, and until when
/// it is alive. Times are milliseconds since 1970 on the writing node's clock (nodes keep NTP).
public struct NodeRecord: Sendable, Equatable {
    public var name: String
    /// Where clients and other nodes reach its HTTP API and signaling (`http://host:port`).
    public var signalingURL: String
    /// The addresses its media ports bind (`ip:port`).
    public var mediaAddresses: [String]
    /// Its STUN/TURN address (`host:port`), empty without TURN.
    public var turnAddress: String
    public var participants: Int
    public var rooms: Int
    /// Its process's CPU use over the last renewal, in cores.
    public var cpu: Double
    /// The cores its machine has, to read `cpu` against.
    public var cores: Int
    /// `node.maxParticipants`: placement sends new rooms elsewhere past it (0: no cap).
    public var maxParticipants: Int
    /// A draining node takes no new rooms.
    public var draining: Bool
    public var startedAt: Int64
    /// The node is alive until then; it renews every couple of seconds.
    public var leaseUntil: Int64

    public init(
        name: String, signalingURL: String, mediaAddresses: [String], turnAddress: String, participants: Int, rooms: Int,
        cpu: Double, cores: Int, maxParticipants: Int, draining: Bool, startedAt: Int64, leaseUntil: Int64
    ) {
        self.name = name
        self.signalingURL = signalingURL
        self.mediaAddresses = mediaAddresses
        self.turnAddress = turnAddress
        self.participants = participants
        self.rooms = rooms
        self.cpu = cpu
        self.cores = cores
        self.maxParticipants = maxParticipants
        self.draining = draining
        self.startedAt = startedAt
        self.leaseUntil = leaseUntil
    }
}

/// Which node holds a room, until when.
public struct RoomOwnership: Sendable, Equatable {
    public var room: String
    public var node: String
    public var leaseUntil: Int64
    public var placedAt: Int64

    public init(room: String, node: String, leaseUntil: Int64, placedAt: Int64) {
        self.room = room
        self.node = node
        self.leaseUntil = leaseUntil
        self.placedAt = placedAt
    }
}

/// The cluster's shared state: nodes with leases, and each room's one owner, also a lease.
/// PostgreSQL implements it (`PostgresClusterRepository`); a single node on SQLite has none.
public protocol ClusterRepository: Sendable {
    /// Registers the node or renews it: its record, its lease, and the leases of the rooms it
    /// holds; a room of its own whose row is gone is taken again, rooms another node holds are
    /// not touched.
    func announce(_ node: NodeRecord, rooms: [String], now: Int64) async throws
    /// Nodes whose lease runs past `now`, by name.
    func liveNodes(now: Int64) async throws -> [NodeRecord]
    /// A node leaving on purpose: its record and its rooms go at once.
    func withdraw(node: String) async throws
    /// Takes `room` for `node` unless a live lease of another node holds it; atomic, so
    /// concurrent first joins through different nodes agree. Returns the owner after the call.
    func claim(room: String, node: String, now: Int64, leaseUntil: Int64) async throws -> RoomOwnership
    /// Hands a room `from` holds to `to` (a draining node moving it), with a fresh lease; false
    /// when `from` no longer holds it.
    func transfer(room: String, from: String, to: String, now: Int64, leaseUntil: Int64) async throws -> Bool
    /// The room's owner while its lease runs, nil otherwise.
    func owner(room: String, now: Int64) async throws -> RoomOwnership?
    /// The node gives a room up (it closed), unless another node holds it by now.
    func release(room: String, node: String) async throws
    /// Every room with a live lease.
    func ownedRooms(now: Int64) async throws -> [RoomOwnership]
}
