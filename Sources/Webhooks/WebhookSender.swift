import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import Store

/// How long a failed delivery waits before the next attempt: 1 s, doubling, at most `cap`. Pure.
public struct RetrySchedule: Sendable, Equatable {
    public var first: Duration
    public var cap: Duration

    public init(first: Duration = .seconds(1), cap: Duration = .seconds(60)) {
        self.first = first
        self.cap = cap
    }

    /// The wait after the `failures`-th failed attempt (1 for the first).
    public func delay(afterFailures failures: Int) -> Duration {
        var delay = first
        for _ in 1..<max(1, failures) where delay < cap { delay *= 2 }
        return min(delay, cap)
    }
}

/// Sends the outbox's events to one URL: in `id` order per room (an event waits until the room's
/// earlier ones are delivered), with a signed `Authorization`, deleting each once the receiver
/// answered 2xx; a failure is retried on `RetrySchedule`. At least once: a crash between the
/// answer and the delete sends that event again (its `id` tells). Rooms do not wait on each other:
/// several go out at once.
public final class WebhookSender: Sendable {
    public struct Hooks: Sendable {
        /// A delivery, with the milliseconds from the event to its delivery.
        public var delivered: @Sendable (_ delayMs: Int64) -> Void
        public var failed: @Sendable (_ error: String) -> Void

        public init(delivered: @escaping @Sendable (Int64) -> Void, failed: @escaping @Sendable (String) -> Void) {
            self.delivered = delivered
            self.failed = failed
        }
    }

    /// Answers the HTTP status of a POST of `body` with `headers` to `url`, or throws.
    public typealias Post = @Sendable (_ url: URL, _ body: Data, _ headers: [String: String]) async throws -> Int

    let url: String
    let node: String
    let outbox: any WebhookOutbox
    let authorization: @Sendable (Data) async throws -> String
    let post: Post
    let schedule: RetrySchedule
    let now: @Sendable () -> Int64
    let hooks: Hooks
    let logger: Logger

    public init(
        url: String, node: String, outbox: any WebhookOutbox, authorization: @escaping @Sendable (Data) async throws -> String,
        post: @escaping Post = WebhookSender.urlSessionPost, schedule: RetrySchedule = RetrySchedule(),
        now: @escaping @Sendable () -> Int64, hooks: Hooks, logger: Logger
    ) {
        self.url = url
        self.node = node
        self.outbox = outbox
        self.authorization = authorization
        self.post = post
        self.schedule = schedule
        self.now = now
        self.hooks = hooks
        self.logger = logger
    }

    /// One pass over what is due. Rooms go out side by side (up to `parallelRooms` at once),
    /// each room's events one after another. Returns when the next pass is worth making: now
    /// (more is waiting), at the earliest retry, or nil when the outbox is empty for this URL.
    public func deliverDue(batch: Int = 200, parallelRooms: Int = 8) async throws -> Int64? {
        let rows = try await outbox.pending(url: url, node: node, limit: batch)
        guard !rows.isEmpty, let target = URL(string: url) else { return nil }
        var rooms: [String] = []
        var byRoom: [String: [WebhookDelivery]] = [:]
        for row in rows {
            if byRoom[row.room] == nil { rooms.append(row.room) }
            byRoom[row.room, default: []].append(row)
        }
        let queues = byRoom
        // Each room's pass: its rows in order until one is not due or fails; the retry time, if any.
        let wakes = try await withThrowingTaskGroup(of: Int64?.self) { group in
            var wakes: [Int64] = []
            var next = rooms.makeIterator()
            for _ in 0..<parallelRooms {
                guard let room = next.next() else { break }
                let rows = queues[room] ?? []
                group.addTask { try await self.deliver(rows, to: target) }
            }
            while let wake = try await group.next() {
                if let wake { wakes.append(wake) }
                if let room = next.next() {
                    let rows = queues[room] ?? []
                    group.addTask { try await self.deliver(rows, to: target) }
                }
            }
            return wakes
        }
        // A full batch may have more behind it: go again at once unless every room waits.
        if rows.count == batch, wakes.count < rooms.count { return now() }
        return wakes.min() ?? (rows.count == batch ? now() : nil)
    }

    /// One room's rows, in order: stops at the first that is not due yet or fails, and returns
    /// when to try it; nil when all went out.
    private func deliver(_ rows: [WebhookDelivery], to target: URL) async throws -> Int64? {
        for row in rows {
            if row.nextAttemptAt > now() { return row.nextAttemptAt }
            let body = Data(row.body.utf8)
            let outcome: String?
            do {
                let token = try await authorization(body)
                let status = try await post(target, body, [
                    "Content-Type": "application/webhook+json", "Authorization": token, "X-Parley-Event-Id": row.eventID,
                ])
                outcome = (200..<300).contains(status) ? nil : "HTTP \(status)"
            } catch {
                outcome = "\(error)"
            }
            guard let outcome else {
                try await outbox.markDelivered(id: row.id)
                hooks.delivered(max(0, now() - row.createdAt))
                continue
            }
            let retryAt = now() + schedule.delay(afterFailures: row.attempts + 1).milliseconds
            try await outbox.markFailed(id: row.id, nextAttemptAt: retryAt, error: outcome)
            hooks.failed(outcome)
            if row.attempts == 0 {
                logger.warning("webhook delivery failed; retrying", metadata: ["url": "\(url)", "event": "\(row.eventID)", "error": "\(outcome)"])
            }
            return retryAt
        }
        return nil
    }

    public static let urlSessionPost: Post = { url, body, headers in
        var request = URLRequest(url: url, timeoutInterval: 10)
        request.httpMethod = "POST"
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        request.httpBody = body
        let (_, response) = try await URLSession.shared.data(for: request)
        return (response as? HTTPURLResponse)?.statusCode ?? 0
    }
}

extension Duration {
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}
