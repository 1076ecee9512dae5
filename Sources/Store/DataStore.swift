/// Where Parley keeps what must outlive its process: chat and recordings' metadata. SQLite
/// (`ParleyDatabase`) is the embedded default; PostgreSQL (`PostgresDatabase`) lets several
/// nodes share one store.
public protocol DataStore: Sendable {
    var chat: any ChatRepository { get }
    var recordings: any RecordingRepository { get }
    var webhooks: any WebhookOutbox { get }
    /// Nodes and room ownership, for a cluster: PostgreSQL has it, SQLite (one node) does not.
    var cluster: (any ClusterRepository)? { get }
    /// `sqlite` or `postgres`, for logs and `/metrics`.
    var kind: String { get }
    /// Where the data lives, without secrets: a file path, or host, port and database.
    var location: String { get }
    /// Throws unless a trivial read succeeds now (readiness checks).
    func checkReadable() async throws
    /// Closes every connection. Called once, after the last writer is done.
    func close() async throws
}

extension ParleyDatabase: DataStore {
    public var chat: any ChatRepository { SQLiteChatRepository(database: self) }
    public var recordings: any RecordingRepository { SQLiteRecordingRepository(database: self) }
    public var webhooks: any WebhookOutbox { SQLiteWebhookOutbox(database: self) }
    public var cluster: (any ClusterRepository)? { nil }
    public var kind: String { "sqlite" }
    public var location: String { path }

    public func checkReadable() async throws {
        _ = try await pool.read { db in try Int.fetchOne(db, sql: "SELECT 1") }
    }

    public func close() async throws {
        try closeNow()
    }
}
