import Foundation
import Store
import Testing

/// A fresh database in its own temporary folder.
func temporaryDatabase() throws -> ParleyDatabase {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("parley-store-\(UUID().uuidString)")
    return try ParleyDatabase(path: folder.appendingPathComponent("parley.sqlite").path)
}

/// The store's backends. Every repository test runs on each: SQLite in a temporary folder, and
/// PostgreSQL in a fresh database on the test process's throwaway server.
enum StoreBackend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite
    case postgres

    var testDescription: String { rawValue }

    func store() async throws -> any DataStore {
        switch self {
        case .sqlite: try temporaryDatabase()
        case .postgres: try await PostgresDatabase(url: try await ThrowawayPostgres.shared.freshDatabaseURL())
        }
    }

    func chatRepository() async throws -> any ChatRepository {
        try await store().chat
    }

    func recordingRepository() async throws -> any RecordingRepository {
        try await store().recordings
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
        let chat = try await backend.chatRepository()
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
        let chat = try await backend.chatRepository()
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

    /// `chat.retention`: old messages go, each room's newest stays, and seqs go on from it.
    @Test(arguments: StoreBackend.allCases) func retentionDeletesOldMessagesButEachRoomsNewest(backend: StoreBackend) async throws {
        let chat = try await backend.chatRepository()
        for n in 1...5 { _ = try await chat.append(draft(n, room: "busy")) }  // ts …001 to …005
        for n in 1...2 { _ = try await chat.append(draft(n, room: "quiet")) }
        let deleted = try await chat.deleteMessages(olderThan: 1_700_000_000_000 + 4)
        #expect(deleted == 3 + 1, "busy 1–3 and quiet 1; quiet's newest (2) stays though it is old")
        #expect(try await chat.page(room: "busy", viewer: nil, limit: 10).messages.map(\.text) == ["message 4", "message 5"])
        #expect(try await chat.page(room: "quiet", viewer: nil, limit: 10).messages.map(\.text) == ["message 2"])
        #expect(try await chat.append(draft(6, room: "quiet")).message.seq == 3, "the room's seq goes on")
        #expect(try await chat.deleteMessages(olderThan: 0) == 0)
    }

    @Test(arguments: StoreBackend.allCases) func concurrentAppendsGetDistinctSeqs(backend: StoreBackend) async throws {
        let chat = try await backend.chatRepository()
        let seqs = try await withThrowingTaskGroup(of: Int64.self) { group in
            for n in 0..<50 { group.addTask { try await chat.append(draft(n)).message.seq } }
            return try await group.reduce(into: [Int64]()) { $0.append($1) }
        }
        #expect(Set(seqs) == Set(1...50))
    }

    @Test(arguments: StoreBackend.allCases) func directMessagesAreSeenOnlyByTheirParties(backend: StoreBackend) async throws {
        let chat = try await backend.chatRepository()
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
        let chat = try await backend.chatRepository()
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
        let chat = try await backend.chatRepository()
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
        let chat = try await backend.chatRepository()
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
        try database.closeNow()
        let reopened = SQLiteChatRepository(database: try ParleyDatabase(path: path))
        #expect(try await reopened.page(room: "r", viewer: nil, limit: 5).messages == [stored.message])
        #expect(try await reopened.append(draft(2, clientMsgId: "x")).duplicate)
        #expect(try await reopened.append(draft(3)).message.seq == 2)
    }

    @Test func postgresMessagesSurviveReconnecting() async throws {
        let url = try await ThrowawayPostgres.shared.freshDatabaseURL()
        let first = try await PostgresDatabase(url: url)
        let stored = try await first.chat.append(draft(1, clientMsgId: "x"))
        try await first.close()
        let second = try await PostgresDatabase(url: url)
        #expect(try await second.chat.page(room: "r", viewer: nil, limit: 5).messages == [stored.message])
        #expect(try await second.chat.append(draft(2, clientMsgId: "x")).duplicate)
        #expect(try await second.chat.append(draft(3)).message.seq == 2)
        try await second.close()
    }

    /// Nodes of a cluster start together: each migrates under the advisory lock, one after
    /// another, and the schema is applied once.
    @Test func postgresMigrationsAreSafeWhenNodesStartAtOnce() async throws {
        let url = try await ThrowawayPostgres.shared.freshDatabaseURL()
        let nodes = try await withThrowingTaskGroup(of: PostgresDatabase.self) { group in
            for _ in 0..<4 { group.addTask { try await PostgresDatabase(url: url, maxConnections: 2) } }
            return try await group.reduce(into: [PostgresDatabase]()) { $0.append($1) }
        }
        #expect(nodes.count == 4)
        let versions = try await nodes[0].appliedMigrations()
        #expect(versions == PostgresDatabase.migrationVersions)
        // Two nodes append to one room at once: one sequence, no gap, no duplicate.
        let seqs = try await withThrowingTaskGroup(of: Int64.self) { group in
            for n in 0..<40 { group.addTask { try await nodes[n % 4].chat.append(draft(n)).message.seq } }
            return try await group.reduce(into: [Int64]()) { $0.append($1) }
        }
        #expect(seqs.sorted() == Array(1...40))
        for node in nodes { try await node.close() }
    }

    @Test func postgresURLsAreReadLikeLibpq() throws {
        let tcp = try PostgresURL("postgres://parley:s%40cret@db.example:6432/chat?sslmode=require")
        #expect(tcp.username == "parley" && tcp.password == "s@cret" && tcp.host == "db.example" && tcp.port == 6432)
        #expect(tcp.database == "chat" && tcp.tls == .require)
        #expect(tcp.description == "postgres://parley@db.example:6432/chat")
        let socket = try PostgresURL("postgresql://app@/app?host=/run/postgresql")
        #expect(socket.unixSocketPath == "/run/postgresql/.s.PGSQL.5432" && socket.database == "app" && socket.tls == .prefer)
        #expect(throws: StoreError.self) { try PostgresURL("mysql://a@b/c") }
        #expect(throws: StoreError.self) { try PostgresURL("postgres://db.example/c") }
        #expect(throws: StoreError.self) { try PostgresURL("postgres://a@b/c?sslmode=sometimes") }
    }

    @Test func anUnreachablePostgresIsReportedNotAwaitedForever() async throws {
        let port = try ThrowawayPostgres.freePort()
        let url = try PostgresURL("postgres://parley@127.0.0.1:\(port)/none?sslmode=disable")
        await #expect(throws: StoreError.self) {
            try await PostgresDatabase(url: url, connectTimeout: .milliseconds(500))
        }
    }
}
