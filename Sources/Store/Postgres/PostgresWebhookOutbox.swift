import PostgresNIO

/// The webhook outbox in PostgreSQL.
public struct PostgresWebhookOutbox: WebhookOutbox {
    let database: PostgresDatabase

    public init(database: PostgresDatabase) { self.database = database }

    public func enqueue(_ events: [OutboxEvent], urls: [String], node: String) async throws {
        guard !events.isEmpty, !urls.isEmpty else { return }
        // One statement: the events' order is kept by the order of the unnested arrays.
        var rooms: [String] = [], ids: [String] = [], bodies: [String] = [], times: [Int64] = [], targets: [String] = []
        for event in events {
            for url in urls {
                rooms.append(event.room)
                ids.append(event.eventID)
                bodies.append(event.body)
                times.append(event.createdAt)
                targets.append(url)
            }
        }
        try await database.execute(
            """
            INSERT INTO webhook_outbox (url, room, event_id, body, node, created_at, attempts, next_attempt_at)
            SELECT url, room, event_id, body, \(node), created_at, 0, 0
            FROM unnest(\(targets)::text[], \(rooms)::text[], \(ids)::text[], \(bodies)::text[], \(times)::bigint[])
                WITH ORDINALITY AS e(url, room, event_id, body, created_at, position)
            ORDER BY position
            """)
    }

    public func pending(url: String, node: String, limit: Int) async throws -> [WebhookDelivery] {
        try await database.rows(
            "SELECT * FROM webhook_outbox WHERE url = \(url) AND node = \(node) ORDER BY id LIMIT \(limit)"
        ).map(Self.decode)
    }

    public func markDelivered(id: Int64) async throws {
        try await database.execute("DELETE FROM webhook_outbox WHERE id = \(id)")
    }

    public func markFailed(id: Int64, nextAttemptAt: Int64, error: String) async throws {
        try await database.execute(
            "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = \(nextAttemptAt), last_error = \(error) WHERE id = \(id)")
    }

    public func pendingCount(node: String) async throws -> Int {
        try await database.rows("SELECT count(*) AS n FROM webhook_outbox WHERE node = \(node)").first?["n"].decode(Int.self) ?? 0
    }

    static func decode(_ row: PostgresRandomAccessRow) throws -> WebhookDelivery {
        WebhookDelivery(
            id: try row["id"].decode(Int64.self), url: try row["url"].decode(String.self), room: try row["room"].decode(String.self),
            eventID: try row["event_id"].decode(String.self), body: try row["body"].decode(String.self),
            node: try row["node"].decode(String.self), createdAt: try row["created_at"].decode(Int64.self),
            attempts: try row["attempts"].decode(Int.self), nextAttemptAt: try row["next_attempt_at"].decode(Int64.self),
            lastError: try row["last_error"].decode(String?.self))
    }
}
