import Foundation
import GRDB
import ParleyProtocol

/// A chat message before it is stored: the store assigns `seq`.
public struct ChatDraft: Sendable, Equatable {
    public var id: String
    public var room: String
    public var from: ChatSender
    public var text: String
    public var to: [String]?
    public var ts: Int64
    public var clientMsgId: String?
    public var system: Bool

    public init(
        id: String, room: String, from: ChatSender, text: String, to: [String]?, ts: Int64,
        clientMsgId: String?, system: Bool = false
    ) {
        self.id = id
        self.room = room
        self.from = from
        self.text = text
        self.to = to
        self.ts = ts
        self.clientMsgId = clientMsgId
        self.system = system
    }
}

/// Durable room chat: a message is committed before `append` returns, so an ack means stored.
public struct ChatRepository: Sendable {
    public static let maxPageSize = 500
    let database: ParleyDatabase

    public init(database: ParleyDatabase) {
        self.database = database
    }

    /// Stores a message with the room's next `seq`. A `clientMsgId` the same identity already used
    /// in this room returns the stored original instead, with `duplicate` set.
    public func append(_ draft: ChatDraft) async throws -> (message: ChatMessage, duplicate: Bool) {
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
            let message = ChatMessage(
                id: draft.id, seq: seq, from: draft.from, text: draft.text, to: draft.to, ts: draft.ts,
                clientMsgId: draft.clientMsgId, system: draft.system ? true : nil)
            return (message, false)
        }
    }

    /// A page of a room's history, oldest first. `viewer` nil sees everything (admin); otherwise
    /// direct messages appear only to their sender and recipients. With `after`, the page is the
    /// oldest messages after that seq (catching up); otherwise the newest before `before`.
    public func page(
        room: String, viewer: String?, before: Int64? = nil, after: Int64? = nil, limit: Int
    ) async throws -> ChatPage {
        let limit = max(1, min(limit, Self.maxPageSize))
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
            return ChatPage(messages: try rows.map(Self.message(from:)), hasMore: hasMore)
        }
    }

    /// The highest seq stored for a room, 0 when it has none.
    public func lastSeq(room: String) async throws -> Int64 {
        try await database.pool.read { db in
            try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(seq), 0) FROM chat_message WHERE room = ?", arguments: [room]) ?? 0
        }
    }

    static func message(from row: Row) throws -> ChatMessage {
        let recipientsJSON: String? = row["recipients"]
        let to = try recipientsJSON.map { try JSONDecoder().decode([String].self, from: Data($0.utf8)) }
        let system: Bool = row["system"]
        return ChatMessage(
            id: row["id"], seq: row["seq"],
            from: ChatSender(sid: row["from_sid"], identity: row["from_identity"], name: row["from_name"]),
            text: row["text"], to: to, ts: row["ts"], clientMsgId: row["client_msg_id"], system: system ? true : nil)
    }
}
