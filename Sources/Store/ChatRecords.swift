/// Who wrote a chat message, as the store keeps it.
public struct ChatAuthor: Sendable, Equatable, Hashable {
    public var sid: String
    public var identity: String
    public var name: String

    public init(sid: String, identity: String, name: String) {
        self.sid = sid
        self.identity = identity
        self.name = name
    }
}

/// A chat message before it is stored: the store assigns `seq`.
public struct ChatDraft: Sendable, Equatable {
    public var id: String
    public var room: String
    public var from: ChatAuthor
    public var text: String
    /// The identities of a direct message's recipients; nil for the whole room.
    public var to: [String]?
    /// Wall time in milliseconds since 1970.
    public var ts: Int64
    public var clientMsgId: String?
    public var system: Bool

    public init(
        id: String, room: String, from: ChatAuthor, text: String, to: [String]?, ts: Int64,
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

/// A stored chat message: the draft with the room's `seq` it was given.
public struct StoredChatMessage: Sendable, Equatable {
    public var id: String
    public var room: String
    public var seq: Int64
    public var from: ChatAuthor
    public var text: String
    public var to: [String]?
    public var ts: Int64
    public var clientMsgId: String?
    public var system: Bool

    public init(draft: ChatDraft, seq: Int64) {
        self.init(
            id: draft.id, room: draft.room, seq: seq, from: draft.from, text: draft.text, to: draft.to, ts: draft.ts,
            clientMsgId: draft.clientMsgId, system: draft.system)
    }

    public init(
        id: String, room: String, seq: Int64, from: ChatAuthor, text: String, to: [String]?, ts: Int64, clientMsgId: String?,
        system: Bool
    ) {
        self.id = id
        self.room = room
        self.seq = seq
        self.from = from
        self.text = text
        self.to = to
        self.ts = ts
        self.clientMsgId = clientMsgId
        self.system = system
    }
}

/// A page of a room's history, oldest first, and whether more lie beyond it.
public struct StoredChatPage: Sendable, Equatable {
    public var messages: [StoredChatMessage]
    public var hasMore: Bool

    public init(messages: [StoredChatMessage], hasMore: Bool) {
        self.messages = messages
        self.hasMore = hasMore
    }
}

/// Durable room chat. A message is committed before `append` returns, so an ack sent after it
/// means stored. SQLite implements it (`SQLiteChatRepository`).
public protocol ChatRepository: Sendable {
    /// Stores a message with the room's next `seq`. A `clientMsgId` the same identity already used
    /// in this room returns the stored original instead, with `duplicate` set.
    func append(_ draft: ChatDraft) async throws -> (message: StoredChatMessage, duplicate: Bool)

    /// A page of a room's history, oldest first. `viewer` nil sees everything (admin); otherwise
    /// direct messages appear only to their sender and recipients. With `after`, the page is the
    /// oldest messages after that seq (catching up); otherwise the newest before `before`.
    /// `limit` is clamped to 1...`ChatPaging.maxPageSize`.
    func fetchPage(room: String, viewer: String?, before: Int64?, after: Int64?, limit: Int) async throws -> StoredChatPage

    /// The highest seq stored for a room, 0 when it has none.
    func lastSeq(room: String) async throws -> Int64

    /// Deletes messages stamped before `cutoff` (milliseconds since 1970), except each room's
    /// newest, so its sequence numbers go on from where they were. Returns how many went.
    func deleteMessages(olderThan cutoff: Int64) async throws -> Int
}

extension ChatRepository {
    /// `fetchPage` with `before` and `after` optional.
    public func page(
        room: String, viewer: String?, before: Int64? = nil, after: Int64? = nil, limit: Int
    ) async throws -> StoredChatPage {
        try await fetchPage(room: room, viewer: viewer, before: before, after: after, limit: limit)
    }
}

public enum ChatPaging {
    /// The most messages one history page holds.
    public static let maxPageSize = 500
}
