/// One file of a recording, as the store keeps it.
public struct RecordingFileRecord: Codable, Sendable, Equatable {
    public var name: String
    public var track: String?
    public var participant: String?
    public var kind: String
    public var format: String
    public var bytes: Int64
    public var durationMs: Int64
    public var offsetMs: Int64

    public init(
        name: String, track: String?, participant: String?, kind: String, format: String, bytes: Int64, durationMs: Int64, offsetMs: Int64
    ) {
        self.name = name
        self.track = track
        self.participant = participant
        self.kind = kind
        self.format = format
        self.bytes = bytes
        self.durationMs = durationMs
        self.offsetMs = offsetMs
    }
}

/// A recording's row: what the REST API lists and what survives a restart.
public struct RecordingRecord: Sendable, Equatable {
    public var id: String
    public var room: String
    /// `starting`, `active`, `stopped`, `failed`, or `interrupted` (its node stopped or was lost
    /// before it finished; the files hold what was flushed).
    public var state: String
    /// `tracks`, `mix` or `both`.
    public var mode: String
    public var startedAt: Int64
    public var stoppedAt: Int64?
    public var files: [RecordingFileRecord]
    public var bytes: Int64
    public var durationMs: Int64
    public var error: String?
    /// The node that writes it: its files are on that node's disk.
    public var node: String
    /// Why it stopped without being asked (a limit), else nil.
    public var stopReason: String?

    public init(
        id: String, room: String, state: String, mode: String, startedAt: Int64, stoppedAt: Int64?, files: [RecordingFileRecord],
        bytes: Int64, durationMs: Int64, error: String?, node: String = "", stopReason: String? = nil
    ) {
        self.node = node
        self.stopReason = stopReason
        self.id = id
        self.room = room
        self.state = state
        self.mode = mode
        self.startedAt = startedAt
        self.stoppedAt = stoppedAt
        self.files = files
        self.bytes = bytes
        self.durationMs = durationMs
        self.error = error
    }
}

/// Recordings, one record each. SQLite implements it (`SQLiteRecordingRepository`).
public protocol RecordingRepository: Sendable {
    /// Inserts the recording or updates its state, end, files, size and error.
    func save(_ recording: RecordingRecord) async throws
    func get(_ id: String) async throws -> RecordingRecord?
    /// A room's recordings (all rooms' when nil, the newest 500), newest first.
    func list(room: String?) async throws -> [RecordingRecord]
    /// At a node's start: the recordings it left `starting` or `active` (a crash) become
    /// `interrupted`, and are returned. Rows without a node (older ones) count as its own.
    func markInterrupted(node: String, stoppedAt: Int64) async throws -> [RecordingRecord]
    /// In a cluster: the running recordings of nodes not in `liveNodes` (lost) become
    /// `interrupted`, and are returned.
    func markInterrupted(exceptNodes liveNodes: [String], stoppedAt: Int64) async throws -> [RecordingRecord]
}
