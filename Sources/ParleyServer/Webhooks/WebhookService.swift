import Auth
import Foundation
import Logging
import ParleyProtocol
import ServiceLifecycle
import Store
import Webhooks

/// Webhooks for `webhook.urls`: every room event goes into the store's outbox first (committed
/// before anything is sent), then one sender per URL delivers it signed, in order per room, with
/// retries. A restart resumes from the outbox; a shutdown flushes the events the rooms emitted
/// while closing into it before the store closes.
struct WebhookService: Service {
    let urls: [String]
    let node: String
    let outbox: any WebhookOutbox
    let events: RoomEvents
    let issuer: TokenIssuer
    let clock: any ServerClock
    let metrics: ServerMetrics
    let logger: Logger

    func run() async throws {
        let stream = events.subscribe()
        let doorbell = Doorbell()
        await withTaskGroup(of: Void.self) { group in
            // The writer: events into the outbox, a batch at a time, until the events end.
            group.addTask { await write(stream, doorbell: doorbell) }
            group.addTask { await send(doorbell: doorbell) }
            await withGracefulShutdownHandler {
                await group.next()
            } onGracefulShutdown: {
                // The rooms are closed by now (RoomCloser stops first): end the stream, so the
                // writer stores what is buffered and stops.
                events.finish()
            }
            group.cancelAll()
            await doorbell.ring()  // a sender waiting for work sees the cancellation now
        }
    }

    private func write(_ stream: AsyncStream<RoomEvent>, doorbell: Doorbell) async {
        var pending: [OutboxEvent] = []
        var iterator = stream.makeAsyncIterator()
        while let first = await iterator.next() {
            pending.append(Self.outboxEvent(first))
            var failures = 0
            while true {
                do {
                    try await outbox.enqueue(pending, urls: urls, node: node)
                    metrics.webhookEventsQueued.increment(by: Double(pending.count))
                    pending.removeAll()
                    await doorbell.ring()
                    break
                } catch {
                    // The store is away: keep the events (the room stream buffers what comes
                    // meanwhile) and try again.
                    failures += 1
                    if failures == 1 { logger.error("webhook events cannot be stored; retrying", metadata: ["error": "\(error)"]) }
                    try? await Task.sleep(for: RetrySchedule(first: .milliseconds(200), cap: .seconds(5)).delay(afterFailures: failures))
                }
            }
        }
    }

    private func send(doorbell: Doorbell) async {
        let issuer = self.issuer
        let metrics = self.metrics
        let senders = urls.map { url in
            WebhookSender(
                url: url, node: node, outbox: outbox, authorization: { body in try await issuer.webhookAuthorization(body: body) },
                now: { [clock] in clock.wallMilliseconds() },
                hooks: .init(
                    delivered: { delay in
                        metrics.webhookDeliveries.increment()
                        metrics.webhookDelay.recordNanoseconds(delay * 1_000_000)
                    },
                    failed: { _ in metrics.webhookFailures.increment() }),
                logger: logger)
        }
        while !Task.isCancelled {
            var wakeAt: Int64?
            for sender in senders {
                do {
                    if let next = try await sender.deliverDue() { wakeAt = min(wakeAt ?? next, next) }
                } catch {
                    wakeAt = clock.wallMilliseconds() + 1000  // the store is away: look again soon
                }
            }
            if let pending = try? await outbox.pendingCount(node: node) { metrics.webhookPending.set(Double(pending)) }
            let now = clock.wallMilliseconds()
            if let wakeAt, wakeAt <= now { continue }
            // Sleep until the earliest retry, or until the writer queues more.
            await doorbell.wait(upTo: .milliseconds(min(wakeAt.map { $0 - now } ?? 60_000, 60_000)))
        }
    }

    static func outboxEvent(_ event: RoomEvent) -> OutboxEvent {
        let body = WebhookMapping.body(of: event)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let text = (try? encoder.encode(body)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return OutboxEvent(room: event.room, eventID: event.id, body: text, createdAt: event.createdAt)
    }
}

/// Wakes the sender when the writer has queued events: `wait` returns at the first `ring` since
/// the last `wait`, or after the timeout.
actor Doorbell {
    private var rung = false
    private var waiter: CheckedContinuation<Void, Never>?
    private var generation = 0

    func ring() {
        if let waiter {
            self.waiter = nil
            waiter.resume()
        } else {
            rung = true
        }
    }

    func wait(upTo timeout: Duration) async {
        if rung {
            rung = false
            return
        }
        generation += 1
        let mine = generation
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            await self?.timedOut(mine)
        }
        await withCheckedContinuation { waiter = $0 }
        timer.cancel()
    }

    private func timedOut(_ generation: Int) {
        guard generation == self.generation, let waiter else { return }
        self.waiter = nil
        waiter.resume()
    }
}
