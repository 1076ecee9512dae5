import Foundation
import GRDB

/// Parley's SQLite database: WAL journal, migrations applied on open. Writes go through GRDB's
/// serial writer queue, off the media workers; reads run concurrently.
public final class ParleyDatabase: Sendable {
    /// How hard SQLite works to make a commit survive a crash (PRAGMA synchronous).
    public enum Durability: String, Sendable, CaseIterable {
        /// Each commit is fsynced: an acknowledged message survives power loss.
        case full
        /// Commits survive a process crash, not a power loss; faster.
        case normal
    }

    public let pool: DatabasePool
    public let path: String

    public init(path: String, durability: Durability = .full) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        let pragma = durability == .full ? "FULL" : "NORMAL"
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = \(pragma)")
        }
        self.pool = try DatabasePool(path: path, configuration: configuration)
        self.path = path
        try Self.migrator.migrate(pool)
    }

    /// Closes every connection; the WAL is checkpointed so the file stands alone.
    public func closeNow() throws {
        try pool.writeWithoutTransaction { db in
            try db.checkpoint(.truncate)
        }
        try pool.close()
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-chat") { db in
            try db.execute(sql: """
                CREATE TABLE chat_message (
                    id TEXT PRIMARY KEY NOT NULL,
                    room TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    from_sid TEXT NOT NULL,
                    from_identity TEXT NOT NULL,
                    from_name TEXT NOT NULL,
                    text TEXT NOT NULL,
                    recipients TEXT,
                    ts INTEGER NOT NULL,
                    client_msg_id TEXT,
                    system INTEGER NOT NULL DEFAULT 0,
                    UNIQUE (room, seq)
                );
                CREATE UNIQUE INDEX chat_message_idempotency
                    ON chat_message (room, from_identity, client_msg_id)
                    WHERE client_msg_id IS NOT NULL;
                """)
        }
        migrator.registerMigration("v2-recordings") { db in
            try db.execute(sql: """
                CREATE TABLE recording (
                    id TEXT PRIMARY KEY NOT NULL,
                    room TEXT NOT NULL,
                    mode TEXT NOT NULL,
                    state TEXT NOT NULL,
                    started_at INTEGER NOT NULL,
                    stopped_at INTEGER,
                    files TEXT NOT NULL DEFAULT '[]',
                    bytes INTEGER NOT NULL DEFAULT 0,
                    duration_ms INTEGER NOT NULL DEFAULT 0,
                    error TEXT
                );
                CREATE INDEX recording_room ON recording (room, started_at);
                """)
        }
        // The node that writes a recording: a lost node's recordings are marked interrupted.
        migrator.registerMigration("v3-recording-node") { db in
            try db.execute(sql: "ALTER TABLE recording ADD COLUMN node TEXT NOT NULL DEFAULT ''")
        }
        // Webhook events committed before they are sent (issue 17).
        migrator.registerMigration("v4-webhook-outbox") { db in
            try db.execute(sql: """
                CREATE TABLE webhook_outbox (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    url TEXT NOT NULL,
                    room TEXT NOT NULL,
                    event_id TEXT NOT NULL,
                    body TEXT NOT NULL,
                    node TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at INTEGER NOT NULL DEFAULT 0,
                    last_error TEXT
                );
                CREATE INDEX webhook_outbox_url ON webhook_outbox (node, url, id);
                """)
        }
        // Why a recording stopped by itself (a duration, quota or disk limit).
        migrator.registerMigration("v5-recording-stop-reason") { db in
            try db.execute(sql: "ALTER TABLE recording ADD COLUMN stop_reason TEXT")
        }
        return migrator
    }
}
