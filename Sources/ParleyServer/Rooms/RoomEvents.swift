import NIOConcurrencyHelpers
import ParleyProtocol

/// Something that happened in a room that others outside it act on: webhooks, a cluster's
/// bookkeeping, an audit log. Rooms emit them in the order they happen.
public struct RoomEvent: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case roomStarted(RoomInfo)
        /// `reason` as in `room.closed`: `empty_timeout`, `deleted`, `server_shutdown`.
        case roomFinished(reason: String)
        /// A participant was admitted (not a resumed session). Hidden ones too, marked so.
        case participantJoined(ParticipantInfo, hidden: Bool)
        case participantLeft(ParticipantInfo, reason: LeaveReason, hidden: Bool)
        case trackPublished(participant: ParticipantInfo, track: TrackInfo)
        case trackUnpublished(participant: ParticipantInfo, track: TrackInfo)
        case recordingStarted(RecordingInfo)
        /// The recording's files are final (`stopped`) or it failed (`failed`).
        case recordingEnded(RecordingInfo)
    }

    /// Unique per event (`EV_…`): a consumer that sees one twice (a retry) can tell.
    public var id: String
    public var room: String
    public var roomSid: String
    /// Wall time in milliseconds since 1970.
    public var createdAt: Int64
    public var kind: Kind

    public init(id: String, room: String, roomSid: String, createdAt: Int64, kind: Kind) {
        self.id = id
        self.room = room
        self.roomSid = roomSid
        self.createdAt = createdAt
        self.kind = kind
    }

    /// The event's name as webhooks spell it (LiveKit's names).
    public var name: String {
        switch kind {
        case .roomStarted: "room_started"
        case .roomFinished: "room_finished"
        case .participantJoined: "participant_joined"
        case .participantLeft: "participant_left"
        case .trackPublished: "track_published"
        case .trackUnpublished: "track_unpublished"
        case .recordingStarted: "egress_started"
        case .recordingEnded: "egress_ended"
        }
    }
}

/// Every room's events, fanned out to whoever subscribed. A room emits on its own loop and never
/// waits: each subscriber has a bounded buffer, and an event that does not fit is dropped for
/// that subscriber and counted (`parley_room_events_dropped_total`). The lock is held only to
/// hand the event to each buffer, so events from all rooms reach a subscriber in one order.
public final class RoomEvents: Sendable {
    public static let defaultBufferLimit = 10_000

    private struct State {
        var subscribers: [Int: AsyncStream<RoomEvent>.Continuation] = [:]
        var nextID = 0
        var emitted: UInt64 = 0
        var dropped: UInt64 = 0
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    /// The events emitted from now on, until the stream's consumer stops iterating.
    public func subscribe(bufferLimit: Int = RoomEvents.defaultBufferLimit) -> AsyncStream<RoomEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: RoomEvent.self, bufferingPolicy: .bufferingOldest(bufferLimit))
        let id = state.withLockedValue { state in
            state.nextID += 1
            state.subscribers[state.nextID] = continuation
            return state.nextID
        }
        continuation.onTermination = { [weak self] _ in
            self?.state.withLockedValue { _ = $0.subscribers.removeValue(forKey: id) }
        }
        return stream
    }

    func emit(_ event: RoomEvent) {
        state.withLockedValue { state in
            state.emitted += 1
            for continuation in state.subscribers.values {
                if case .dropped = continuation.yield(event) { state.dropped += 1 }
            }
        }
    }

    /// Events emitted, and copies dropped because a subscriber's buffer was full.
    public var counts: (emitted: UInt64, dropped: UInt64) { state.withLockedValue { ($0.emitted, $0.dropped) } }

    /// Ends every subscriber's stream (the server is stopping).
    public func finish() {
        let subscribers = state.withLockedValue { state in
            defer { state.subscribers.removeAll() }
            return Array(state.subscribers.values)
        }
        for continuation in subscribers { continuation.finish() }
    }
}
