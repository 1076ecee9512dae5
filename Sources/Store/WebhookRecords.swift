/// One event waiting to go to one webhook URL: the outbox's row. Rows of a URL and room go out in
/// `id` order; a delivered row is deleted.
public struct WebhookDelivery: Sendable, Equatable {
    public var id: Int64
    public var url: String
    public var room: String
    public var eventID: String
    /// The JSON body, exactly as it is signed and sent.
    public var body: String
    /// The node that queued it (in a cluster each node delivers its rooms' events).
    public var node: String
    public var createdAt: Int64
    public var attempts: Int
    /// Not before then (ms since 1970): the backoff after a failed attempt.
    public var nextAttemptAt: Int64
    public var lastError: String?

    public init(
        id: Int64, url: String, room: String, eventID: String, body: String, node: String, createdAt: Int64, attempts: Int,
        nextAttemptAt: Int64, lastError: String?
    ) {
        self.id = id
        self.url = url
        self.room = room
        self.eventID = eventID
        self.body = body
        self.node = node
        self.createdAt = createdAt
        self.attempts = attempts
        self.nextAttemptAt = nextAttemptAt
        self.lastError = lastError
    }
}

/// An event to queue: its room, id, body and time.
public struct OutboxEvent: Sendable, Equatable {
    public var room: String
    public var eventID: String
    public var body: String
    public var createdAt: Int64

    public init(room: String, eventID: String, body: String, createdAt: Int64) {
        self.room = room
        self.eventID = eventID
        self.body = body
        self.createdAt = createdAt
    }
}

/// The webhook outbox: events are committed here before any is sent, so a restart or a receiver
/// that is down loses none; the sender deletes what was delivered.
public protocol WebhookOutbox: Sendable {
    /// Queues each event for each URL, in the order given, in one transaction.
    func enqueue(_ events: [OutboxEvent], urls: [String], node: String) async throws
    /// `node`'s rows for `url` not yet delivered, oldest first.
    func pending(url: String, node: String, limit: Int) async throws -> [WebhookDelivery]
    func markDelivered(id: Int64) async throws
    /// A failed attempt: counted, and not tried again before `nextAttemptAt`.
    func markFailed(id: Int64, nextAttemptAt: Int64, error: String) async throws
    /// Rows of `node` not yet delivered, every URL.
    func pendingCount(node: String) async throws -> Int
}
