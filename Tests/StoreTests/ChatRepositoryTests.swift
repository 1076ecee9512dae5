import Foundation
import Store
import Testing

/// A fresh database in its own temporary folder.
func temporaryDatabase() throws -> ParleyDatabase {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("parley-store-\(UUID().uuidString)")
    return try ParleyDatabase(path: folder.appendingPathComponent("parley.sqlite").path)
}

/// The store's backends. Every repository test runs on each, so a backend added later (the
/// cluster's PostgreSQL) passes the same suite.
enum StoreBackend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite

    var testDescription: String { rawValue }

    func chatRepository() throws -> any ChatRepository {
        switch self {
        case .sqlite: SQLiteChatRepository(database: try temporaryDatabase())
        }
    }

    func recordingRepository() throws -> any RecordingRepository {
        switch self {
        case .sqlite: SQLiteRecordingRepository(database: try temporaryDatabase())
        }
    }
}

@Suite struct ChatRepositoryTests {
    let alice = ChatAuthor(sid: "PA_a", identity: "alice", name: "Alice")
    let bob = ChatAuthor(sid: "PA_b", identity: "bob", name: "Bob")

    func draft(_ n: Int, from: ChatAuthor? = nil, room: String = "r", to: [String]? = nil, clientMsgId: String? = nil) -> ChatDraft {
        ChatDraft(
            id: "MS_\(room)_\(n)_\(UUID().uuidString.prefix(6))", room: room, from: from ?? alice, text: "message \(n)", to: to,
            ts: 1_700_000_000_000 + Int64(n), clientMsgId: clientMsgId)
    }

    @Test(arguments: StoreBackend.allCases) func seqRisesByOnePerRoom(backend: StoreBackend) async throws {
        let chat = try backend.chatRepository()
        var seqs: [String: [Int64]] = [:]
        for n in 1...5 {
            for room in ["a", "b"] {
                seqs[room, default: []].append(try await chat.append(draft(n, room: room)).message.seq)
            }
        }
        #expect(seqs["a"] == [1, 2, 3, 4, 5])
        #expect(seqs["b"] == [1, 2, 3, 4, 5])
        #expect(try await chat.lastSeq(room: "a") == 5)
        #expect(try await chat.lastSeq(room: "empty") == 0)
    }

    @Test(arguments: StoreBackend.allCases) func sameClientMsgIdReturnsTheOriginalOnce(backend: StoreBackend) async throws {
        let chat = try backend.chatRepository()
        let first = try await chat.append(draft(1, clientMsgId: "u-1"))
        let again = try await chat.append(draft(2, clientMsgId: "u-1"))
        #expect(!first.duplicate)
        #expect(again.duplicate)
        #expect(again.message == first.message)
        // Another identity may use the same clientMsgId.
        let fromBob = try await chat.append(draft(3, from: bob, clientMsgId: "u-1"))
        #expect(!fromBob.duplicate)
        #expect(fromBob.message.seq == 2)
        let page = try await chat.page(room: "r", viewer: nil, limit: 10)
        #expect(page.messages.count == 2)
    }

    @Test(arguments: StoreBackend.allCases) func concurrentAppendsGetDistinctSeqs(backend: StoreBackend) async throws {
        let chat = try backend.chatRepository()
        let seqs = try await withThrowingTaskGroup(of: Int64.self) { group in
            for n in 0..<50 { group.addTask { try await chat.append(draft(n)).message.seq } }
            return try await group.reduce(into: [Int64]()) { $0.append($1) }
        }
        #expect(Set(seqs) == Set(1...50))
    }

    @Test(arguments: StoreBackend.allCases) func directMessagesAreSeenOnlyByTheirParties(backend: StoreBackend) async throws {
        let chat = try backend.chatRepository()
        _ = try await chat.append(draft(1))
        _ = try await chat.append(draft(2, to: ["bob"]))
        _ = try await chat.append(draft(3, from: bob, to: ["carol", "alice"]))
        func texts(_ viewer: String?) async throws -> [String] {
            try await chat.page(room: "r", viewer: viewer, limit: 10).messages.map(\.text)
        }
        #expect(try await texts("alice") == ["message 1", "message 2", "message 3"])
        #expect(try await texts("bob") == ["message 1", "message 2", "message 3"])
        #expect(try await texts("carol") == ["message 1", "message 3"])
        #expect(try await texts("dave") == ["message 1"])
        #expect(try await texts(nil) == ["message 1", "message 2", "message 3"])
        let dm = try await chat.page(room: "r", viewer: "carol", limit: 10).messages[1]
        #expect(dm.to == ["carol", "alice"])
        #expect(dm.from == bob)
        #expect(dm.room == "r")
        #expect(!dm.system)
    }

    @Test(arguments: StoreBackend.allCases) func pagesBackwardAndForward(backend: StoreBackend) async throws {
        let chat = try backend.chatRepository()
        for n in 1...12 { _ = try await chat.append(draft(n)) }
        let newest = try await chat.page(room: "r", viewer: "alice", limit: 5)
        #expect(newest.messages.map(\.seq) == [8, 9, 10, 11, 12])
        #expect(newest.hasMore)
        let older = try await chat.page(room: "r", viewer: "alice", before: 8, limit: 5)
        #expect(older.messages.map(\.seq) == [3, 4, 5, 6, 7])
        #expect(older.hasMore)
        let oldest = try await chat.page(room: "r", viewer: "alice", before: 3, limit: 5)
        #expect(oldest.messages.map(\.seq) == [1, 2])
        #expect(!oldest.hasMore)
        let missed = try await chat.page(room: "r", viewer: "alice", after: 9, limit: 2)
        #expect(missed.messages.map(\.seq) == [10, 11])
        #expect(missed.hasMore)
        let caughtUp = try await chat.page(room: "r", viewer: "alice", after: 11, limit: 5)
        #expect(caughtUp.messages.map(\.seq) == [12])
        #expect(!caughtUp.hasMore)
    }

    @Test(arguments: StoreBackend.allCases) func systemMessagesKeepTheirFlagAndLimitsAreClamped(backend: StoreBackend) async throws {
        let chat = try backend.chatRepository()
        let system = ChatDraft(
            id: "MS_sys", room: "r", from: ChatAuthor(sid: "", identity: "", name: "System"), text: "maintenance at noon", to: nil,
            ts: 1, clientMsgId: nil, system: true)
        let stored = try await chat.append(system).message
        #expect(stored.system && stored.seq == 1 && stored.from.name == "System")
        for n in 2...4 { _ = try await chat.append(draft(n)) }
        // A limit beyond the page size or below one is clamped, not refused: callers check it.
        #expect(try await chat.page(room: "r", viewer: nil, limit: 0).messages.map(\.seq) == [4])
        #expect(try await chat.page(room: "r", viewer: nil, limit: ChatPaging.maxPageSize + 10).messages.count == 4)
        #expect(try await chat.page(room: "r", viewer: "alice", limit: 10).messages.first?.system == true)
    }

    @Test(arguments: StoreBackend.allCases) func pagingSkipsInvisibleMessages(backend: StoreBackend) async throws {
        let chat = try backend.chatRepository()
        for n in 1...6 { _ = try await chat.append(draft(n, to: n.isMultiple(of: 2) ? ["bob"] : nil)) }
        let page = try await chat.page(room: "r", viewer: "carol", limit: 2)
        #expect(page.messages.map(\.seq) == [3, 5])
        #expect(page.hasMore)
    }

    @Test func messagesSurviveReopening() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("parley-reopen-\(UUID().uuidString)")
        let path = folder.appendingPathComponent("parley.sqlite").path
        let database = try ParleyDatabase(path: path)
        let stored = try await SQLiteChatRepository(database: database).append(draft(1, clientMsgId: "x"))
        try database.close()
        let reopened = SQLiteChatRepository(database: try ParleyDatabase(path: path))
        #expect(try await reopened.page(room: "r", viewer: nil, limit: 5).messages == [stored.message])
        #expect(try await reopened.append(draft(2, clientMsgId: "x")).duplicate)
        #expect(try await reopened.append(draft(3)).message.seq == 2)
    }
}
