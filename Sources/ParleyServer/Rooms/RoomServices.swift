import Auth
import Logging
import NIOConcurrencyHelpers
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
    /// Identities kicked with a ban, kept outside the rooms so a ban outlives an emptied room.
    public var bans = RoomBans()

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

/// Who may not join a room again until when: a kick with a ban is not undone by an instant rejoin
/// with the same token. Times are the server clock's; expired bans go as they are looked at.
public final class RoomBans: Sendable {
    private let bans = NIOLockedValueBox<[String: Duration]>([:])

    public init() {}

    private static func key(_ room: String, _ identity: String) -> String { room + "\u{0}" + identity }

    public func ban(_ identity: String, from room: String, until: Duration, now: Duration) {
        bans.withLockedValue { bans in
            bans[Self.key(room, identity)] = until
            // Bounded by the live bans: past a thousand, each new one sweeps the expired.
            if bans.count > 1024 { bans = bans.filter { $0.value > now } }
        }
    }

    /// How long `identity` stays banned from `room`, nil when it may join.
    public func remaining(_ identity: String, in room: String, now: Duration) -> Duration? {
        bans.withLockedValue { bans in
            let key = Self.key(room, identity)
            guard let until = bans[key] else { return nil }
            if until <= now { bans[key] = nil; return nil }
            return until - now
        }
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
