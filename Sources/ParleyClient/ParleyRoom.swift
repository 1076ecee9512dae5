import Foundation
import Logging
import NIOSSL
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ParleyProtocol
import RTP

/// The client SDK's room: connect with a URL and a token, then read what happens as an
/// AsyncSequence of events, publish a (synthetic) microphone, receive everyone's media, chat and
/// set presence. Media runs on one event loop of the room's own; signaling on the WebSocket.
///
/// When the signaling connection drops, the room reconnects with the same token and resumes its
/// session (same sid, tracks and subscriptions); media keeps flowing meanwhile, since the UDP
/// transports do not depend on the WebSocket. If the server has let the session go, the room
/// joins afresh, with new media transports, and publishes again what it published.
public final class ParleyRoom: @unchecked Sendable {
    public enum Event: Sendable {
        case participantJoined(ParticipantInfo)
        case participantLeft(sid: String, identity: String)
        case trackPublished(participant: String, track: TrackInfo)
        case trackUnpublished(participant: String, track: String)
        case chat(ChatMessage)
        case presence(PresenceEvent)
        case typing(TypingEvent)
        case trackMuted(participant: String, track: String, muted: Bool)
        case speakers(SpeakersEvent)
        case recording(RecordingInfo)
        /// Not even the lowest layer of a track we receive fits our bandwidth: nothing of it
        /// comes until `trackResumed`.
        case trackPaused(participant: String, track: String)
        case trackResumed(participant: String, track: String)
        /// Dynacast: of our simulcast `track`, only the layers named in `active` are needed; the
        /// room has paused the others (`PublisherConnection.pausedLayers`) until they are named again.
        case publisherLayers(track: String, active: [String])
        /// The signaling connection dropped; attempt `attempt` to get back is under way.
        case reconnecting(attempt: Int)
        /// Signaling is back. `resumed`: the server kept the session. Otherwise it is a new
        /// one (new sid), with new media transports. Changes missed while away (participants,
        /// tracks, presence, chat) came as events just before this one.
        case reconnected(resumed: Bool)
        case closed(reason: String)
        /// Anything else the server sent, raw.
        case other(type: String, json: String)
    }

    /// How the room gets back after its signaling connection drops: attempts spaced by a
    /// doubling delay (the first at once), then it gives up with `.closed(reason: "reconnect_failed")`.
    public struct ReconnectPolicy: Sendable {
        public var maxAttempts: Int
        public var initialDelay: Duration
        public var maxDelay: Duration
        /// Waits out a delay between attempts (tests pass one they control).
        public var sleep: @Sendable (Duration) async throws -> Void

        /// The defaults try for about half a minute, longer than the server's default resume window.
        public init(
            maxAttempts: Int = 10, initialDelay: Duration = .milliseconds(250), maxDelay: Duration = .seconds(5),
            sleep: @escaping @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) }
        ) {
            self.maxAttempts = maxAttempts
            self.initialDelay = initialDelay
            self.maxDelay = maxDelay
            self.sleep = sleep
        }

        /// Never reconnects: a drop ends the room.
        public static let never = ReconnectPolicy(maxAttempts: 0)

        /// Nothing before the first attempt (a cut connection is often back at once), then
        /// `initialDelay`, doubling up to `maxDelay`.
        public func delay(beforeAttempt attempt: Int) -> Duration {
            guard attempt > 1 else { return .zero }
            var delay = initialDelay
            for _ in 0..<(attempt - 2) where delay < maxDelay { delay *= 2 }
            return min(delay, maxDelay)
        }
    }

    /// Called on the media loop, another thread than the caller's.
    public typealias MediaHandler = @Sendable (UnsafeRawBufferPointer, RTPHeader, SubscriberConnection.Track) -> Void

    private struct State {
        var joined: Joined
        var signaling: SignalingClient
        var room: RoomState
        var subscriber: SubscriberConnection
        var publisher: PublisherConnection?
        /// What `publish` published (to publish again in a new session) and the tracks it made.
        var published: Publishing?
        var publishedTracks: [TrackInfo] = []
        var mediaHandler: MediaHandler?
        var leaving = false
        /// The server ended the session (room closed, kicked, replaced): nothing to come back to.
        var ended = false
        /// False between a drop and the reconnection that follows it.
        var signalingUp = true
        /// Where the server sent the room (`reconnect`, a draining node): the next attempt goes there.
        var redirect: String?
        /// The room is over (left, closed, or gave up reconnecting): requests fail at once.
        var over = false
        /// Requests made while reconnecting, waiting for the next connection.
        var signalingWaiters: [Int: CheckedContinuation<SignalingClient, any Error>] = [:]
        var nextWaiter = 0

        /// The connection a request may use now (not `dead`), an error once the room is over, or
        /// nil while reconnecting.
        func usableSignaling(replacing dead: SignalingClient?) -> Result<SignalingClient, any Error>? {
            if over || leaving { return .failure(SignalingClientError.closed) }
            if signalingUp, signaling !== dead { return .success(signaling) }
            return nil
        }
    }

    /// How long a request made while reconnecting waits for the connection to come back.
    public var reconnectWait: Duration = .seconds(30)

    public let events: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation
    private let state: NIOLockedValueBox<State>
    private let url: String
    /// `url` first, then the other nodes of a cluster the app named: a reconnection tries them in
    /// turn, so losing the node it connected to does not end the room.
    private let urls: [String]
    private let token: String
    /// How `wss://` trusts the server (nil: the system's trust store).
    private let tls: TLSConfiguration?
    private let iceTransportPolicy: ICETransportPolicy
    /// The ICE servers the app gave in place of `joined`'s; nil uses the server's.
    private let iceServers: [ICEServer]?
    private let reconnectPolicy: ReconnectPolicy
    private let firewall: SimulatedFirewall
    private let clock: MediaClock
    private let logger: Logger
    private let ownedGroup: MultiThreadedEventLoopGroup
    private var reader: Task<Void, Never>?
    /// Fetches new TURN credentials before the current ones expire (see `refreshICEServers`).
    private var credentialRefresher: Task<Void, Never>?

    private init(
        joined: Joined, signaling: SignalingClient, subscriber: SubscriberConnection, urls: [String], token: String, tls: TLSConfiguration?,
        iceTransportPolicy: ICETransportPolicy, iceServers: [ICEServer]?, reconnectPolicy: ReconnectPolicy, firewall: SimulatedFirewall,
        clock: @escaping MediaClock, logger: Logger, group: MultiThreadedEventLoopGroup
    ) {
        state = NIOLockedValueBox(State(joined: joined, signaling: signaling, room: RoomState(joined: joined), subscriber: subscriber))
        self.url = urls[0]
        self.urls = urls
        self.token = token
        self.tls = tls
        self.iceTransportPolicy = iceTransportPolicy
        self.iceServers = iceServers
        self.reconnectPolicy = reconnectPolicy
        self.firewall = firewall
        self.clock = clock
        self.logger = logger
        ownedGroup = group
        (events, continuation) = AsyncStream.makeStream(of: Event.self)
    }

    /// Joins the room the token names; media starts flowing as the server offers tracks.
    ///
    /// `iceTransportPolicy: .relay` sends all media through a TURN relay: the server's own, from
    /// `joined`'s ICE servers, unless `iceServers` names others. Each media transport allocates
    /// its relay before it is used, so a refused credential or a silent TURN server throws here
    /// (or from `publish`). Under `.all` a transport whose checks to the server go unanswered
    /// for two seconds tries a relay on the same TURN server too.
    ///
    /// The server's TURN credentials expire (`turn.credentialTTL`); unless `refreshesTURNCredentials`
    /// is false, the room asks for new ones (`ice.servers`) when four fifths of their time is up
    /// and moves its relays to them, so a relay outlives the credentials it was allocated with.
    ///
    /// `firewall` (tests and demos) drops what a firewall would: everything sent to the server
    /// directly (`.onlyTURN`), or all UDP (`.onlyTCP`, leaving TURN over TCP). `clock` paces the
    /// media transports (tests pass one they move).
    ///
    /// In a cluster, `alternateURLs` names other nodes: when the connection drops and `url` does
    /// not answer (its node is gone), reconnection attempts go round them; a node that drains sends
    /// the room to the node it picked (`reconnect`), which it then joins afresh and publishes again.
    ///
    /// `tls` is for `wss://` URLs whose certificate the system does not trust (a dev or private CA).
    public static func connect(
        url: String, alternateURLs: [String] = [], token: String, tls: TLSConfiguration? = nil, iceTransportPolicy: ICETransportPolicy = .all, iceServers: [ICEServer]? = nil,
        reconnectPolicy: ReconnectPolicy = ReconnectPolicy(), refreshesTURNCredentials: Bool = true, firewall: SimulatedFirewall = .none,
        clock: @escaping MediaClock = MediaClocks.system, logger: Logger = Logger(label: "parley.client")
    ) async throws -> ParleyRoom {
        let signaling = try await SignalingClient.connect(url: url, token: token, tls: tls, logger: logger)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            let joined = try await awaitJoined(on: signaling)
            let subscriber = try await makeSubscriber(
                on: group.next(), iceServers: iceServers ?? joined.iceServers, policy: iceTransportPolicy, firewall: firewall, clock: clock)
            let room = ParleyRoom(
                joined: joined, signaling: signaling, subscriber: subscriber, urls: [url] + alternateURLs, token: token, tls: tls,
                iceTransportPolicy: iceTransportPolicy, iceServers: iceServers, reconnectPolicy: reconnectPolicy, firewall: firewall,
                clock: clock, logger: logger, group: group)
            room.reader = Task { await room.run() }
            if refreshesTURNCredentials, iceServers == nil { room.credentialRefresher = Task { await room.refreshICEServers() } }
            return room
        } catch {
            // Joined but without media (a relay refused): leave, so the server holds no session to resume.
            try? await signaling.send(Leave())
            await signaling.close()
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private static func awaitJoined(on signaling: SignalingClient) async throws -> Joined {
        let first = try await signaling.next(timeout: .seconds(15))
        if first.type == ErrorReply.type { throw SignalingClientError.serverError(try first.decode(ErrorReply.self)) }
        return try first.decode(Joined.self)
    }

    private static func makeSubscriber(
        on loop: any EventLoop, iceServers: [ICEServer], policy: ICETransportPolicy, firewall: SimulatedFirewall, clock: @escaping MediaClock
    ) async throws -> SubscriberConnection {
        let subscriber = try await loop.submit { try SubscriberConnection(loop: loop, clock: clock) }.get()
        try await subscriber.start(iceServers: iceServers, policy: policy, firewall: firewall)
        return subscriber
    }

    /// The ICE servers for a new media transport: the app's, or the latest `joined`'s (fresh credentials).
    private var currentICEServers: [ICEServer] { iceServers ?? joined.iceServers }

    /// The `joined` of the current session (the latest reconnection's).
    public var joined: Joined { state.withLockedValue { $0.joined } }

    public var sid: String { joined.participant.sid }

    /// The other participants in the room, with their tracks and presence, as of the latest event.
    public var participants: [ParticipantInfo] { state.withLockedValue { $0.room.participants } }

    /// Received RTP of every subscribed track, on the media loop (the buffer lives during the call).
    public var onMedia: MediaHandler? {
        get { state.withLockedValue { $0.mediaHandler } }
        set {
            let subscriber = state.withLockedValue { state in
                state.mediaHandler = newValue
                return state.subscriber
            }
            Self.install(newValue, on: subscriber)
        }
    }

    private static func install(_ handler: MediaHandler?, on subscriber: SubscriberConnection) {
        subscriber.loop.execute { [subscriber] in
            subscriber.onRTP = { packet, header, track, _ in handler?(packet, header, track) }
        }
    }

    /// What a participant publishes: a microphone and, with `video`, a camera, fed by the
    /// senders `makeSenders` returns once the server has answered (on the publisher's loop).
    struct Publishing: Sendable {
        var video: Bool
        var simulcast = false
        var makeSenders: @Sendable (PublisherConnection) throws -> [any MediaSender]
    }

    /// Publishes a microphone track and, with `video`, a camera track, and sends what the senders
    /// from `makeSenders` produce (made on the publisher's loop once the answer is applied; each
    /// is asked on every tick for what is due); returns the tracks the server made. With
    /// `simulcast` the camera is offered as three layers with RTX and transport-cc (see
    /// `PublisherConnection`): the senders then send each layer's source. While the room is
    /// reconnecting it waits for the connection first; a new session publishes the same again.
    @discardableResult
    public func publish(
        video: Bool, simulcast: Bool = false, senders makeSenders: @escaping @Sendable (PublisherConnection) throws -> [any MediaSender]
    ) async throws -> [TrackInfo] {
        try await publish(Publishing(video: video, simulcast: simulcast, makeSenders: makeSenders), on: liveSignaling(replacing: nil))
    }

    @discardableResult
    private func publish(_ publishing: Publishing, on signaling: SignalingClient) async throws -> [TrackInfo] {
        let loop = state.withLockedValue { $0.subscriber.loop }
        let clock = clock
        let publisher = try await loop.submit { try PublisherConnection(loop: loop, clock: clock) }.get()
        try await publisher.start(iceServers: currentICEServers, policy: iceTransportPolicy, firewall: firewall)
        state.withLockedValue { $0.publisher = publisher }
        let offer = try await loop.submit { publisher.makeOffer(video: publishing.video, simulcast: publishing.simulcast) }.get()
        let answer = try await signaling.request(SessionDescription(target: .publisher, sdp: offer), timeout: .seconds(15))
            .decode(AnswerMessage.self)
        try await loop.submit {
            try publisher.apply(answer: answer.sdp)
            publisher.startSending(try publishing.makeSenders(publisher))
        }.get()
        let tracks = answer.tracks ?? []
        state.withLockedValue { state in
            state.published = publishing
            state.publishedTracks = tracks
        }
        return tracks
    }

    /// Sends a chat message to the room (or to `to` identities) and returns it as stored.
    /// While the room is reconnecting it waits (up to `reconnectWait`) and sends it then; a
    /// message whose connection dropped before the answer is sent again with the same id, which
    /// the server stores once.
    @discardableResult
    public func sendChat(_ text: String, to: [String]? = nil) async throws -> ChatMessage {
        let message = ChatSend(text: text, clientMsgId: UUID().uuidString, to: to)
        return try await withSignaling { try await $0.request(message).decode(ChatAck.self).message }
    }

    /// Sets this participant's presence (waits for a reconnection in progress, as `sendChat` does).
    public func setPresence(_ status: PresenceStatus, text: String? = nil) async throws {
        try await withSignaling { try await $0.send(PresenceSet(status: status, text: text)) }
    }

    /// Tells the others this participant is (or stopped) typing.
    public func setTyping(_ active: Bool) async throws {
        try await withSignaling { try await $0.send(TypingRequest(active: active)) }
    }

    /// Stops receiving the given tracks (`subscribe: false`) or receives them again; everything is
    /// received by default. The server re-offers the subscriber transport and the room answers.
    /// A `quality`, or the size of the tile showing them (`maxWidth`/`maxHeight`), caps the
    /// simulcast layer the server sends of them.
    public func subscribe(
        tracks: [String], _ subscribe: Bool = true, quality: VideoQuality? = nil, maxWidth: Int? = nil, maxHeight: Int? = nil
    ) async throws {
        let request = SubscribeRequest(tracks: tracks, subscribe: subscribe, quality: quality, maxWidth: maxWidth, maxHeight: maxHeight)
        try await withSignaling { try await $0.send(request) }
    }

    /// Mutes or unmutes one of this participant's published tracks; returns once the server has
    /// applied it (the others get `.trackMuted`).
    public func setMuted(_ muted: Bool, track: String) async throws {
        _ = try await withSignaling { try await $0.request(MuteRequest(track: track, muted: muted)).decode(TrackMuted.self) }
    }

    /// Runs `body` on the live signaling connection, waiting for one while reconnecting; when the
    /// connection drops under it, runs it again on the next one (the requests above are
    /// idempotent). Throws `SignalingClientError.closed` once the room is over.
    private func withSignaling<T>(_ body: (SignalingClient) async throws -> T) async throws -> T {
        var dead: SignalingClient?
        for _ in 0..<3 {
            let signaling = try await liveSignaling(replacing: dead)
            do {
                return try await body(signaling)
            } catch SignalingClientError.closed {
                dead = signaling
            }
        }
        throw SignalingClientError.closed
    }

    /// The current connection, unless it is `dead` or the room is reconnecting: then the next one.
    private func liveSignaling(replacing dead: SignalingClient?) async throws -> SignalingClient {
        let wait = reconnectWait
        if let ready = state.withLockedValue({ $0.usableSignaling(replacing: dead) }) { return try ready.get() }
        let id = state.withLockedValue { state in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        let timer = Task {
            try await Task.sleep(for: wait)
            self.releaseSignalingWaiter(id, with: .failure(SignalingClientError.timedOut("the connection to come back")))
        }
        defer { timer.cancel() }
        return try await withCheckedThrowingContinuation { continuation in
            let immediate = state.withLockedValue { state -> Result<SignalingClient, any Error>? in
                if let ready = state.usableSignaling(replacing: dead) { return ready }
                state.signalingWaiters[id] = continuation
                return nil
            }
            if let immediate { continuation.resume(with: immediate) }
        }
    }

    private func releaseSignalingWaiter(_ id: Int, with result: Result<SignalingClient, any Error>) {
        state.withLockedValue { $0.signalingWaiters.removeValue(forKey: id) }?.resume(with: result)
    }

    /// Marks the connection down (a drop) or up (with the connection waiters get), or the room over.
    private func setSignaling(up: Bool, over: Bool = false) {
        let (waiters, signaling) = state.withLockedValue { state in
            state.signalingUp = up
            if over { state.over = true }
            defer { if up || over { state.signalingWaiters.removeAll() } }
            return (up || over ? Array(state.signalingWaiters.values) : [], state.signaling)
        }
        for waiter in waiters { if over { waiter.resume(throwing: SignalingClientError.closed) } else { waiter.resume(returning: signaling) } }
    }

    /// Per-track statistics of what this room receives and sends.
    public func statistics() async -> MediaStatistics {
        let (subscriber, publisher, tracks) = state.withLockedValue { ($0.subscriber, $0.publisher, $0.publishedTracks) }
        var trackSids: [String: String] = [:]
        for track in tracks { if let mid = track.mid { trackSids[mid] = track.sid } }
        let sids = trackSids
        let statistics = try? await subscriber.loop.submit {
            MediaStatistics(
                received: subscriber.statistics(), sent: publisher?.statistics(trackSids: sids) ?? [],
                subscriberCandidateType: subscriber.transport.selectedCandidateType,
                publisherCandidateType: publisher?.transport.selectedCandidateType)
        }.get()
        return statistics ?? MediaStatistics()
    }

    /// Tests: simulated network loss on the media transports. `received` sees each incoming RTP
    /// packet with the track it belongs to, `sent` each outgoing one (retransmissions too) with
    /// its source; true drops the packet. Call after `publish` for `sent` to apply.
    public func simulateLoss(
        received: (@Sendable (RTPHeader, SubscriberConnection.Track?) -> Bool)? = nil,
        sent: (@Sendable (RTPHeader, PublisherConnection.Source?) -> Bool)? = nil
    ) async {
        let (subscriber, publisher) = state.withLockedValue { ($0.subscriber, $0.publisher) }
        try? await subscriber.loop.submit {
            subscriber.transport.dropsIncomingRTP = received.map { drops in { header in drops(header, subscriber.tracksBySSRC[header.ssrc]) } }
            publisher?.transport.dropsOutgoingRTP = sent.map { drops in
                { header in drops(header, publisher?.sources.first { $0.ssrc == header.ssrc }) }
            }
        }.get()
    }

    /// Drops the signaling connection as a lost network would; the room then reconnects as it
    /// does after any drop (`.reconnecting`, then `.reconnected`). For an app that knows its
    /// network changed, and for tests.
    public func reconnect() async {
        await currentSignaling.drop()
    }

    /// Leaves the room and closes the media transports.
    public func leave() async {
        let signaling = state.withLockedValue { state in
            state.leaving = true
            return state.signaling
        }
        reader?.cancel()
        credentialRefresher?.cancel()
        setSignaling(up: false, over: true)
        try? await signaling.send(Leave())
        await signaling.close()
        // The reader (or a reconnection in progress) may still submit work to the media loop:
        // it must be done before the loop goes, or that work is dropped and its caller hangs.
        await reader?.value
        let (publisher, subscriber) = state.withLockedValue { ($0.publisher, $0.subscriber) }
        await publisher?.close()
        await subscriber.close()
        continuation.finish()
        try? await ownedGroup.shutdownGracefully()
    }

    private var currentSignaling: SignalingClient { state.withLockedValue { $0.signaling } }

    // MARK: TURN credentials

    /// Until the room is left: sleeps until four fifths of the current TURN credentials' time is
    /// up (the expiry is the REST username's prefix), asks for new ones and hands them to the
    /// transports. A failed request is tried again after a few seconds.
    private func refreshICEServers() async {
        while !Task.isCancelled {
            guard let expiry = Self.credentialExpiry(of: joined.iceServers) else { return }
            do {
                try await Task.sleep(for: .seconds(max(0.5, Self.refreshTime(before: expiry).timeIntervalSinceNow)))
                let servers = try await withSignaling { try await $0.request(ICEServersRequest()).decode(ICEServers.self).iceServers }
                guard Self.credentialExpiry(of: servers).map({ $0 > expiry }) == true else {
                    logger.warning("the server sent no newer TURN credentials")
                    try await Task.sleep(for: .seconds(5))
                    continue
                }
                state.withLockedValue { $0.joined.iceServers = servers }
                handICEServersToTransports()
            } catch is CancellationError {
                return
            } catch {
                if state.withLockedValue({ $0.leaving }) { return }
                logger.warning("TURN credential refresh failed; trying again", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(5))
            }
        }
    }

    /// When the earliest of the TURN REST credentials in `servers` expires (RFC-draft
    /// "<unix expiry>:<identity>" usernames, as coturn and Parley issue them); nil when none do.
    static func credentialExpiry(of servers: [ICEServer]) -> Date? {
        servers.compactMap { server -> Date? in
            guard let username = server.username, let colon = username.firstIndex(of: ":"),
                let seconds = TimeInterval(username[..<colon])
            else { return nil }
            return Date(timeIntervalSince1970: seconds)
        }.min()
    }

    /// When to ask for new credentials: four fifths of the way to the earliest expiry.
    public static func credentialRefreshTime(for servers: [ICEServer]) -> Date? { credentialExpiry(of: servers).map(refreshTime(before:)) }

    private static func refreshTime(before expiry: Date) -> Date { Date(timeIntervalSinceNow: expiry.timeIntervalSinceNow * 0.8) }

    /// The latest ICE servers to both media transports (a standing relay moves to new credentials).
    private func handICEServersToTransports() {
        let servers = currentICEServers
        let (subscriber, publisher) = state.withLockedValue { ($0.subscriber, $0.publisher) }
        for transport in [subscriber.transport, publisher?.transport].compactMap({ $0 }) {
            transport.loop.execute { transport.updateICEServers(servers) }
        }
    }

    // MARK: Reading and reconnecting

    /// Reads the connection's events; when it drops, reconnects and reads the next one.
    private func run() async {
        while !Task.isCancelled {
            let signaling = currentSignaling
            await readEvents(from: signaling)
            let (leaving, ended) = state.withLockedValue { ($0.leaving, $0.ended) }
            if leaving || ended { break }
            let redirected = state.withLockedValue { $0.redirect != nil }
            if !redirected, await signaling.closedNormally() {
                continuation.yield(.closed(reason: "connection_closed"))
                break
            }
            setSignaling(up: false)
            guard await resumeSession(), !Task.isCancelled else {
                if !state.withLockedValue({ $0.leaving }) { continuation.yield(.closed(reason: "reconnect_failed")) }
                break
            }
        }
        setSignaling(up: false, over: true)
        continuation.finish()
    }

    /// Tries to get the session back per the policy; true once signaling is back.
    private func resumeSession() async -> Bool {
        let policy = reconnectPolicy
        // A server that sent us elsewhere is followed first; then the nodes the app named, in turn.
        let redirect = state.withLockedValue { state in
            defer { state.redirect = nil }
            return state.redirect.map { $0.isEmpty ? [] : [Self.signalingBase(ofNodeURL: $0)] } ?? []
        }
        let candidates = redirect + urls
        var attempt = 0
        while attempt < policy.maxAttempts {
            attempt += 1
            continuation.yield(.reconnecting(attempt: attempt))
            do { try await policy.sleep(policy.delay(beforeAttempt: attempt)) } catch { return false }
            guard !Task.isCancelled, !state.withLockedValue({ $0.leaving }) else { return false }
            let target = candidates[(attempt - 1) % candidates.count]
            let signaling: SignalingClient
            do {
                signaling = try await SignalingClient.connect(url: target, token: token, resume: sid, tls: tls, logger: logger)
            } catch {
                logger.debug("reconnect attempt failed", metadata: ["attempt": "\(attempt)", "error": "\(error)"])
                continue
            }
            do {
                let joined = try await Self.awaitJoined(on: signaling)
                if target != url { logger.info("reconnected through another node", metadata: ["url": "\(target)"]) }
                guard await adopt(joined, on: signaling) else { return false }
                continuation.yield(.reconnected(resumed: joined.resumed))
                return true
            } catch SignalingClientError.serverError(let reply) where [.unauthorized, .forbidden, .notFound].contains(reply.code) {
                // The token no longer admits us, or the room is gone: there is nothing to come back to.
                logger.notice("reconnect refused", metadata: ["code": "\(reply.code.rawValue)", "reason": "\(reply.message)"])
                await signaling.close()
                return false
            } catch {
                logger.debug("reconnect attempt failed", metadata: ["attempt": "\(attempt)", "error": "\(error)"])
                await signaling.close()
            }
        }
        return false
    }

    /// Makes a reconnection's connection the room's: brings the room state up to date (with the
    /// events missed meanwhile), restarts media if the session is new, fetches missed chat.
    /// False when the room was left meanwhile.
    private func adopt(_ joined: Joined, on signaling: SignalingClient) async -> Bool {
        let missed = state.withLockedValue { state -> [Event]? in
            guard !state.leaving else { return nil }
            state.signaling = signaling
            state.joined = joined
            return state.room.reconcile(with: joined.participants)
        }
        guard let missed else {
            try? await signaling.send(Leave())
            await signaling.close()
            return false
        }
        logger.info("signaling reconnected", metadata: ["participant": "\(joined.participant.sid)", "resumed": "\(joined.resumed)"])
        if joined.resumed {
            // Fresh TURN credentials: a relay refused for expired ones allocates again with these.
            handICEServersToTransports()
        } else {
            await restartMedia(on: signaling)
        }
        for event in missed { continuation.yield(event) }
        await catchUpChat(on: signaling, ownIdentity: joined.participant.identity)
        setSignaling(up: true)
        return true
    }

    /// The server let the old session go with its media transports: new ones, published again.
    private func restartMedia(on signaling: SignalingClient) async {
        let (subscriber, publisher, published, handler) = state.withLockedValue { state in
            (state.subscriber, state.publisher, state.published, state.mediaHandler)
        }
        await publisher?.close()
        await subscriber.close()
        do {
            let fresh = try await Self.makeSubscriber(
                on: subscriber.loop, iceServers: currentICEServers, policy: iceTransportPolicy, firewall: firewall, clock: clock)
            Self.install(handler, on: fresh)
            state.withLockedValue { state in
                state.subscriber = fresh
                state.publisher = nil
                state.publishedTracks = []
            }
            if let published { try await publish(published, on: signaling) }
        } catch {
            logger.error("could not restart media in the new session", metadata: ["error": "\(error)"])
        }
    }

    /// A node's HTTP URL (`reconnect`'s) as the WebSocket base SignalingClient takes.
    static func signalingBase(ofNodeURL url: String) -> String {
        if url.hasPrefix("https://") { return "wss://" + url.dropFirst("https://".count) }  // keeps TLS
        if url.hasPrefix("http://") { return "ws://" + url.dropFirst("http://".count) }
        return url
    }

    /// Chat sent while the connection was down, from the history after the last seq seen.
    private func catchUpChat(on signaling: SignalingClient, ownIdentity: String) async {
        for _ in 0..<Self.catchUpPages {
            guard let after = state.withLockedValue({ $0.room.lastChatSeq }),
                let page = try? await signaling.request(ChatHistoryRequest(after: after, limit: 200)).decode(ChatHistory.self)
            else { return }
            let fresh = state.withLockedValue { $0.room.caughtUp(page.messages, ownIdentity: ownIdentity) }
            for message in fresh { continuation.yield(.chat(message)) }
            guard page.hasMore, !page.messages.isEmpty else { return }
        }
    }

    /// At most this many pages (of 200) of missed chat are delivered after a reconnection.
    static let catchUpPages = 10

    /// Server frames that are not replies: events, and offers on the subscriber transport.
    private func readEvents(from signaling: SignalingClient) async {
        while !Task.isCancelled {
            let frame: ServerFrame
            do {
                frame = try await signaling.next(timeout: .seconds(3600), "an event") { $0.re == nil }
            } catch SignalingClientError.timedOut {
                continue
            } catch {
                return
            }
            await handle(frame, from: signaling)
        }
    }

    private func handle(_ frame: ServerFrame, from signaling: SignalingClient) async {
        switch frame.type {
        case OfferMessage.type:
            await answer(frame, on: signaling)
        case ParticipantJoined.type:
            guard let event = try? frame.decode(ParticipantJoined.self) else { return }
            state.withLockedValue { $0.room.update(event.participant) }
            continuation.yield(.participantJoined(event.participant))
        case ParticipantLeft.type:
            guard let event = try? frame.decode(ParticipantLeft.self) else { return }
            state.withLockedValue { state in
                state.room.participantLeft(event.participant)
                if event.participant == state.joined.participant.sid { state.ended = true }
            }
            continuation.yield(.participantLeft(sid: event.participant, identity: event.identity))
        case TrackPublished.type:
            guard let event = try? frame.decode(TrackPublished.self) else { return }
            state.withLockedValue { $0.room.trackPublished(event.track, by: event.participant) }
            continuation.yield(.trackPublished(participant: event.participant, track: event.track))
        case TrackUnpublished.type:
            guard let event = try? frame.decode(TrackUnpublished.self) else { return }
            state.withLockedValue { $0.room.trackUnpublished(event.track, by: event.participant) }
            continuation.yield(.trackUnpublished(participant: event.participant, track: event.track))
        case ChatEvent.type:
            guard let event = try? frame.decode(ChatEvent.self), state.withLockedValue({ $0.room.chatArrived(event.message) }) else { return }
            continuation.yield(.chat(event.message))
        case PresenceEvent.type:
            guard let event = try? frame.decode(PresenceEvent.self) else { return }
            state.withLockedValue { $0.room.presenceChanged(event) }
            continuation.yield(.presence(event))
        case TypingEvent.type:
            if let event = try? frame.decode(TypingEvent.self) { continuation.yield(.typing(event)) }
        case SpeakersEvent.type:
            if let event = try? frame.decode(SpeakersEvent.self) { continuation.yield(.speakers(event)) }
        case RecordingEvent.type:
            if let event = try? frame.decode(RecordingEvent.self) { continuation.yield(.recording(event.recording)) }
        case TrackPaused.type:
            if let event = try? frame.decode(TrackPaused.self) { continuation.yield(.trackPaused(participant: event.participant, track: event.track)) }
        case TrackResumed.type:
            if let event = try? frame.decode(TrackResumed.self) { continuation.yield(.trackResumed(participant: event.participant, track: event.track)) }
        case PublisherLayers.type:
            guard let event = try? frame.decode(PublisherLayers.self) else { return }
            let publisher = state.withLockedValue { state in state.publishedTracks.contains { $0.sid == event.track } ? state.publisher : nil }
            if let publisher { try? await publisher.loop.submit { publisher.setActiveLayers(event.active) }.get() }
            continuation.yield(.publisherLayers(track: event.track, active: event.active))
        case Reconnect.type:
            // The node drains: the connection closes next, and the room reconnects where it says.
            guard let event = try? frame.decode(Reconnect.self) else { return }
            logger.notice("server asked to reconnect", metadata: ["reason": "\(event.reason)", "url": "\(event.url ?? "")"])
            state.withLockedValue { $0.redirect = event.url ?? "" }
        case RoomClosed.type:
            guard let event = try? frame.decode(RoomClosed.self) else { return }
            state.withLockedValue { $0.ended = true }
            continuation.yield(.closed(reason: event.reason))
        case CandidateMessage.type:
            break  // the server's candidates are in its SDP already
        case ParticipantUpdated.type:
            if let event = try? frame.decode(ParticipantUpdated.self) { state.withLockedValue { $0.room.update(event.participant) } }
            continuation.yield(.other(type: frame.type, json: frame.text))
        case TrackMuted.type:
            guard let event = try? frame.decode(TrackMuted.self) else { return }
            state.withLockedValue { $0.room.trackMuted(event) }
            continuation.yield(.trackMuted(participant: event.participant, track: event.track, muted: event.muted))
        default:
            continuation.yield(.other(type: frame.type, json: frame.text))
        }
    }

    private func answer(_ frame: ServerFrame, on signaling: SignalingClient) async {
        guard let (id, sdp) = frame.subscriberOffer else { return }
        let subscriber = state.withLockedValue { $0.subscriber }
        do {
            let answer = try await subscriber.loop.submit { try subscriber.answer(offer: sdp) }.get()
            try await signaling.sendRaw(SignalCodec().encode(AnswerMessage(target: .subscriber, sdp: answer), re: id))
        } catch is CancellationError {
            return  // leaving
        } catch {
            // Nothing is received until the next offer; say why.
            logger.warning("could not answer the subscriber offer", metadata: ["error": "\(error)"])
        }
    }
}
