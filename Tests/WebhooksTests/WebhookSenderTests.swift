import Foundation
import Logging
import NIOConcurrencyHelpers
import Store
import Testing
import Webhooks

/// An outbox in memory with the store's semantics, and a receiver that answers as told.
final class MemoryOutbox: WebhookOutbox, @unchecked Sendable {
    private let rows = NIOLockedValueBox<[WebhookDelivery]>([])
    private let nextID = NIOLockedValueBox<Int64>(0)

    func enqueue(_ events: [OutboxEvent], urls: [String], node: String) async throws {
        for event in events {
            for url in urls {
                let id = nextID.withLockedValue { $0 += 1; return $0 }
                rows.withLockedValue {
                    $0.append(WebhookDelivery(
                        id: id, url: url, room: event.room, eventID: event.eventID, body: event.body, node: node,
                        createdAt: event.createdAt, attempts: 0, nextAttemptAt: 0, lastError: nil))
                }
            }
        }
    }

    func pending(url: String, node: String, limit: Int) async throws -> [WebhookDelivery] {
        rows.withLockedValue { Array($0.filter { $0.url == url && $0.node == node }.prefix(limit)) }
    }

    func markDelivered(id: Int64) async throws { rows.withLockedValue { $0.removeAll { $0.id == id } } }

    func markFailed(id: Int64, nextAttemptAt: Int64, error: String) async throws {
        rows.withLockedValue { rows in
            guard let index = rows.firstIndex(where: { $0.id == id }) else { return }
            rows[index].attempts += 1
            rows[index].nextAttemptAt = nextAttemptAt
            rows[index].lastError = error
        }
    }

    func pendingCount(node: String) async throws -> Int { rows.withLockedValue { $0.count } }
}

@Suite struct WebhookSenderTests {
    final class Receiver: @unchecked Sendable {
        let received = NIOLockedValueBox<[String]>([])
        let failing = NIOLockedValueBox<Set<String>>([])  // event ids answered 500
        let authorizations = NIOLockedValueBox<[String]>([])

        func inRoom(_ room: String) -> [String] { received.withLockedValue { $0.filter { $0.hasPrefix(room) } } }

        func post(_ url: URL, _ body: Data, _ headers: [String: String]) async throws -> Int {
            let id = headers["X-Parley-Event-Id"] ?? ""
            authorizations.withLockedValue { $0.append(headers["Authorization"] ?? "") }
            if failing.withLockedValue({ $0.contains(id) }) { return 500 }
            received.withLockedValue { $0.append(id) }
            return 204
        }
    }

    let clock = NIOLockedValueBox<Int64>(1_000)

    func sender(_ outbox: MemoryOutbox, _ receiver: Receiver) -> WebhookSender {
        WebhookSender(
            url: "http://hooks.test/in", node: "n", outbox: outbox, authorization: { body in "signed:\(body.count)" },
            post: { try await receiver.post($0, $1, $2) }, now: { [clock] in clock.withLockedValue { $0 } },
            hooks: .init(delivered: { _ in }, failed: { _ in }), logger: Logger(label: "test"))
    }

    func events(_ room: String, _ numbers: ClosedRange<Int>) -> [OutboxEvent] {
        numbers.map { OutboxEvent(room: room, eventID: "\(room)\($0)", body: "{}", createdAt: 900) }
    }

    @Test func deliversEverythingInOrderAndEmptiesTheOutbox() async throws {
        let outbox = MemoryOutbox()
        let receiver = Receiver()
        try await outbox.enqueue(events("a", 1...3) + events("b", 1...2), urls: ["http://hooks.test/in"], node: "n")
        #expect(try await sender(outbox, receiver).deliverDue() == nil)
        // Rooms go out side by side; each room's events in order.
        #expect(receiver.inRoom("a") == ["a1", "a2", "a3"] && receiver.inRoom("b") == ["b1", "b2"])
        #expect(receiver.authorizations.withLockedValue { $0 }.allSatisfy { $0 == "signed:2" })
        #expect(try await outbox.pendingCount(node: "n") == 0)
    }

    @Test func aFailedEventHoldsItsRoomBackButNotTheOthers() async throws {
        let outbox = MemoryOutbox()
        let receiver = Receiver()
        receiver.failing.withLockedValue { $0 = ["a2"] }
        try await outbox.enqueue(events("a", 1...3) + events("b", 1...2), urls: ["http://hooks.test/in"], node: "n")
        let sender = sender(outbox, receiver)
        // a2 fails: a3 waits behind it; b goes on. The next try is 1 s later.
        #expect(try await sender.deliverDue() == 2_000)
        #expect(receiver.inRoom("a") == ["a1"] && receiver.inRoom("b") == ["b1", "b2"])
        // Not due yet: nothing is sent.
        clock.withLockedValue { $0 = 1_500 }
        #expect(try await sender.deliverDue() == 2_000)
        #expect(receiver.received.withLockedValue { $0 }.count == 3)
        // Due, failing again: the wait doubles.
        clock.withLockedValue { $0 = 2_000 }
        #expect(try await sender.deliverDue() == 4_000)
        // The receiver recovers: a2 then a3, in order.
        receiver.failing.withLockedValue { $0 = [] }
        clock.withLockedValue { $0 = 4_000 }
        #expect(try await sender.deliverDue() == nil)
        #expect(receiver.inRoom("a") == ["a1", "a2", "a3"] && receiver.inRoom("b") == ["b1", "b2"])
    }

    @Test func aReceiverThatCannotBeReachedIsRetriedLikeAFailure() async throws {
        let outbox = MemoryOutbox()
        try await outbox.enqueue(events("a", 1...1), urls: ["http://hooks.test/in"], node: "n")
        let sender = WebhookSender(
            url: "http://hooks.test/in", node: "n", outbox: outbox, authorization: { _ in "t" },
            post: { _, _, _ in throw URLError(.cannotConnectToHost) }, now: { 10_000 },
            hooks: .init(delivered: { _ in }, failed: { _ in }), logger: Logger(label: "test"))
        #expect(try await sender.deliverDue() == 11_000)
        let row = try #require(try await outbox.pending(url: "http://hooks.test/in", node: "n", limit: 1).first)
        #expect(row.attempts == 1 && row.lastError?.contains("URLError") == true)
    }

    @Test func severalRoomsGoOutAtOnce() async throws {
        let outbox = MemoryOutbox()
        let inFlight = NIOLockedValueBox((now: 0, most: 0))
        try await outbox.enqueue((1...6).flatMap { events("r\($0)", 1...2) }, urls: ["http://hooks.test/in"], node: "n")
        let sender = WebhookSender(
            url: "http://hooks.test/in", node: "n", outbox: outbox, authorization: { _ in "t" },
            post: { _, _, _ in
                inFlight.withLockedValue { $0.now += 1; $0.most = max($0.most, $0.now) }
                try await Task.sleep(for: .milliseconds(20))
                inFlight.withLockedValue { $0.now -= 1 }
                return 200
            }, now: { 0 }, hooks: .init(delivered: { _ in }, failed: { _ in }), logger: Logger(label: "test"))
        #expect(try await sender.deliverDue(parallelRooms: 4) == nil)
        #expect(inFlight.withLockedValue { $0.most } == 4)
        #expect(try await outbox.pendingCount(node: "n") == 0)
    }

    @Test func retriesBackOffToACap() {
        let schedule = RetrySchedule(first: .seconds(1), cap: .seconds(60))
        #expect((1...8).map { schedule.delay(afterFailures: $0) } == [1, 2, 4, 8, 16, 32, 60, 60].map { Duration.seconds($0) })
    }
}
