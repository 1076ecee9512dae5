import Foundation
import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// Parley's store in PostgreSQL, shared by the nodes of a cluster. A bounded pool of connections
/// (PostgresNIO's `PostgresClient`) that reconnects by itself; every statement runs under a
/// timeout; the schema is migrated at start, versioned, under an advisory lock so nodes starting
/// at once migrate one after another.
public final class PostgresDatabase: DataStore {
    public let url: PostgresURL
    public let client: PostgresClient
    let logger: Logger
    /// The longest any one operation waits, a free connection included: while PostgreSQL is
    /// unreachable the pool keeps reconnecting, and a caller gets an error instead of waiting.
    let operationTimeout: Duration
    private let runner: Task<Void, Never>

    public var chat: any ChatRepository { PostgresChatRepository(database: self) }
    public var recordings: any RecordingRepository { PostgresRecordingRepository(database: self) }
    public var webhooks: any WebhookOutbox { PostgresWebhookOutbox(database: self) }
    public var cluster: (any ClusterRepository)? { PostgresClusterRepository(database: self) }
    public var kind: String { "postgres" }
    public var location: String { url.description }

    /// Connects, then migrates. Throws when the database cannot be reached within `connectTimeout`.
    public init(
        url: PostgresURL, maxConnections: Int = 10, statementTimeout: Duration = .seconds(5),
        connectTimeout: Duration = .seconds(10), logger: Logger = Logger(label: "parley.store")
    ) async throws {
        self.url = url
        self.logger = logger
        self.operationTimeout = statementTimeout
        var configuration: PostgresClient.Configuration
        let tls: PostgresClient.Configuration.TLS =
            switch url.tls {
            case .disable: .disable
            case .prefer: .prefer(.makeClientConfiguration())
            case .require: .require(.makeClientConfiguration())
            }
        if let socket = url.unixSocketPath {
            configuration = .init(unixSocketPath: socket, username: url.username, password: url.password, database: url.database)
        } else {
            configuration = .init(
                host: url.host, port: url.port, username: url.username, password: url.password, database: url.database, tls: tls)
        }
        configuration.options.maximumConnections = max(1, maxConnections)
        configuration.options.connectTimeout = connectTimeout
        // Sent in the startup packet: every statement of every connection is bounded, so a stuck
        // database refuses a chat message instead of hanging its sender.
        let milliseconds = statementTimeout.components.seconds * 1000 + statementTimeout.components.attoseconds / 1_000_000_000_000_000
        configuration.options.additionalStartupParameters = [
            ("statement_timeout", "\(milliseconds)"), ("application_name", "parley"),
        ]
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.client = client
        self.runner = Task { await client.run() }
        do {
            try await withDeadline(connectTimeout, what: "connecting to \(url)") {
                try await Self.migrate(client: client, logger: logger)
            }
        } catch {
            runner.cancel()
            throw error
        }
    }

    public func checkReadable() async throws {
        try await execute("SELECT 1")
    }

    /// Stops the pool. A connection stuck on a dead server does not hold the shutdown up: after
    /// a few seconds the process goes on without it.
    public func close() async throws {
        runner.cancel()
        let runner = self.runner
        _ = await firstOf(.seconds(3), Task { await runner.value })
    }

    /// The schema versions this database has applied, in order.
    public func appliedMigrations() async throws -> [Int] {
        try await rows("SELECT version FROM parley_schema_migrations ORDER BY version").map { try $0["version"].decode(Int.self) }
    }

    /// Every schema version this build knows.
    public static var migrationVersions: [Int] { migrations.map(\.version) }

    /// Runs a statement and drains its rows.
    func execute(_ query: PostgresQuery) async throws {
        do {
            let (client, logger) = (client, logger)
            try await withDeadline(operationTimeout, what: "PostgreSQL") {
                for try await _ in try await client.query(query, logger: logger) {}
            }
        } catch {
            throw Self.readable(error)
        }
    }

    /// Runs a query and collects its rows.
    func rows(_ query: PostgresQuery) async throws -> [PostgresRandomAccessRow] {
        do {
            let (client, logger) = (client, logger)
            return try await withDeadline(operationTimeout, what: "PostgreSQL") {
                var rows: [PostgresRandomAccessRow] = []
                for try await row in try await client.query(query, logger: logger) {
                    rows.append(row.makeRandomAccess())
                }
                return rows
            }
        } catch {
            throw Self.readable(error)
        }
    }

    /// Runs `body` in one transaction (committed when it returns, rolled back when it throws).
    /// A transaction cut by the deadline may still have committed: callers make it idempotent
    /// (chat's clientMsgId).
    func transaction<Result: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        do {
            let (client, logger) = (client, logger)
            return try await withDeadline(operationTimeout, what: "PostgreSQL") {
                try await client.withTransaction(logger: logger) { connection in try await body(connection) }
            }
        } catch {
            throw Self.readable(error)
        }
    }

    /// PSQLError's description hides the server's message (it may hold data); an operator needs it.
    static func readable(_ error: any Error) -> any Error {
        if let store = error as? StoreError { return store }
        if let transaction = error as? PostgresTransactionError {
            return readable(transaction.closureError ?? transaction.rollbackError ?? transaction.beginError ?? transaction.commitError ?? error)
        }
        if let psql = error as? PSQLError {
            if let message = psql.serverInfo?[.message] {
                let code = psql.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? ""
                return StoreError("PostgreSQL: \(message)\(code)")
            }
            return StoreError("PostgreSQL unreachable: \(psql.code)")
        }
        return error
    }

    /// Each migration runs once, in order, in one transaction with the others that are due; the
    /// advisory lock makes a node that starts beside another wait for it, then find nothing to do.
    static func migrate(client: PostgresClient, logger: Logger) async throws {
        do {
            try await client.withTransaction(logger: logger) { connection in
                try await drain(connection.query("SELECT pg_advisory_xact_lock(\(migrationLockKey))", logger: logger))
                try await drain(connection.query("""
                    CREATE TABLE IF NOT EXISTS parley_schema_migrations (
                        version INTEGER PRIMARY KEY,
                        name TEXT NOT NULL,
                        applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                    )
                    """, logger: logger))
                var applied = Set<Int>()
                for try await version in try await connection.query("SELECT version FROM parley_schema_migrations", logger: logger)
                    .decode(Int.self)
                {
                    applied.insert(version)
                }
                for migration in migrations where !applied.contains(migration.version) {
                    // One statement per query: the extended protocol takes no more.
                    for statement in migration.statements {
                        try await drain(connection.query(PostgresQuery(unsafeSQL: statement), logger: logger))
                    }
                    try await drain(connection.query(
                        "INSERT INTO parley_schema_migrations (version, name) VALUES (\(migration.version), \(migration.name))",
                        logger: logger))
                    logger.info("database migrated", metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
                }
            }
        } catch {
            throw readable(error)
        }
    }

    static func drain(_ rows: PostgresRowSequence) async throws {
        for try await _ in rows {}
    }

    /// The advisory lock key the migrations hold ("PRLY" as an integer).
    static let migrationLockKey: Int64 = 0x5052_4C59

    static let migrations: [(version: Int, name: String, statements: [String])] = [
        (1, "chat", ["""
            CREATE TABLE chat_message (
                id TEXT PRIMARY KEY,
                room TEXT NOT NULL,
                seq BIGINT NOT NULL,
                from_sid TEXT NOT NULL,
                from_identity TEXT NOT NULL,
                from_name TEXT NOT NULL,
                text TEXT NOT NULL,
                recipients TEXT[],
                ts BIGINT NOT NULL,
                client_msg_id TEXT,
                system BOOLEAN NOT NULL DEFAULT false,
                UNIQUE (room, seq)
            )
            """, """
            CREATE UNIQUE INDEX chat_message_idempotency
                ON chat_message (room, from_identity, client_msg_id)
                WHERE client_msg_id IS NOT NULL
            """]),
        (2, "recordings", ["""
            CREATE TABLE recording (
                id TEXT PRIMARY KEY,
                room TEXT NOT NULL,
                mode TEXT NOT NULL,
                state TEXT NOT NULL,
                started_at BIGINT NOT NULL,
                stopped_at BIGINT,
                files TEXT NOT NULL DEFAULT '[]',
                bytes BIGINT NOT NULL DEFAULT 0,
                duration_ms BIGINT NOT NULL DEFAULT 0,
                error TEXT
            )
            """, "CREATE INDEX recording_room ON recording (room, started_at)"]),
        (3, "cluster", ["""
            CREATE TABLE parley_node (
                name TEXT PRIMARY KEY,
                signaling_url TEXT NOT NULL,
                media_addresses TEXT NOT NULL DEFAULT '[]',
                turn_address TEXT NOT NULL DEFAULT '',
                participants INTEGER NOT NULL DEFAULT 0,
                rooms INTEGER NOT NULL DEFAULT 0,
                cpu DOUBLE PRECISION NOT NULL DEFAULT 0,
                max_participants INTEGER NOT NULL DEFAULT 0,
                draining BOOLEAN NOT NULL DEFAULT false,
                started_at BIGINT NOT NULL,
                lease_until BIGINT NOT NULL
            )
            """, """
            CREATE TABLE parley_room_owner (
                room TEXT PRIMARY KEY,
                node TEXT NOT NULL,
                lease_until BIGINT NOT NULL,
                placed_at BIGINT NOT NULL
            )
            """, "CREATE INDEX parley_room_owner_node ON parley_room_owner (node)"]),
        // Placement reads CPU against the node's cores.
        (4, "node cores", ["ALTER TABLE parley_node ADD COLUMN cores INTEGER NOT NULL DEFAULT 1"]),
        // The node that writes a recording: a lost node's recordings are marked interrupted.
        (5, "recording node", ["ALTER TABLE recording ADD COLUMN node TEXT NOT NULL DEFAULT ''"]),
        (6, "webhook outbox", ["""
            CREATE TABLE webhook_outbox (
                id BIGSERIAL PRIMARY KEY,
                url TEXT NOT NULL,
                room TEXT NOT NULL,
                event_id TEXT NOT NULL,
                body TEXT NOT NULL,
                node TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at BIGINT NOT NULL DEFAULT 0,
                last_error TEXT
            )
            """, "CREATE INDEX webhook_outbox_url ON webhook_outbox (node, url, id)"]),
        // Why a recording stopped by itself (a duration, quota or disk limit).
        (7, "recording stop reason", ["ALTER TABLE recording ADD COLUMN stop_reason TEXT"]),
    ]
}

/// Fails with `what` timed out when `body` takes longer than `timeout` (the pool retries a refused
/// connection forever; a node starting against a dead database should say so instead). The
/// body is cancelled then, but not waited for: a query already sent cannot be cancelled, and the
/// caller must not wait on it.
func withDeadline<Result: Sendable>(
    _ timeout: Duration, what: String, _ body: @escaping @Sendable () async throws -> Result
) async throws -> Result {
    let work = Task { try await body() }
    let outcome = await firstOf(timeout, work)
    switch outcome {
    case .some(.success(let result)): return result
    case .some(.failure(let error)): throw error
    case .none:
        work.cancel()
        throw StoreError("\(what): no answer within \(timeout)")
    }
}

/// The task's result, or nil when `timeout` passes first (the task keeps running).
func firstOf<Success: Sendable>(
    _ timeout: Duration, _ task: Task<Success, any Error>
) async -> Swift.Result<Success, any Error>? {
    let once = ResumeOnce<Swift.Result<Success, any Error>?>()
    return await withCheckedContinuation { continuation in
        once.set(continuation)
        Task { once.resume(returning: await task.result) }
        Task {
            try? await Task.sleep(for: timeout)
            once.resume(returning: nil)
        }
    }
}

/// A continuation resumed by whichever caller comes first.
final class ResumeOnce<Value: Sendable>: Sendable {
    private let continuation = Mutex<CheckedContinuation<Value, Never>?>(nil)

    func set(_ continuation: CheckedContinuation<Value, Never>) {
        self.continuation.withLock { $0 = continuation }
    }

    func resume(returning value: Value) {
        continuation.withLock { waiting in
            waiting?.resume(returning: value)
            waiting = nil
        }
    }
}
