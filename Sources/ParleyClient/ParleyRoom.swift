import Foundation
import Logging
import NIOCore
import NIOPosix
import ParleyProtocol
import RTP

/// The client SDK's room: connect with a URL and a token, then read what happens as an
/// AsyncSequence of events, publish a (synthetic) microphone, receive everyone's media, chat and
/// set presence. Media runs on one event loop of the room's own; signaling on the WebSocket.
public final class ParleyRoom: @unchecked Sendable {
    public enum Event: Sendable {
        case participantJoined(ParticipantInfo)
        case participantLeft(sid: String, identity: String)
        case trackPublished(participant: String, track: TrackInfo)
        case trackUnpublished(participant: String, track: String)
        case chat(ChatMessage)
        case presence(PresenceEvent)
        case typing(TypingEvent)
        case speakers(SpeakersEvent)
        case recording(RecordingInfo)
        case closed(reason: String)
        /// Anything else the server sent, raw.
        case other(type: String, json: String)
    }

    public let joined: Joined
    public let events: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation
    private let signaling: SignalingClient
    private let subscriber: SubscriberConnection
    private var publisher: PublisherConnection?
    private var reader: Task<Void, Never>?

    /// Received RTP of every subscribed track, on the media loop (the buffer lives during the call).
    public var onMedia: ((UnsafeRawBufferPointer, RTPHeader, SubscriberConnection.Track) -> Void)? {
        get { mediaHandler }
        set {
            mediaHandler = newValue
            let handler = newValue
            subscriber.loop.execute { [subscriber] in
                subscriber.onRTP = { packet, header, track, _ in handler?(packet, header, track) }
            }
        }
    }
    private var mediaHandler: ((UnsafeRawBufferPointer, RTPHeader, SubscriberConnection.Track) -> Void)?

    private init(joined: Joined, signaling: SignalingClient, subscriber: SubscriberConnection) {
        self.joined = joined
        self.signaling = signaling
        self.subscriber = subscriber
        (events, continuation) = AsyncStream.makeStream(of: Event.self)
    }

    /// Joins the room the token names; media starts flowing as the server offers tracks.
    public static func connect(url: String, token: String, logger: Logger = Logger(label: "parley.client")) async throws -> ParleyRoom {
        let signaling = try await SignalingClient.connect(url: url, token: token, logger: logger)
        let first = try await signaling.next(timeout: .seconds(15))
        if first.type == ErrorReply.type { throw SignalingClientError.serverError(try first.decode(ErrorReply.self)) }
        let joined = try first.decode(Joined.self)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let subscriber = try await loop.submit { try SubscriberConnection(loop: loop) }.get()
        try await subscriber.start()
        let room = ParleyRoom(joined: joined, signaling: signaling, subscriber: subscriber)
        room.ownedGroup = group
        room.reader = Task { await room.readEvents() }
        return room
    }

    private var ownedGroup: MultiThreadedEventLoopGroup?

    public var sid: String { joined.participant.sid }

    /// Publishes a microphone that plays a tone at `frequency` (and with `video`, a synthetic
    /// camera); returns the tracks the server made.
    @discardableResult
    public func publishTone(frequency: Double, video: Bool = false) async throws -> [TrackInfo] {
        let loop = subscriber.loop
        let publisher = try await loop.submit { try PublisherConnection(loop: loop) }.get()
        try await publisher.start()
        self.publisher = publisher
        let offer = try await loop.submit { publisher.makeOffer(video: video) }.get()
        let answer = try await signaling.request(SessionDescription(target: .publisher, sdp: offer), timeout: .seconds(15))
            .decode(AnswerMessage.self)
        try await loop.submit {
            try publisher.apply(answer: answer.sdp)
            try publisher.startSyntheticMedia(frequency: frequency, videoBitrate: video ? 500_000 : nil)
        }.get()
        return answer.tracks ?? []
    }

    /// Sends a chat message to the room (or to `to` identities) and returns it as stored.
    @discardableResult
    public func sendChat(_ text: String, to: [String]? = nil) async throws -> ChatMessage {
        try await signaling.request(ChatSend(text: text, clientMsgId: UUID().uuidString, to: to)).decode(ChatAck.self).message
    }

    public func setPresence(_ status: PresenceStatus, text: String? = nil) async throws {
        try await signaling.send(PresenceSet(status: status, text: text))
    }

    /// Leaves the room and closes the media transports.
    public func leave() async {
        try? await signaling.send(Leave())
        await signaling.close()
        reader?.cancel()
        await publisher?.close()
        await subscriber.close()
        continuation.finish()
        try? await ownedGroup?.shutdownGracefully()
    }

    /// Server frames that are not replies: events, and offers on the subscriber transport.
    private func readEvents() async {
        while !Task.isCancelled {
            let frame: ServerFrame
            do {
                frame = try await signaling.next(timeout: .seconds(3600), "an event") { $0.re == nil }
            } catch SignalingClientError.timedOut {
                continue
            } catch {
                break
            }
            switch frame.type {
            case OfferMessage.type:
                await answer(frame)
            case ParticipantJoined.type:
                if let event = try? frame.decode(ParticipantJoined.self) { continuation.yield(.participantJoined(event.participant)) }
            case ParticipantLeft.type:
                if let event = try? frame.decode(ParticipantLeft.self) { continuation.yield(.participantLeft(sid: event.participant, identity: event.identity)) }
            case TrackPublished.type:
                if let event = try? frame.decode(TrackPublished.self) { continuation.yield(.trackPublished(participant: event.participant, track: event.track)) }
            case TrackUnpublished.type:
                if let event = try? frame.decode(TrackUnpublished.self) {
                    continuation.yield(.trackUnpublished(participant: event.participant, track: event.track))
                }
            case ChatEvent.type:
                if let event = try? frame.decode(ChatEvent.self) { continuation.yield(.chat(event.message)) }
            case PresenceEvent.type:
                if let event = try? frame.decode(PresenceEvent.self) { continuation.yield(.presence(event)) }
            case TypingEvent.type:
                if let event = try? frame.decode(TypingEvent.self) { continuation.yield(.typing(event)) }
            case SpeakersEvent.type:
                if let event = try? frame.decode(SpeakersEvent.self) { continuation.yield(.speakers(event)) }
            case RecordingEvent.type:
                if let event = try? frame.decode(RecordingEvent.self) { continuation.yield(.recording(event.recording)) }
            case RoomClosed.type:
                if let event = try? frame.decode(RoomClosed.self) { continuation.yield(.closed(reason: event.reason)) }
            case CandidateMessage.type:
                break  // the server's candidates are in its SDP already
            default:
                continuation.yield(.other(type: frame.type, json: frame.text))
            }
        }
        continuation.finish()
    }

    private func answer(_ frame: ServerFrame) async {
        guard let json = RecordingBot.json(frame.text), json["target"] as? String == "subscriber",
            let sdp = json["sdp"] as? String, let id = json["id"] as? String
        else { return }
        let subscriber = self.subscriber
        guard let answer = try? await subscriber.loop.submit({ try subscriber.answer(offer: sdp) }).get() else { return }
        try? await signaling.sendRaw(SignalCodec().encode(AnswerMessage(target: .subscriber, sdp: answer), re: id))
    }
}
