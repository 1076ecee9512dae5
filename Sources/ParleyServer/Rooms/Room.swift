import Auth
import Logging
import NIOCore
import ParleyProtocol
import Store
import SFU
import WebRTC

/// A room: its participants, chat and presence. Every state change goes through this actor, so
/// joins, leaves and messages are ordered. It runs on its media worker's event loop.
///
/// Its public methods are the room API, the same whatever carries the participant: WebSocket
/// signaling calls them (`handle`, in Signaling/) and an HTTP session (WHIP, WHEP) may too. Each
/// participant has a `ParticipantChannel` for the frames the room sends it. What happens in the
/// room is also emitted as `RoomEvent`s to `services.events`.
public actor Room {
    public nonisolated let sid: String
    public nonisolated let name: String
    public nonisolated let options: RoomOptions
    public nonisolated let createdAt: Int64
    public nonisolated let worker: Int
    nonisolated let loop: any EventLoop
    /// The worker's media port: this room's transports are registered there.
    nonisolated let port: MediaPort
    /// The counters of the worker's SFU, which this room's forwarding adds to.
    nonisolated let sfuStatistics: SFUWorkerStatistics

    let services: RoomServices
    let codec = SignalCodec()
    var logger: Logger
    /// Participants in join order.
    var participants: [Participant] = []
    /// The sids of those speaking now, loudest first (WHEP players follow them).
    var speakers: [String] = []
    private var closed = false
    private var emptyGeneration = 0
    /// Timers not yet fired, cancelled when the room closes: none may wake after its media
    /// worker (this actor's executor) has shut down.
    private var pendingTimers: [Int: Task<Void, Never>] = [:]
    private var nextTimerID = 0
    private let onClose: @Sendable (Room) async -> Void
    /// The forwarding core, made on first use (on this room's loop, which it needs).
    private var sfuStorage: SFURoom?
    private let sfuEvents = SFUEventRelay()
    /// The running recording, if any.
    var recorder: RoomRecorder?
    private var autoRecordStarted = false
    /// The forwarding core if it was made (closing a room must not make one).
    var sfuIfMade: SFURoom? { sfuStorage }

    var sfu: SFURoom {
        if let sfuStorage { return sfuStorage }
        let made = SFURoom(
            port: port, dtls: services.media.dtls, configuration: services.config.rtc.sfuConfiguration,
            workerStatistics: sfuStatistics)
        sfuEvents.room = self
        made.delegate = sfuEvents
        sfuStorage = made
        return made
    }

    public nonisolated var unownedExecutor: UnownedSerialExecutor {
        loop.executor.asUnownedSerialExecutor()
    }

    init(
        name: String, options: RoomOptions, worker: Int, loop: any EventLoop, port: MediaPort,
        sfuStatistics: SFUWorkerStatistics, services: RoomServices,
        onClose: @escaping @Sendable (Room) async -> Void
    ) {
        self.sid = services.ids.room()
        self.name = name
        self.options = options
        self.worker = worker
        self.loop = loop
        self.port = port
        self.sfuStatistics = sfuStatistics
        self.services = services
        self.createdAt = services.clock.wallMilliseconds()
        self.onClose = onClose
        var logger = services.logger
        logger[metadataKey: "room"] = "\(name)"
        logger[metadataKey: "room_sid"] = "\(sid)"
        self.logger = logger
        services.metrics.rooms.increment()
        logger.info("room created", metadata: ["worker": "\(worker)"])
    }

    // MARK: Queries

    public var isClosed: Bool { closed }

    public func info() -> RoomInfo {
        RoomInfo(
            sid: sid, name: name, metadata: options.metadata, createdAt: createdAt,
            maxParticipants: options.maxParticipants, emptyTimeout: Int(options.emptyTimeout.components.seconds),
            numParticipants: participants.count, autoRecord: options.autoRecord, node: services.server.node)
    }

    /// Everyone in the room, hidden participants included (the admin view).
    public func participantInfos() -> [ParticipantInfo] { participants.map(\.info) }

    var visibleParticipants: [Participant] { participants.filter { !$0.hidden } }

    func findParticipant(sid: String) -> Participant? { participants.first { $0.sid == sid } }

    public func hasParticipant(sid: String) -> Bool { findParticipant(sid: sid) != nil }

    func findParticipant(identity: String) -> Participant? { participants.first { $0.identity == identity } }

    // MARK: Joining and leaving

    /// Starts the room's life: `room_started`, and the countdown that closes it while it is empty.
    func start() {
        emit(.roomStarted(info()))
        armEmptyTimer()
    }

    /// Admits a participant on `connection`, or resumes the session `resume` names when it is
    /// still held for this identity. `joined` is the first frame the connection gets.
    public func join(claims: AccessClaims, resume: String?, connection: any ParticipantChannel) async throws(ProtocolError) -> String {
        guard !closed else { throw ProtocolError(.notFound, "room \(name) is closed") }
        if let remaining = services.bans.remaining(claims.identity, in: name, now: services.clock.now()) {
            throw ProtocolError(.forbidden, "\(claims.identity) was removed from room \(name) and may join again in \(remaining.components.seconds + 1) s")
        }
        let now = services.clock.wallMilliseconds()
        let participant: Participant
        let resumed: Bool
        if let resume, let held = findParticipant(sid: resume), held.identity == claims.identity {
            participant = held
            resumed = true
            held.resumeGeneration += 1
            if let old = held.connection { old.close(.normal("resumed elsewhere")) }
            held.connection = connection
            held.heldFrames = []
            resumeSubscriptions(of: held)
            services.metrics.resumes.increment()
            logger.info("participant resumed", metadata: ["participant": "\(held.sid)", "identity": "\(held.identity)"])
        } else {
            if let existing = findParticipant(identity: claims.identity) {
                replace(existing)
            }
            if options.maxParticipants > 0, !claims.grants.hidden, visibleParticipants.count >= options.maxParticipants {
                throw ProtocolError(.roomFull, "room \(name) is full (\(options.maxParticipants) participants)")
            }
            participant = Participant(
                sid: services.ids.participant(), claims: claims, joinedAt: now,
                chatBucket: TokenBucket(
                    perSecond: services.config.chatRateLimit.perSecond, burst: services.config.chatRateLimit.burst,
                    now: services.clock.now()))
            participant.connection = connection
            participant.heldFrames = []
            resumed = false
            if !participant.hidden {
                broadcast(codec.encode(ParticipantJoined(participant: participant.info)))
            }
            participants.append(participant)
            emit(.participantJoined(participant.info, hidden: participant.hidden))
            // Existing tracks go to the newcomer in its first subscriber offer (held until `joined`).
            updateSubscriptions(of: participant)
            services.metrics.participantJoined()
            emptyGeneration += 1
            logger.info(
                "participant joined",
                metadata: ["participant": "\(participant.sid)", "identity": "\(participant.identity)", "hidden": "\(participant.hidden)"])
        }
        let others = visibleParticipants.filter { $0 !== participant }.map(\.info)
        let history: ChatPage
        do {
            history = try await services.chat.page(
                room: name, viewer: participant.identity, limit: max(1, services.config.chatHistoryOnJoin))
        } catch {
            logger.error("chat history read failed", metadata: ["error": "\(error)"])
            remove(participant, reason: .disconnected, notifySelf: false)
            throw ProtocolError(.internal, "could not read chat history")
        }
        if let mode = options.autoRecord, !autoRecordStarted {
            autoRecordStarted = true
            do {
                _ = try await startRecording(mode: mode)
            } catch {
                logger.error("autoRecord did not start", metadata: ["error": "\(error)"])
            }
        }
        // The participant may have been replaced or kicked while history was read.
        guard participant.connection === connection, participants.contains(where: { $0 === participant }) else {
            throw ProtocolError(.conflict, "session was replaced while joining")
        }
        let page = services.config.chatHistoryOnJoin > 0 ? history : ChatPage(messages: [], hasMore: history.hasMore || !history.messages.isEmpty)
        let joined = Joined(
            room: info(), participant: participant.info, participants: others,
            iceServers: services.iceServers(participant.identity), chat: page, server: services.server, resumed: resumed)
        connection.send(codec.encode(joined))
        let lastSeq = history.messages.last?.seq ?? 0
        for frame in participant.heldFrames ?? [] where (frame.chatSeq ?? .max) > lastSeq {
            connection.send(frame.text)
        }
        participant.heldFrames = nil
        return participant.sid
    }

    /// A second session with the same identity replaces the first.
    private func replace(_ existing: Participant) {
        logger.info("duplicate identity replaces session", metadata: ["participant": "\(existing.sid)", "identity": "\(existing.identity)"])
        remove(existing, reason: .duplicateIdentity, notifySelf: true)
    }

    /// The participant asked to leave.
    public func leave(sid: String) {
        guard let participant = findParticipant(sid: sid) else { return }
        remove(participant, reason: .left, notifySelf: false)
        participant.connection?.close(.normal("left"))
    }

    /// The admin API removed a participant; with `banFor`, the identity may not join again (nor
    /// resume) for that long.
    public func kick(identity: String, banFor: Duration? = nil) -> Bool {
        let banned = banFor.map { $0 > .zero } ?? false
        if banned, let banFor {
            let now = services.clock.now()
            services.bans.ban(identity, from: name, until: now + banFor, now: now)
        }
        guard let participant = findParticipant(identity: identity) else { return banned }
        remove(participant, reason: .kicked, notifySelf: true)
        return true
    }

    /// A connection ended without `leave`: hold the participant for the resume window.
    public func connectionLost(sid: String, connection: any ParticipantChannel) {
        guard let participant = findParticipant(sid: sid), participant.connection === connection else { return }
        participant.connection = nil
        participant.resumeGeneration += 1
        let generation = participant.resumeGeneration
        let window = services.config.resumeWindow
        logger.info("participant connection lost; holding for resume", metadata: ["participant": "\(sid)"])
        after(window) { room in room.resumeWindowExpired(sid: sid, generation: generation) }
    }

    /// Runs `fire` on this room after `delay`, unless the room closes first.
    func after(_ delay: Duration, _ fire: @escaping @Sendable (isolated Room) async -> Void) {
        nextTimerID += 1
        let id = nextTimerID
        pendingTimers[id] = Task {
            defer { self.pendingTimers[id] = nil }
            guard (try? await self.services.clock.sleep(for: delay)) != nil, !self.closed else { return }
            await fire(self)
        }
    }

    private func resumeWindowExpired(sid: String, generation: Int) {
        guard let participant = findParticipant(sid: sid), participant.connection == nil,
              participant.resumeGeneration == generation
        else { return }
        remove(participant, reason: .disconnected, notifySelf: false)
    }

    private func remove(_ participant: Participant, reason: LeaveReason, notifySelf: Bool) {
        guard let index = participants.firstIndex(where: { $0 === participant }) else { return }
        participants.remove(at: index)
        let info = participant.info
        removeMedia(of: participant)
        participant.resumeGeneration += 1
        services.metrics.participantLeft()
        let left = codec.encode(ParticipantLeft(participant: participant.sid, identity: participant.identity, reason: reason))
        if notifySelf, let connection = participant.connection {
            connection.send(left)
            connection.close(.normal(reason.rawValue))
        }
        if !participant.hidden { broadcast(left) }
        emit(.participantLeft(info, reason: reason, hidden: participant.hidden))
        logger.info(
            "participant left",
            metadata: ["participant": "\(participant.sid)", "identity": "\(participant.identity)", "reason": "\(reason.rawValue)"])
        if participants.isEmpty { armEmptyTimer() }
    }

    // MARK: Closing

    /// Starts the countdown that closes an empty room. Called at creation and when the last one leaves.
    func armEmptyTimer() {
        emptyGeneration += 1
        let generation = emptyGeneration
        let timeout = options.emptyTimeout
        after(timeout) { room in await room.emptyTimerFired(generation) }
    }

    private func emptyTimerFired(_ generation: Int) async {
        guard generation == emptyGeneration, participants.isEmpty, !closed else { return }
        await close(reason: "empty_timeout")
    }

    /// Closes the room: everyone gets `room.closed` and is disconnected.
    public func close(reason: String) async {
        _ = await close(reason: reason, farewell: codec.encode(RoomClosed(reason: reason)), closeText: "room_closed")
    }

    /// Sends everyone to another node (a drain): each gets `reconnect` (with the node's `url`)
    /// instead of `room.closed`, and the room closes here, its recording finished. Returns how
    /// many were sent.
    func move(reason: String, url: String?) async -> Int {
        await close(reason: reason, farewell: codec.encode(Reconnect(reason: reason, url: url)), closeText: "reconnect")
    }

    private func close(reason: String, farewell frame: String, closeText: String) async -> Int {
        guard !closed else { return 0 }
        await finishRecordingIfAny()
        guard !closed else { return 0 }
        closed = true
        let count = participants.count
        for participant in participants {
            for track in participant.media.tracks { emit(.trackUnpublished(participant: participant.info, track: track)) }
            emit(.participantLeft(participant.info, reason: .roomClosed, hidden: participant.hidden))
            participant.resumeGeneration += 1
            participant.connection?.send(frame)
            participant.connection?.close(.normal(closeText))
            services.metrics.participantLeft()
        }
        participants.removeAll()
        for timer in pendingTimers.values { timer.cancel() }
        sfuStorage?.close()
        sfuStorage = nil
        services.metrics.rooms.decrement()
        emit(.roomFinished(reason: reason))
        logger.info("room closed", metadata: ["reason": "\(reason)"])
        await onClose(self)
        return count
    }

    // MARK: Messages

    /// Sends a frame to every connected participant except `except`.
    func broadcast(_ text: String, except: Participant? = nil, chatSeq: Int64? = nil) {
        for participant in participants where participant !== except {
            deliver(text, to: participant, chatSeq: chatSeq)
        }
    }

    func deliver(_ text: String, to participant: Participant, chatSeq: Int64? = nil) {
        if !participant.deliver(text, chatSeq: chatSeq) {
            services.metrics.slowConsumerDisconnects.increment()
            logger.warning("outbox overflowed; disconnecting slow client", metadata: ["participant": "\(participant.sid)"])
        }
    }

    func reply<M: SignalMessage>(_ message: M, re: String?, to participant: Participant) {
        deliver(codec.encode(message, re: re), to: participant)
    }

    /// Hands a room event to whoever listens; never waits.
    func emit(_ kind: RoomEvent.Kind) {
        services.events.emit(
            RoomEvent(id: services.ids.make("EV"), room: name, roomSid: sid, createdAt: services.clock.wallMilliseconds(), kind: kind))
    }

    /// The participant `sid`, or `not_found` when it is no longer here.
    func member(_ sid: String) throws(ProtocolError) -> Participant {
        guard let participant = findParticipant(sid: sid) else {
            throw ProtocolError(.notFound, "participant \(sid) is no longer in room \(name)")
        }
        return participant
    }

    // MARK: Chat, typing and presence (the room API)

    /// The ICE servers for `sid`, with newly issued TURN credentials.
    public func iceServers(for sid: String) throws(ProtocolError) -> [ICEServer] {
        services.iceServers(try member(sid).identity)
    }

    /// Stores a chat message from `sid` and delivers it to everyone allowed to see it; returns it
    /// once committed, so the caller may acknowledge it. A `clientMsgId` already used returns
    /// the stored original with `duplicate` set and delivers nothing again.
    public func sendChat(_ send: ChatSend, from sid: String) async throws(ProtocolError) -> (message: ChatMessage, duplicate: Bool) {
        let participant = try member(sid)
        guard participant.grants.chat else { throw ProtocolError(.forbidden, "token lacks the chat grant") }
        let config = services.config
        guard !send.text.isEmpty else { throw ProtocolError(.badRequest, "field \"text\" is empty") }
        guard send.text.count <= config.chatMaxTextLength else {
            throw ProtocolError(.tooLarge, "text has \(send.text.count) characters; the limit is \(config.chatMaxTextLength)")
        }
        if let clientMsgId = send.clientMsgId, clientMsgId.isEmpty || clientMsgId.utf8.count > 128 {
            throw ProtocolError(.badRequest, "field \"clientMsgId\" must have 1 to 128 bytes")
        }
        var recipients: [String]?
        if let to = send.to {
            let unique = Array(Set(to)).sorted()
            guard !unique.isEmpty, !unique.contains("") else {
                throw ProtocolError(.badRequest, "field \"to\" must name at least one identity")
            }
            guard unique.count <= config.chatMaxRecipients else {
                throw ProtocolError(.tooLarge, "a direct message may name at most \(config.chatMaxRecipients) identities")
            }
            recipients = unique
        }
        guard participant.chatBucket.take(now: services.clock.now()) else {
            throw ProtocolError(.rateLimited, "chat rate limit reached (\(config.chatRateLimit.perSecond)/s, burst \(config.chatRateLimit.burst))")
        }
        let draft = ChatDraft(
            id: services.ids.message(), room: name, from: ChatAuthor(participant.sender), text: send.text, to: recipients,
            ts: services.clock.wallMilliseconds(), clientMsgId: send.clientMsgId)
        let stored: (message: ChatMessage, duplicate: Bool)
        do {
            stored = try await services.chat.append(draft)
        } catch {
            logger.error("chat write failed", metadata: ["participant": "\(participant.sid)", "error": "\(error)"])
            throw ProtocolError(.unavailable, "the message could not be stored (\(error)); it was not sent: retry with the same clientMsgId")
        }
        if stored.duplicate {
            services.metrics.chatDuplicates.increment()
            return stored
        }
        services.metrics.chatMessages.increment()
        deliverChat(stored.message, except: participant)
        return stored
    }

    /// Delivers a stored message to everyone allowed to see it.
    private func deliverChat(_ message: ChatMessage, except sender: Participant?) {
        let frame = codec.encode(ChatEvent(message: message))
        for participant in participants where participant !== sender && message.isVisible(to: participant.identity) {
            deliver(frame, to: participant, chatSeq: message.seq)
        }
    }

    /// A message posted through the admin API, already stored.
    public func deliverSystemMessage(_ message: ChatMessage) {
        guard !closed else { return }
        deliverChat(message, except: nil)
    }

    /// A page of the room's chat history as `sid` may see it.
    public func chatHistory(_ request: ChatHistoryRequest, for sid: String) async throws(ProtocolError) -> ChatPage {
        let participant = try member(sid)
        let limit = request.limit ?? 50
        guard (1...ChatPaging.maxPageSize).contains(limit) else {
            throw ProtocolError(.badRequest, "field \"limit\" must be between 1 and \(ChatPaging.maxPageSize)")
        }
        if request.before != nil && request.after != nil {
            throw ProtocolError(.badRequest, "give either \"before\" or \"after\", not both")
        }
        do {
            let page = try await services.chat.page(
                room: name, viewer: participant.identity, before: request.before, after: request.after, limit: limit)
            return page
        } catch {
            logger.error("chat history read failed", metadata: ["error": "\(error)"])
            throw ProtocolError(.internal, "could not read chat history")
        }
    }

    /// Sets `sid`'s presence; the others hear it, and the caller gets the event to answer with.
    public func setPresence(_ request: PresenceSet, of sid: String) throws(ProtocolError) -> PresenceEvent {
        let participant = try member(sid)
        let text = request.text ?? ""
        guard text.count <= 256 else { throw ProtocolError(.tooLarge, "presence text is limited to 256 characters") }
        participant.presence = Presence(status: request.status, text: text, since: services.clock.wallMilliseconds())
        let event = PresenceEvent(participant: participant.sid, identity: participant.identity, presence: participant.presence)
        if !participant.hidden { broadcast(codec.encode(event), except: participant) }
        return event
    }

    /// Tells the others that `sid` is typing, or stopped.
    public func setTyping(_ active: Bool, from sid: String) throws(ProtocolError) {
        let participant = try member(sid)
        guard participant.grants.chat else { throw ProtocolError(.forbidden, "token lacks the chat grant") }
        broadcast(
            codec.encode(TypingEvent(participant: participant.sid, identity: participant.identity, active: active)),
            except: participant)
    }
}
