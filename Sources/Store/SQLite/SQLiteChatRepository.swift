import Foundation
import GRDB

/// Chat in SQLite: `seq` is assigned inside the write transaction, and a unique index on
/// (room, from_identity, client_msg_id) makes retries idempotent.
public struct SQLiteChatRepository: ChatRepository {
    let database: ParleyDatabase

    public init(database: ParleyDatabase) {
        self.database = database
    }

    public func append(_ draft: ChatDraft) async throws -> (message: StoredChatMessage, duplicate: Bool) {
        try await database.pool.write { db in
            if let clientMsgId = draft.clientMsgId,
               let existing = try Row.fetchOne(
                   db,
                   sql: "SELECT * FROM chat_message WHERE room = ? AND from_identity = ? AND client_msg_id = ?",
                   arguments: [draft.room, draft.from.identity, clientMsgId])
            {
                return (try Self.message(from: existing), true)
            }
            let seq = try Int64.fetchOne(
                db, sql: "SELECT COALESCE(MAX(seq), 0) + 1 FROM chat_message WHERE room = ?",
                arguments: [draft.room]) ?? 1
            let recipients = try draft.to.map { String(decoding: try JSONEncoder().encode($0), as: UTF8.self) }
            try db.execute(
                sql: """
                    INSERT INTO chat_message
                        (id, room, seq, from_sid, from_identity, from_name, text, recipients, ts, client_msg_id, system)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    draft.id, draft.room, seq, draft.from.sid, draft.from.identity, draft.from.name, draft.text,
                    recipients, draft.ts, draft.clientMsgId, draft.system,
                ])
            return (StoredChatMessage(draft: draft, seq: seq), false)
        }
    }

    public func fetchPage(
        room: String, viewer: String?, before: Int64?, after: Int64?, limit: Int
    ) async throws -> StoredChatPage {
        let limit = max(1, min(limit, ChatPaging.maxPageSize))
        return try await database.pool.read { db in
            var sql = "SELECT * FROM chat_message WHERE room = ?"
            var arguments: StatementArguments = [room]
            if let viewer {
                sql += """
                     AND (recipients IS NULL OR from_identity = ?
                          OR EXISTS (SELECT 1 FROM json_each(chat_message.recipients) WHERE value = ?))
                    """
                arguments += [viewer, viewer]
            }
            if let before {
                sql += " AND seq < ?"
                arguments += [before]
            }
            if let after {
                sql += " AND seq > ?"
                arguments += [after]
            }
            sql += after == nil ? " ORDER BY seq DESC" : " ORDER BY seq ASC"
            sql += " LIMIT ?"
            arguments += [limit + 1]
            var rows = try Row.fetchAll(db, sql: sql, arguments: arguments)
            let hasMore = rows.count > limit
            if hasMore { rows.removeLast() }
            if after == nil { rows.reverse() }
            return StoredChatPage(messages: try rows.map(Self.message(from:)), hasMore: hasMore)
        }
    }

    public func deleteMessages(olderThan cutoff: Int64) async throws -> Int {
        try await database.pool.write { db in
            try db.execute(
                sql: """
                    DELETE FROM chat_message WHERE ts < ?
                        AND seq < (SELECT MAX(newest.seq) FROM chat_message AS newest WHERE newest.room = chat_message.room)
                    """,
                arguments: [cutoff])
            return db.changesCount
        }
    }

    public func lastSeq(room: String) async throws -> Int64 {
        try await database.pool.read { db in
            try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(seq), 0) FROM chat_message WHERE room = ?", arguments: [room]) ?? 0
        }
    }

    static func message(from row: Row) throws -> StoredChatMessage {
        let recipientsJSON: String? = row["recipients"]
        let to = try recipientsJSON.map { try JSONDecoder().decode([String].self, from: Data($0.utf8)) }
        return StoredChatMessage(
            id: row["id"], room: row["room"], seq: row["seq"],
            from: ChatAuthor(sid: row["from_sid"], identity: row["from_identity"], name: row["from_name"]),
            text: row["text"], to: to, ts: row["ts"], clientMsgId: row["client_msg_id"], system: row["system"])
    }
}
