import GRDB

/// The webhook outbox in SQLite.
public struct SQLiteWebhookOutbox: WebhookOutbox {
    let database: ParleyDatabase

    public init(database: ParleyDatabase) { self.database = database }

    public func enqueue(_ events: [OutboxEvent], urls: [String], node: String) async throws {
        guard !events.isEmpty, !urls.isEmpty else { return }
        try await database.pool.write { db in
            for event in events {
                for url in urls {
                    try db.execute(
                        sql: """
                            INSERT INTO webhook_outbox (url, room, event_id, body, node, created_at, attempts, next_attempt_at)
                            VALUES (?, ?, ?, ?, ?, ?, 0, 0)
                            """,
                        arguments: [url, event.room, event.eventID, event.body, node, event.createdAt])
                }
            }
        }
    }

    public func pending(url: String, node: String, limit: Int) async throws -> [WebhookDelivery] {
        try await database.pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM webhook_outbox WHERE url = ? AND node = ? ORDER BY id LIMIT ?", arguments: [url, node, limit]
            ).map(Self.decode)
        }
    }

    public func markDelivered(id: Int64) async throws {
        try await database.pool.write { db in try db.execute(sql: "DELETE FROM webhook_outbox WHERE id = ?", arguments: [id]) }
    }

    public func markFailed(id: Int64, nextAttemptAt: Int64, error: String) async throws {
        try await database.pool.write { db in
            try db.execute(
                sql: "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?",
                arguments: [nextAttemptAt, error, id])
        }
    }

    public func pendingCount(node: String) async throws -> Int {
        try await database.pool.read { db in
            try Int.fetchOne(db, sql: "SELECT count(*) FROM webhook_outbox WHERE node = ?", arguments: [node]) ?? 0
        }
    }

    static func decode(_ row: Row) -> WebhookDelivery {
        WebhookDelivery(
            id: row["id"], url: row["url"], room: row["room"], eventID: row["event_id"], body: row["body"], node: row["node"],
            createdAt: row["created_at"], attempts: row["attempts"], nextAttemptAt: row["next_attempt_at"], lastError: row["last_error"])
    }
}
