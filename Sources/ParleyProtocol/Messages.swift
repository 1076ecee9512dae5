import Foundation

/// A message on the signaling WebSocket: one JSON object with a `"type"`, plus `"id"` on a
/// request or `"re"` on a reply. Each message type is a struct holding the other fields.
public protocol SignalMessage: Codable, Sendable {
    static var type: String { get }
}

// MARK: Server → client

public struct Joined: SignalMessage, Equatable {
    public static let type = "joined"
    public var room: RoomInfo
    public var participant: ParticipantInfo
    public var participants: [ParticipantInfo]
    public var iceServers: [ICEServer]
    public var chat: ChatPage
    public var server: ServerInfo
    /// True when this connection resumed an earlier session (same sid).
    public var resumed: Bool

    public init(
        room: RoomInfo, participant: ParticipantInfo, participants: [ParticipantInfo], iceServers: [ICEServer],
        chat: ChatPage, server: ServerInfo, resumed: Bool
    ) {
        self.room = room
        self.participant = participant
        self.participants = participants
        self.iceServers = iceServers
        self.chat = chat
        self.server = server
        self.resumed = resumed
    }
}

public struct ErrorReply: SignalMessage, Equatable {
    public static let type = "error"
    public var code: ErrorCode
    public var message: String

    public init(_ error: ProtocolError) {
        code = error.code
        message = error.message
    }
}

public struct Pong: SignalMessage, Equatable {
    public static let type = "pong"
    public init() {}
}

/// The answer to `ice.servers`: the participant's ICE servers with newly issued credentials.
public struct ICEServers: SignalMessage, Equatable {
    public static let type = "ice.servers"
    public var iceServers: [ICEServer]
    public init(iceServers: [ICEServer]) { self.iceServers = iceServers }
}

public struct ParticipantJoined: SignalMessage, Equatable {
    public static let type = "participant.joined"
    public var participant: ParticipantInfo
    public init(participant: ParticipantInfo) { self.participant = participant }
}

public struct ParticipantUpdated: SignalMessage, Equatable {
    public static let type = "participant.updated"
    public var participant: ParticipantInfo
    public init(participant: ParticipantInfo) { self.participant = participant }
}

/// Why a participant left, as sent in `participant.left`.
public enum LeaveReason: String, Codable, Sendable {
    case left
    case disconnected
    case duplicateIdentity = "duplicate_identity"
    case kicked
    case roomClosed = "room_closed"
    case slowConsumer = "slow_consumer"
}

public struct ParticipantLeft: SignalMessage, Equatable {
    public static let type = "participant.left"
    /// The participant's sid.
    public var participant: String
    public var identity: String
    public var reason: LeaveReason

    public init(participant: String, identity: String, reason: LeaveReason) {
        self.participant = participant
        self.identity = identity
        self.reason = reason
    }
}

public struct RoomClosed: SignalMessage, Equatable {
    public static let type = "room.closed"
    public var reason: String
    public init(reason: String) { self.reason = reason }
}

/// The server asks the client to connect again, fresh (no resume): its node is draining and the
/// room now lives on the node at `url` (its HTTP URL; signaling is at `/v1/rtc` there). Without
/// `url`, the client reconnects where it connected before.
public struct Reconnect: SignalMessage, Equatable {
    public static let type = "reconnect"
    public var reason: String
    public var url: String?
    public init(reason: String, url: String?) {
        self.reason = reason
        self.url = url
    }
}

/// A recording changed state (started, stopped, failed); also the reply to `recording.start`/`.stop`.
public struct RecordingEvent: SignalMessage, Equatable {
    public static let type = "recording"
    public var recording: RecordingInfo
    public init(recording: RecordingInfo) { self.recording = recording }
}

public struct ChatEvent: SignalMessage, Equatable {
    public static let type = "chat"
    public var message: ChatMessage
    public init(message: ChatMessage) { self.message = message }
}

public struct ChatAck: SignalMessage, Equatable {
    public static let type = "chat.ack"
    public var message: ChatMessage
    /// True when this `clientMsgId` had been sent before: `message` is the stored original.
    public var duplicate: Bool

    public init(message: ChatMessage, duplicate: Bool) {
        self.message = message
        self.duplicate = duplicate
    }
}

public struct ChatHistory: SignalMessage, Equatable {
    public static let type = "chat.history"
    public var messages: [ChatMessage]
    public var hasMore: Bool

    public init(_ page: ChatPage) {
        messages = page.messages
        hasMore = page.hasMore
    }
}

public struct TypingEvent: SignalMessage, Equatable {
    public static let type = "typing"
    /// The typing participant's sid.
    public var participant: String
    public var identity: String
    public var active: Bool

    public init(participant: String, identity: String, active: Bool) {
        self.participant = participant
        self.identity = identity
        self.active = active
    }
}

public struct PresenceEvent: SignalMessage, Equatable {
    public static let type = "presence"
    public var participant: String
    public var identity: String
    public var status: PresenceStatus
    public var text: String
    public var since: Int64

    public init(participant: String, identity: String, presence: Presence) {
        self.participant = participant
        self.identity = identity
        self.status = presence.status
        self.text = presence.text
        self.since = presence.since
    }
}

// MARK: Client → server

public struct Ping: SignalMessage, Equatable {
    public static let type = "ping"
    public init() {}
}

public struct Leave: SignalMessage, Equatable {
    public static let type = "leave"
    public init() {}
}

/// Asks for fresh TURN credentials before the ones from `joined` expire: a relayed client that
/// never reconnects would otherwise lose its relay when they do. Answered with `ICEServers`.
public struct ICEServersRequest: SignalMessage, Equatable {
    public static let type = "ice.servers"
    public init() {}
}

public struct ChatSend: SignalMessage, Equatable {
    public static let type = "chat.send"
    public var clientMsgId: String?
    public var text: String
    public var to: [String]?

    public init(text: String, clientMsgId: String? = nil, to: [String]? = nil) {
        self.text = text
        self.clientMsgId = clientMsgId
        self.to = to
    }
}

public struct ChatHistoryRequest: SignalMessage, Equatable {
    public static let type = "chat.history"
    /// Only messages with a lower `seq` (older), newest of them first in selection, oldest first in the reply.
    public var before: Int64?
    /// Only messages with a higher `seq`: what a reconnecting client missed.
    public var after: Int64?
    public var limit: Int?

    public init(before: Int64? = nil, after: Int64? = nil, limit: Int? = nil) {
        self.before = before
        self.after = after
        self.limit = limit
    }
}

public struct TypingRequest: SignalMessage, Equatable {
    public static let type = "typing"
    public var active: Bool
    public init(active: Bool) { self.active = active }
}

public struct PresenceSet: SignalMessage, Equatable {
    public static let type = "presence.set"
    public var status: PresenceStatus
    public var text: String?

    public init(status: PresenceStatus, text: String? = nil) {
        self.status = status
        self.text = text
    }
}

/// Which of a participant's two peer connections a media message is about.
public enum TransportTarget: String, Codable, Sendable {
    case publisher, subscriber
}

public struct SessionDescription: SignalMessage, Equatable {
    public static let type = "offer"
    public var target: TransportTarget
    public var sdp: String
    /// On an answer: the id of the offer it answers.
    public var re: String?
    /// A publisher's offer may say what each m-line (by mid) carries: `microphone`, `camera`,
    /// `screen_share` or `screen_share_audio`. Without it audio is the microphone, video the camera.
    public var sources: [String: String]?

    public init(target: TransportTarget, sdp: String, re: String? = nil, sources: [String: String]? = nil) {
        self.target = target
        self.sdp = sdp
        self.re = re
        self.sources = sources
    }
}

public struct SubscribeRequest: SignalMessage, Equatable {
    public static let type = "subscribe"
    public var tracks: [String]
    public var subscribe: Bool
    /// The most of these tracks the subscriber wants: a quality, or the size of the tile
    /// showing them (the server picks the smallest simulcast layer that covers it).
    public var quality: VideoQuality?
    public var maxWidth: Int?
    public var maxHeight: Int?

    public init(tracks: [String], subscribe: Bool, quality: VideoQuality? = nil, maxWidth: Int? = nil, maxHeight: Int? = nil) {
        self.tracks = tracks
        self.subscribe = subscribe
        self.quality = quality
        self.maxWidth = maxWidth
        self.maxHeight = maxHeight
    }
}

public enum VideoQuality: String, Codable, Sendable, Equatable, CaseIterable {
    case low, medium, high
}

/// To a subscriber: one of its tracks stopped because not even the lowest layer fits its
/// bandwidth (`track.paused`), or flows again (`track.resumed`).
public struct TrackPaused: SignalMessage, Equatable {
    public static let type = "track.paused"
    public var participant: String
    public var track: String

    public init(participant: String, track: String) {
        self.participant = participant
        self.track = track
    }
}

/// To a subscriber: the simulcast layer of a track it receives now (0 lowest), once the switch
/// happened, so an app shows what quality it gets.
public struct TrackLayer: SignalMessage, Equatable {
    public static let type = "track.layer"
    public var participant: String
    public var track: String
    public var layer: Int
    public var rid: String

    public init(participant: String, track: String, layer: Int, rid: String) {
        self.participant = participant
        self.track = track
        self.layer = layer
        self.rid = rid
    }
}

public struct TrackResumed: SignalMessage, Equatable {
    public static let type = "track.resumed"
    public var participant: String
    public var track: String

    public init(participant: String, track: String) {
        self.participant = participant
        self.track = track
    }
}

/// To a publisher (dynacast): send only these simulcast layers (rids) of `track`; the others
/// no subscriber needs now.
public struct PublisherLayers: SignalMessage, Equatable {
    public static let type = "publisher.layers"
    public var track: String
    public var active: [String]

    public init(track: String, active: [String]) {
        self.track = track
        self.active = active
    }
}

public struct MuteRequest: SignalMessage, Equatable {
    public static let type = "mute"
    public var track: String
    public var muted: Bool

    public init(track: String, muted: Bool) {
        self.track = track
        self.muted = muted
    }
}

public struct RecordingStartRequest: SignalMessage, Equatable {
    public static let type = "recording.start"
    public var mode: String?
}

public struct RecordingStopRequest: SignalMessage, Equatable {
    public static let type = "recording.stop"
    public var recording: String
}

/// The server's answer to a publisher offer: the SDP and the tracks each sending m-line became.
public struct AnswerMessage: SignalMessage, Equatable {
    public static let type = "answer"
    public var target: TransportTarget
    public var sdp: String
    public var tracks: [TrackInfo]?

    public init(target: TransportTarget, sdp: String, tracks: [TrackInfo]? = nil) {
        self.target = target
        self.sdp = sdp
        self.tracks = tracks
    }
}

/// The server's offer on a subscriber transport (sent with an `id` the answer must `re`).
public struct OfferMessage: SignalMessage, Equatable {
    public static let type = "offer"
    public var target: TransportTarget
    public var sdp: String

    public init(target: TransportTarget, sdp: String) {
        self.target = target
        self.sdp = sdp
    }
}

/// An ICE candidate as RTCIceCandidateInit carries it.
public struct CandidateInit: Codable, Sendable, Equatable {
    public var candidate: String
    public var sdpMid: String?
    public var sdpMLineIndex: Int?

    public init(candidate: String, sdpMid: String?, sdpMLineIndex: Int?) {
        self.candidate = candidate
        self.sdpMid = sdpMid
        self.sdpMLineIndex = sdpMLineIndex
    }
}

/// Trickle ICE, both ways; a null candidate ends gathering.
public struct CandidateMessage: SignalMessage, Equatable {
    public static let type = "candidate"
    public var target: TransportTarget
    public var candidate: CandidateInit?

    public init(target: TransportTarget, candidate: CandidateInit?) {
        self.target = target
        self.candidate = candidate
    }

    enum CodingKeys: String, CodingKey { case target, candidate }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(target, forKey: .target)
        try container.encode(candidate, forKey: .candidate)  // null, not absent, ends gathering
    }
}

public struct TrackPublished: SignalMessage, Equatable {
    public static let type = "track.published"
    public var participant: String
    public var track: TrackInfo

    public init(participant: String, track: TrackInfo) {
        self.participant = participant
        self.track = track
    }
}

public struct TrackUnpublished: SignalMessage, Equatable {
    public static let type = "track.unpublished"
    public var participant: String
    public var track: String

    public init(participant: String, track: String) {
        self.participant = participant
        self.track = track
    }
}

public struct TrackMuted: SignalMessage, Equatable {
    public static let type = "track.muted"
    public var participant: String
    public var track: String
    public var muted: Bool

    public init(participant: String, track: String, muted: Bool) {
        self.participant = participant
        self.track = track
        self.muted = muted
    }
}

public struct SpeakerLevel: Codable, Sendable, Equatable {
    public var participant: String
    public var level: Double

    public init(participant: String, level: Double) {
        self.participant = participant
        self.level = level
    }
}

/// The loudest participants, at most every `rtc.speakersInterval`; an empty list when all are quiet.
public struct SpeakersEvent: SignalMessage, Equatable {
    public static let type = "speakers"
    public var speakers: [SpeakerLevel]

    public init(speakers: [SpeakerLevel]) { self.speakers = speakers }
}

/// Every request a client may send, decoded from one text frame.
public enum ClientRequest: Sendable, Equatable {
    case ping
    case leave
    case iceServers
    case chatSend(ChatSend)
    case chatHistory(ChatHistoryRequest)
    case typing(TypingRequest)
    case presenceSet(PresenceSet)
    case offer(SessionDescription)
    case answer(SessionDescription)
    case candidate(CandidateMessage)
    case subscribe(SubscribeRequest)
    case mute(MuteRequest)
    case recordingStart(RecordingStartRequest)
    case recordingStop(RecordingStopRequest)
}
