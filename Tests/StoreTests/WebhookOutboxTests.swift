import Store
import Testing

@Suite struct WebhookOutboxTests {
    func events(_ room: String, _ numbers: ClosedRange<Int>) -> [OutboxEvent] {
        numbers.map { OutboxEvent(room: room, eventID: "EV_\(room)_\($0)", body: #"{"n":\#($0)}"#, createdAt: Int64($0)) }
    }

    @Test(arguments: StoreBackend.allCases) func eventsComeOutPerURLInTheOrderTheyWentIn(backend: StoreBackend) async throws {
        let outbox = try await backend.store().webhooks
        try await outbox.enqueue(events("a", 1...3) + events("b", 1...2), urls: ["http://x", "http://y"], node: "n1")
        try await outbox.enqueue(events("a", 4...4), urls: ["http://x"], node: "n1")
        try await outbox.enqueue(events("c", 1...1), urls: ["http://x"], node: "n2")
        let x = try await outbox.pending(url: "http://x", node: "n1", limit: 100)
        #expect(x.map(\.eventID) == ["EV_a_1", "EV_a_2", "EV_a_3", "EV_b_1", "EV_b_2", "EV_a_4"])
        #expect(x.first?.body == #"{"n":1}"# && x.first?.attempts == 0 && x.first?.nextAttemptAt == 0 && x.first?.node == "n1")
        #expect(try await outbox.pending(url: "http://y", node: "n1", limit: 2).map(\.eventID) == ["EV_a_1", "EV_a_2"])
        #expect(try await outbox.pendingCount(node: "n1") == 11)
        #expect(try await outbox.pending(url: "http://x", node: "n2", limit: 10).map(\.room) == ["c"])
    }

    @Test(arguments: StoreBackend.allCases) func deliveredRowsGoAndFailedOnesWait(backend: StoreBackend) async throws {
        let outbox = try await backend.store().webhooks
        try await outbox.enqueue(events("a", 1...2), urls: ["http://x"], node: "n1")
        let rows = try await outbox.pending(url: "http://x", node: "n1", limit: 10)
        try await outbox.markFailed(id: rows[0].id, nextAttemptAt: 5_000, error: "HTTP 500")
        try await outbox.markFailed(id: rows[0].id, nextAttemptAt: 9_000, error: "timed out")
        let failed = try await outbox.pending(url: "http://x", node: "n1", limit: 10)[0]
        #expect(failed.attempts == 2 && failed.nextAttemptAt == 9_000 && failed.lastError == "timed out")
        try await outbox.markDelivered(id: rows[0].id)
        #expect(try await outbox.pending(url: "http://x", node: "n1", limit: 10).map(\.eventID) == ["EV_a_2"])
        #expect(try await outbox.pendingCount(node: "n1") == 1)
    }
}
