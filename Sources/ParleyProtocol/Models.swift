/// Value types of the wire contract (PROTOCOL.md). Field names are stable: add, never rename.

public enum ErrorCode: String, Codable, Sendable, CaseIterable {
    case unauthorized
    case forbidden
    case badRequest = "bad_request"
    case notFound = "not_found"
    case rateLimited = "rate_limited"
    case roomFull = "room_full"
    case conflict
    case tooLarge = "too_large"
    case `internal`
    /// A service the request needs (the store) cannot be reached now; retrying later works.
    case unavailable
    /// A storage limit is reached: a room's recording quota, a nearly full disk.
    case insufficientStorage = "insufficient_storage"

    /// The HTTP status the REST API answers with for this code.
    public var httpStatus: Int {
        switch self {
        case .unauthorized: 401
        case .forbidden: 403
        case .badRequest: 400
        case .notFound: 404
        case .rateLimited: 429
        case .roomFull: 409
        case .conflict: 409
        case .tooLarge: 413
        case .internal: 500
        case .unavailable: 503
        case .insufficientStorage: 507
        }
    }
}

/// An error to send to a client: its code and a message a developer can act on.
public struct ProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    public var code: ErrorCode
    public var message: String

    public init(_ code: ErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}

public struct RoomInfo: Codable, Sendable, Equatable {
    public var sid: String
    public var name: String
    public var metadata: String
    /// Milliseconds since the Unix epoch.
    public var createdAt: Int64
    public var maxParticipants: Int?
    /// Seconds an empty room stays open.
    public var emptyTimeout: Int?
    public var numParticipants: Int?
    /// The recording mode started with the first participant, if any.
    public var autoRecord: String?
    /// The node that holds the room (`server.nodeName`; Parley's addition, for clusters).
    public var node: String?

    public init(
        sid: String, name: String, metadata: String, createdAt: Int64,
        maxParticipants: Int? = nil, emptyTimeout: Int? = nil, numParticipants: Int? = nil, autoRecord: String? = nil,
        node: String? = nil
    ) {
        self.autoRecord = autoRecord
        self.node = node
        self.sid = sid
        self.name = name
        self.metadata = metadata
        self.createdAt = createdAt
        self.maxParticipants = maxParticipants
        self.emptyTimeout = emptyTimeout
        self.numParticipants = numParticipants
    }
}

/// A node of the cluster, as `GET /v1/nodes` lists it.
public struct NodeInfo: Codable, Sendable, Equatable {
    public var name: String
    public var signalingURL: String
    public var mediaAddresses: [String]
    public var turnAddress: String
    public var participants: Int
    public var rooms: Int
    /// Cores of CPU the node's process used over its last renewal.
    public var cpu: Double
    /// Cores the node's machine has.
    public var cores: Int
    public var maxParticipants: Int
    public var draining: Bool
    public var startedAt: Int64
    /// Milliseconds since the epoch until which the node counts as alive.
    public var leaseUntil: Int64

    public init(
        name: String, signalingURL: String, mediaAddresses: [String], turnAddress: String, participants: Int, rooms: Int, cpu: Double,
        cores: Int, maxParticipants: Int, draining: Bool, startedAt: Int64, leaseUntil: Int64
    ) {
        self.name = name
        self.signalingURL = signalingURL
        self.mediaAddresses = mediaAddresses
        self.turnAddress = turnAddress
        self.participants = participants
        self.rooms = rooms
        self.cpu = cpu
        self.cores = cores
        self.maxParticipants = maxParticipants
        self.draining = draining
        self.startedAt = startedAt
        self.leaseUntil = leaseUntil
    }
}

public enum PresenceStatus: String, Codable, Sendable, CaseIterable {
    case online, away, busy, dnd
}

public struct Presence: Codable, Sendable, Equatable {
    public var status: PresenceStatus
    public var text: String
    /// Milliseconds since the Unix epoch when this status was set.
    public var since: Int64

    public init(status: PresenceStatus, text: String, since: Int64) {
        self.status = status
        self.text = text
        self.since = since
    }
}

public struct TrackInfo: Codable, Sendable, Equatable {
    public var sid: String
    public var kind: String
    public var source: String
    public var muted: Bool
    public var mid: String?
    /// Simulcast layers, lowest first (absent for a single-layer track).
    public var layers: [VideoLayer]?

    public init(sid: String, kind: String, source: String, muted: Bool, mid: String? = nil, layers: [VideoLayer]? = nil) {
        self.sid = sid
        self.kind = kind
        self.source = source
        self.muted = muted
        self.mid = mid
        self.layers = layers
    }
}

/// One simulcast layer of a video track: its rid and, once a keyframe told, its size.
public struct VideoLayer: Codable, Sendable, Equatable {
    public var rid: String
    /// Spatial index, 0 lowest.
    public var index: Int
    public var width: Int?
    public var height: Int?

    public init(rid: String, index: Int, width: Int? = nil, height: Int? = nil) {
        self.rid = rid
        self.index = index
        self.width = width
        self.height = height
    }
}

public struct ParticipantInfo: Codable, Sendable, Equatable {
    public var sid: String
    public var identity: String
    public var name: String
    public var metadata: String
    public var presence: Presence?
    public var tracks: [TrackInfo]?
    /// Milliseconds since the Unix epoch.
    public var joinedAt: Int64?
    /// True while the participant's connection is lost and it may still resume.
    public var reconnecting: Bool?

    public init(
        sid: String, identity: String, name: String, metadata: String, presence: Presence? = nil,
        tracks: [TrackInfo]? = nil, joinedAt: Int64? = nil, reconnecting: Bool? = nil
    ) {
        self.sid = sid
        self.identity = identity
        self.name = name
        self.metadata = metadata
        self.presence = presence
        self.tracks = tracks
        self.joinedAt = joinedAt
        self.reconnecting = reconnecting
    }
}

public struct ChatSender: Codable, Sendable, Equatable {
    public var sid: String
    public var identity: String
    public var name: String

    public init(sid: String, identity: String, name: String) {
        self.sid = sid
        self.identity = identity
        self.name = name
    }
}

public struct ChatMessage: Codable, Sendable, Equatable {
    public var id: String
    public var seq: Int64
    public var from: ChatSender
    public var text: String
    /// Identities of a direct message's recipients; nil for a message to the whole room.
    public var to: [String]?
    /// Milliseconds since the Unix epoch when the server stored it.
    public var ts: Int64
    public var clientMsgId: String?
    /// True for messages posted through the admin API.
    public var system: Bool?

    public init(
        id: String, seq: Int64, from: ChatSender, text: String, to: [String]?, ts: Int64,
        clientMsgId: String?, system: Bool? = nil
    ) {
        self.id = id
        self.seq = seq
        self.from = from
        self.text = text
        self.to = to
        self.ts = ts
        self.clientMsgId = clientMsgId
        self.system = system
    }

    /// Whether `identity` may see this message: everyone for room messages, the sender and the
    /// named recipients for direct ones.
    public func isVisible(to identity: String) -> Bool {
        guard let to else { return true }
        return from.identity == identity || to.contains(identity)
    }
}

public struct ChatPage: Codable, Sendable, Equatable {
    public var messages: [ChatMessage]
    public var hasMore: Bool

    public init(messages: [ChatMessage], hasMore: Bool) {
        self.messages = messages
        self.hasMore = hasMore
    }
}

public struct ICEServer: Codable, Sendable, Equatable {
    public var urls: [String]
    public var username: String?
    public var credential: String?

    public init(urls: [String], username: String? = nil, credential: String? = nil) {
        self.urls = urls
        self.username = username
        self.credential = credential
    }
}

public struct ServerInfo: Codable, Sendable, Equatable {
    public var version: String
    public var node: String

    public init(version: String, node: String) {
        self.version = version
        self.node = node
    }
}

public enum ParleyVersion {
    public static let current = "0.1.0"
}

/// One file of a recording.
public struct RecordingFileInfo: Codable, Sendable, Equatable {
    public var name: String
    /// The track it holds; nil for the room's mix.
    public var track: String?
    public var participant: String?
    public var kind: String
    /// `ogg/opus`, `webm/vp8`, `matroska/h264`.
    public var format: String
    public var bytes: Int64
    public var durationMs: Int64
    /// Where the track starts on the recording's timeline.
    public var offsetMs: Int64

    public init(
        name: String, track: String?, participant: String?, kind: String, format: String, bytes: Int64, durationMs: Int64, offsetMs: Int64
    ) {
        self.name = name
        self.track = track
        self.participant = participant
        self.kind = kind
        self.format = format
        self.bytes = bytes
        self.durationMs = durationMs
        self.offsetMs = offsetMs
    }
}

/// A recording as `recording` events, the REST API and `recordings` rows describe it.
public struct RecordingInfo: Codable, Sendable, Equatable {
    public var id: String
    public var room: String
    /// `starting`, `active`, `stopped`, `failed`, or `interrupted` (its node stopped or was lost
    /// first; the files hold what was flushed).
    public var state: String
    public var mode: String
    public var startedAt: Int64
    public var stoppedAt: Int64?
    public var files: [RecordingFileInfo]
    public var bytes: Int64
    public var durationMs: Int64
    public var error: String?
    /// The node that writes it, whose disk holds its files.
    public var node: String?
    /// Why a stopped recording stopped when nobody asked it to: `max_duration`, `room_quota`,
    /// `disk_full` (see `recording.*` in docs/config.md).
    public var stopReason: String?

    public init(
        id: String, room: String, state: String, mode: String, startedAt: Int64, stoppedAt: Int64? = nil,
        files: [RecordingFileInfo] = [], bytes: Int64 = 0, durationMs: Int64 = 0, error: String? = nil, node: String? = nil,
        stopReason: String? = nil
    ) {
        self.node = node
        self.stopReason = stopReason
        self.id = id
        self.room = room
        self.state = state
        self.mode = mode
        self.startedAt = startedAt
        self.stoppedAt = stoppedAt
        self.files = files
        self.bytes = bytes
        self.durationMs = durationMs
        self.error = error
    }
}

/// The admin API's view of one participant's media: what it publishes (each layer as it
/// arrives) and what it receives (the layer chosen for it, from its estimated bandwidth).
public struct ParticipantMediaInfo: Codable, Sendable, Equatable {
    public var participant: ParticipantInfo
    public var downlink: Downlink
    public var publications: [Publication]
    public var subscriptions: [Subscription]

    public init(participant: ParticipantInfo, downlink: Downlink, publications: [Publication], subscriptions: [Subscription]) {
        self.participant = participant
        self.downlink = downlink
        self.publications = publications
        self.subscriptions = subscriptions
    }

    public struct Downlink: Codable, Sendable, Equatable {
        /// Bits per second the server may send it: the TWCC estimate, else its REMB.
        public var estimate: Int
        /// "twcc" once transport-wide feedback arrived, "remb", or "none" (not yet known).
        public var source: String
        public var feedbackPackets: Int
        public var probeBytes: Int
        /// Bits per second of video sent to it over the last second.
        public var sending: Int?
        /// REMB only: the rate being tried while its receiver shows no congestion (its REMB
        /// cannot rise above what it receives), and the trials that found congestion.
        public var trialGoal: Int?
        public var failedTrials: Int?

        public init(
            estimate: Int, source: String, feedbackPackets: Int, probeBytes: Int, sending: Int? = nil, trialGoal: Int? = nil,
            failedTrials: Int? = nil
        ) {
            self.estimate = estimate
            self.source = source
            self.feedbackPackets = feedbackPackets
            self.probeBytes = probeBytes
            self.sending = sending
            self.trialGoal = trialGoal
            self.failedTrials = failedTrials
        }
    }

    public struct Publication: Codable, Sendable, Equatable {
        public var track: String
        public var kind: String
        public var layers: [Layer]

        public init(track: String, kind: String, layers: [Layer]) {
            self.track = track
            self.kind = kind
            self.layers = layers
        }
    }

    public struct Layer: Codable, Sendable, Equatable {
        public var rid: String?
        public var index: Int
        public var ssrc: UInt32?
        public var width: Int?
        public var height: Int?
        /// Bits per second over the last second, all temporal layers.
        public var bitrate: Int
        public var active: Bool
        /// Whether a subscriber (or the recorder) needs it: dynacast turns the others off.
        public var requested: Bool
        public var packets: Int
        /// Retransmissions that came on the RTX stream.
        public var repairs: Int

        public init(
            rid: String?, index: Int, ssrc: UInt32?, width: Int?, height: Int?, bitrate: Int, active: Bool, requested: Bool, packets: Int,
            repairs: Int
        ) {
            self.rid = rid
            self.index = index
            self.ssrc = ssrc
            self.width = width
            self.height = height
            self.bitrate = bitrate
            self.active = active
            self.requested = requested
            self.packets = packets
            self.repairs = repairs
        }
    }

    public struct Subscription: Codable, Sendable, Equatable {
        public var track: String
        public var publisher: String
        public var kind: String
        /// The spatial layer being sent (-1: none yet, or paused) and the one it is moving to.
        public var layer: Int
        public var targetLayer: Int
        public var maxTemporalLayer: Int
        public var paused: Bool
        public var switches: Int
        /// Retransmissions sent to it (on its RTX stream when it negotiated one).
        public var retransmissions: Int

        public init(
            track: String, publisher: String, kind: String, layer: Int, targetLayer: Int, maxTemporalLayer: Int, paused: Bool, switches: Int,
            retransmissions: Int
        ) {
            self.track = track
            self.publisher = publisher
            self.kind = kind
            self.layer = layer
            self.targetLayer = targetLayer
            self.maxTemporalLayer = maxTemporalLayer
            self.paused = paused
            self.switches = switches
            self.retransmissions = retransmissions
        }
    }
}
