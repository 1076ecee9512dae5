/// Why the room ends a participant's channel.
public enum ChannelCloseReason: Sendable, Equatable {
    case normal(String)
    case policy(String)
    /// What stood behind the channel went away (a relayed room's node was lost): the client
    /// should connect again.
    case goingAway(String)
    /// The channel's queue overflowed: the client is too slow (it may resume).
    case overflow
}

/// Where the frames a room sends one participant go: a WebSocket's outbox today
/// (`SignalingConnection`), an HTTP session's (WHIP, WHEP) as well. The room only queues and
/// never waits on it, so one slow participant never stalls a room.
public protocol ParticipantChannel: AnyObject, Sendable {
    /// Queues a frame (JSON text as in PROTOCOL.md). False when the channel is closed or its
    /// queue overflowed, in which case it is closing now.
    @discardableResult
    func send(_ frame: String) -> Bool

    /// Ends the channel once what is queued has gone out.
    func close(_ reason: ChannelCloseReason)

    /// True for a session that is nothing but its media (WHIP): it ends when its media transport
    /// closes, having no signaling to lose and resume.
    var endsWithMedia: Bool { get }
}

extension ParticipantChannel {
    public var endsWithMedia: Bool { false }
}
