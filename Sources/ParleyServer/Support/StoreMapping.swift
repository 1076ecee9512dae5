import ParleyProtocol
import Store

/// The store's chat in the wire's types: the store keeps its own records, so its schema and the
/// protocol change independently, and this is the one place they meet.
public struct ChatLog: Sendable {
    public let repository: any ChatRepository

    public init(_ repository: any ChatRepository) { self.repository = repository }

    /// Commits the message (an ack may follow); a repeated `clientMsgId` returns the original.
    public func append(_ draft: ChatDraft) async throws -> (message: ChatMessage, duplicate: Bool) {
        let stored = try await repository.append(draft)
        return (ChatMessage(stored.message), stored.duplicate)
    }

    public func page(room: String, viewer: String?, before: Int64? = nil, after: Int64? = nil, limit: Int) async throws -> ChatPage {
        ChatPage(try await repository.page(room: room, viewer: viewer, before: before, after: after, limit: limit))
    }

    public func lastSeq(room: String) async throws -> Int64 { try await repository.lastSeq(room: room) }
}

/// The store's recordings in the wire's types.
public struct RecordingLog: Sendable {
    public let repository: any RecordingRepository

    public init(_ repository: any RecordingRepository) { self.repository = repository }

    public func save(_ recording: RecordingInfo) async throws { try await repository.save(RecordingRecord(recording)) }

    public func get(_ id: String) async throws -> RecordingInfo? { try await repository.get(id).map(RecordingInfo.init) }

    public func list(room: String?) async throws -> [RecordingInfo] { try await repository.list(room: room).map(RecordingInfo.init) }

    public func markInterrupted(node: String, stoppedAt: Int64) async throws -> [RecordingInfo] {
        try await repository.markInterrupted(node: node, stoppedAt: stoppedAt).map(RecordingInfo.init)
    }

    public func markInterrupted(exceptNodes liveNodes: [String], stoppedAt: Int64) async throws -> [RecordingInfo] {
        try await repository.markInterrupted(exceptNodes: liveNodes, stoppedAt: stoppedAt).map(RecordingInfo.init)
    }
}

extension ChatAuthor {
    init(_ sender: ChatSender) { self.init(sid: sender.sid, identity: sender.identity, name: sender.name) }
}

extension ChatSender {
    init(_ author: ChatAuthor) { self.init(sid: author.sid, identity: author.identity, name: author.name) }
}

extension ChatMessage {
    init(_ stored: StoredChatMessage) {
        self.init(
            id: stored.id, seq: stored.seq, from: ChatSender(stored.from), text: stored.text, to: stored.to, ts: stored.ts,
            clientMsgId: stored.clientMsgId, system: stored.system ? true : nil)
    }
}

extension ChatPage {
    init(_ stored: StoredChatPage) { self.init(messages: stored.messages.map(ChatMessage.init), hasMore: stored.hasMore) }
}

extension RecordingInfo {
    init(_ record: RecordingRecord) {
        self.init(
            id: record.id, room: record.room, state: record.state, mode: record.mode, startedAt: record.startedAt,
            stoppedAt: record.stoppedAt, files: record.files.map(RecordingFileInfo.init), bytes: record.bytes,
            durationMs: record.durationMs, error: record.error, node: record.node.isEmpty ? nil : record.node,
            stopReason: record.stopReason)
    }
}

extension RecordingRecord {
    init(_ info: RecordingInfo) {
        self.init(
            id: info.id, room: info.room, state: info.state, mode: info.mode, startedAt: info.startedAt, stoppedAt: info.stoppedAt,
            files: info.files.map(RecordingFileRecord.init), bytes: info.bytes, durationMs: info.durationMs, error: info.error,
            node: info.node ?? "", stopReason: info.stopReason)
    }
}

extension RecordingFileInfo {
    init(_ record: RecordingFileRecord) {
        self.init(
            name: record.name, track: record.track, participant: record.participant, kind: record.kind, format: record.format,
            bytes: record.bytes, durationMs: record.durationMs, offsetMs: record.offsetMs)
    }
}

extension RecordingFileRecord {
    init(_ info: RecordingFileInfo) {
        self.init(
            name: info.name, track: info.track, participant: info.participant, kind: info.kind, format: info.format,
            bytes: info.bytes, durationMs: info.durationMs, offsetMs: info.offsetMs)
    }
}
