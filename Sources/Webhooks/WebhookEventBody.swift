/// A webhook's JSON body in LiveKit's shape (its `WebhookEvent` in proto3 JSON: lowerCamelCase
/// names, 64-bit integers as strings allowed either way, enums by name), so receivers written for
/// LiveKit parse it. Times are seconds since 1970 as LiveKit sends them.
public struct WebhookEventBody: Codable, Sendable, Equatable {
    public var event: String
    public var id: String
    public var createdAt: Int64
    public var room: Room?
    public var participant: Participant?
    public var track: Track?
    public var egressInfo: Egress?

    public init(event: String, id: String, createdAt: Int64, room: Room?, participant: Participant? = nil, track: Track? = nil,
                egressInfo: Egress? = nil) {
        self.event = event
        self.id = id
        self.createdAt = createdAt
        self.room = room
        self.participant = participant
        self.track = track
        self.egressInfo = egressInfo
    }

    public struct Room: Codable, Sendable, Equatable {
        public var sid: String
        public var name: String
        public var emptyTimeout: Int?
        public var maxParticipants: Int?
        public var creationTime: Int64?
        public var metadata: String?
        public var numParticipants: Int?

        public init(sid: String, name: String, emptyTimeout: Int? = nil, maxParticipants: Int? = nil, creationTime: Int64? = nil,
                    metadata: String? = nil, numParticipants: Int? = nil) {
            self.sid = sid
            self.name = name
            self.emptyTimeout = emptyTimeout
            self.maxParticipants = maxParticipants
            self.creationTime = creationTime
            self.metadata = metadata
            self.numParticipants = numParticipants
        }
    }

    public struct Participant: Codable, Sendable, Equatable {
        public var sid: String
        public var identity: String
        public var name: String
        public var metadata: String
        /// `JOINED`, `ACTIVE` or `DISCONNECTED`.
        public var state: String
        public var joinedAt: Int64?
        public var tracks: [Track]
        public var isPublisher: Bool
        public var permission: Permission?
        /// LiveKit's `DisconnectReason` name, on `participant_left`.
        public var disconnectReason: String?

        public init(sid: String, identity: String, name: String, metadata: String, state: String, joinedAt: Int64?, tracks: [Track],
                    isPublisher: Bool, permission: Permission?, disconnectReason: String? = nil) {
            self.sid = sid
            self.identity = identity
            self.name = name
            self.metadata = metadata
            self.state = state
            self.joinedAt = joinedAt
            self.tracks = tracks
            self.isPublisher = isPublisher
            self.permission = permission
            self.disconnectReason = disconnectReason
        }
    }

    public struct Permission: Codable, Sendable, Equatable {
        public var hidden: Bool
        public var recorder: Bool

        public init(hidden: Bool, recorder: Bool) {
            self.hidden = hidden
            self.recorder = recorder
        }
    }

    public struct Track: Codable, Sendable, Equatable {
        public var sid: String
        /// `AUDIO` or `VIDEO`.
        public var type: String
        /// `MICROPHONE`, `CAMERA`, `SCREEN_SHARE`, `SCREEN_SHARE_AUDIO` or `UNKNOWN`.
        public var source: String
        public var muted: Bool
        public var simulcast: Bool

        public init(sid: String, type: String, source: String, muted: Bool, simulcast: Bool) {
            self.sid = sid
            self.type = type
            self.source = source
            self.muted = muted
            self.simulcast = simulcast
        }
    }

    /// A recording, as LiveKit's `EgressInfo` (times in nanoseconds, as LiveKit's).
    public struct Egress: Codable, Sendable, Equatable {
        public var egressId: String
        public var roomId: String
        public var roomName: String
        /// `EGRESS_ACTIVE`, `EGRESS_COMPLETE` or `EGRESS_FAILED`.
        public var status: String
        public var startedAt: Int64
        public var endedAt: Int64?
        public var error: String?

        public init(egressId: String, roomId: String, roomName: String, status: String, startedAt: Int64, endedAt: Int64?, error: String?) {
            self.egressId = egressId
            self.roomId = roomId
            self.roomName = roomName
            self.status = status
            self.startedAt = startedAt
            self.endedAt = endedAt
            self.error = error
        }
    }
}
