import Auth
import Logging
import ParleyProtocol
import Store
import WebRTC

/// What media needs at every room: the DTLS identity made at start (its fingerprint goes in
/// every SDP) and the `rtc.*` options.
public struct MediaServices: Sendable {
    public let dtls: DTLSContext

    public init() throws {
        dtls = try DTLSContext(certificate: DTLSCertificate())
    }

    public var fingerprint: CertificateFingerprint { dtls.certificate.fingerprint }
}

/// What every room shares: settings, storage, time, identifiers, metrics and logging.
public struct RoomServices: Sendable {
    public var config: ParleyConfig
    public var chat: ChatLog
    public var clock: any ServerClock
    public var ids: IDGenerator
    public var metrics: ServerMetrics
    public var logger: Logger
    public var server: ServerInfo
    public var media: MediaServices
    /// ICE servers handed out in `joined` (TURN credentials come with the TURN server).
    public var iceServers: @Sendable (_ identity: String) -> [ICEServer]
    /// Where recordings are listed; nil when this server records nothing.
    public var recordings: RecordingLog?
    /// Where rooms report what happens in them (webhooks and a cluster subscribe).
    public var events: RoomEvents

    public init(
        config: ParleyConfig, chat: any ChatRepository, clock: any ServerClock, ids: IDGenerator,
        metrics: ServerMetrics, logger: Logger, server: ServerInfo, media: MediaServices,
        iceServers: @escaping @Sendable (String) -> [ICEServer] = { _ in [] }, recordings: (any RecordingRepository)? = nil,
        events: RoomEvents = RoomEvents()
    ) {
        self.config = config
        self.chat = ChatLog(chat)
        self.clock = clock
        self.ids = ids
        self.metrics = metrics
        self.logger = logger
        self.server = server
        self.media = media
        self.iceServers = iceServers
        self.recordings = recordings.map(RecordingLog.init)
        self.events = events
    }
}

/// Options a room is created with (by first join or by the admin API).
public struct RoomOptions: Sendable, Equatable {
    public var maxParticipants: Int
    public var emptyTimeout: Duration
    public var metadata: String
    /// A recording mode (`tracks`, `mix`, `both`) started with the room's first participant; nil: none.
    public var autoRecord: String?

    public init(maxParticipants: Int, emptyTimeout: Duration, metadata: String = "", autoRecord: String? = nil) {
        self.maxParticipants = maxParticipants
        self.emptyTimeout = emptyTimeout
        self.metadata = metadata
        self.autoRecord = autoRecord
    }
}
