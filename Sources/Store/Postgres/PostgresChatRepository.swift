import Foundation
import PostgresNIO

/// Chat in PostgreSQL. `append` takes the room's advisory lock inside its transaction, so the
/// room's next `seq` and the idempotency check are decided by one writer at a time, whichever
/// node it runs on; the transaction commits before `append` returns.
public struct PostgresChatRepository: ChatRepository {
    let database: PostgresDatabase

    public init(database: PostgresDatabase) {
        self.database = database
    }

    public func append(_ draft: ChatDraft) async throws -> (message: StoredChatMessage, duplicate: Bool) {
        let logger = database.logger
        return try await database.transaction { connection in
            try await PostgresDatabase.drain(
                connection.query("SELECT pg_advisory_xact_lock(hashtextextended(\("chat:" + draft.room), 0))", logger: logger))
            if let clientMsgId = draft.clientMsgId {
                let existing = try await connection.query(
                    """
                    SELECT \(unescaped: Self.columns) FROM chat_message
                    WHERE room = \(draft.room) AND from_identity = \(draft.from.identity) AND client_msg_id = \(clientMsgId)
                    """, logger: logger)
                for try await row in existing {
                    return (try Self.message(from: row.makeRandomAccess()), true)
                }
            }
            var seq: Int64 = 1
            for try await next in try await connection.query(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM chat_message WHERE room = \(draft.room)", logger: logger
            ).decode(Int64.self) {
                seq = next
            }
            try await PostgresDatabase.drain(connection.query(
                """
                INSERT INTO chat_message
                    (id, room, seq, from_sid, from_identity, from_name, text, recipients, ts, client_msg_id, system)
                VALUES (\(draft.id), \(draft.room), \(seq), \(draft.from.sid), \(draft.from.identity), \(draft.from.name),
                        \(draft.text), \(draft.to), \(draft.ts), \(draft.clientMsgId), \(draft.system))
                """, logger: logger))
            return (StoredChatMessage(draft: draft, seq: seq), false)
        }
    }

    public func fetchPage(
        room: String, viewer: String?, before: Int64?, after: Int64?, limit: Int
    ) async throws -> StoredChatPage {
        let limit = max(1, min(limit, ChatPaging.maxPageSize))
        var binds = PostgresBindings()
        func bind(_ value: some PostgresDynamicTypeEncodable) -> String {
            binds.append(value)
            return "$\(binds.count)"
        }
        var sql = "SELECT \(Self.columns) FROM chat_message WHERE room = \(bind(room))"
        if let viewer {
            let parameter = bind(viewer)
            sql += " AND (recipients IS NULL OR from_identity = \(parameter) OR \(parameter) = ANY(recipients))"
        }
        if let before { sql += " AND seq < \(bind(before))" }
        if let after { sql += " AND seq > \(bind(after))" }
        sql += after == nil ? " ORDER BY seq DESC" : " ORDER BY seq ASC"
        sql += " LIMIT \(bind(limit + 1))"
        var rows = try await database.rows(PostgresQuery(unsafeSQL: sql, binds: binds))
        let hasMore = rows.count > limit
        if hasMore { rows.removeLast() }
        if after == nil { rows.reverse() }
        return StoredChatPage(messages: try rows.map(Self.message(from:)), hasMore: hasMore)
    }

    public func deleteMessages(olderThan cutoff: Int64) async throws -> Int {
        let rows = try await database.rows("""
            WITH gone AS (
                DELETE FROM chat_message WHERE ts < \(cutoff)
                    AND seq < (SELECT MAX(newest.seq) FROM chat_message AS newest WHERE newest.room = chat_message.room)
                RETURNING 1
            )
            SELECT count(*) AS n FROM gone
            """)
        return Int(try rows.first?["n"].decode(Int64.self) ?? 0)
    }

    public func lastSeq(room: String) async throws -> Int64 {
        let rows = try await database.rows("SELECT COALESCE(MAX(seq), 0) AS seq FROM chat_message WHERE room = \(room)")
        return try rows.first?["seq"].decode(Int64.self) ?? 0
    }

    static let columns = "id, room, seq, from_sid, from_identity, from_name, text, recipients, ts, client_msg_id, system"

    static func message(from row: PostgresRandomAccessRow) throws -> StoredChatMessage {
        StoredChatMessage(
            id: try row["id"].decode(String.self), room: try row["room"].decode(String.self), seq: try row["seq"].decode(Int64.self),
            from: ChatAuthor(
                sid: try row["from_sid"].decode(String.self), identity: try row["from_identity"].decode(String.self),
                name: try row["from_name"].decode(String.self)),
            text: try row["text"].decode(String.self), to: try row["recipients"].decode([String]?.self),
            ts: try row["ts"].decode(Int64.self), clientMsgId: try row["client_msg_id"].decode(String?.self),
            system: try row["system"].decode(Bool.self))
    }
}
