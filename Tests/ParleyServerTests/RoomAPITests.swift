import Auth
import Foundation
import NIOConcurrencyHelpers
import NIOPosix
import ParleyClient
import ParleyProtocol
import ParleyTools
@testable import ParleyServer
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A participant's channel that keeps what the room sends it, as an HTTP-driven participant
/// (WHIP, WHEP) would have instead of a WebSocket.
final class CollectingChannel: ParticipantChannel {
    let frames = NIOLockedValueBox<[String]>([])
    let closedWith = NIOLockedValueBox<ChannelCloseReason?>(nil)

    func send(_ frame: String) -> Bool {
        frames.withLockedValue { $0.append(frame) }
        return true
    }

    func close(_ reason: ChannelCloseReason) {
        closedWith.withLockedValue { if $0 == nil { $0 = reason } }
    }

    /// The `type` of each frame received, in order.
    var types: [String] {
        frames.withLockedValue { frames in
            frames.compactMap { ((try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any])?["type"] as? String }
        }
    }
}

/// The room API without WebSocket signaling (what WHIP and WHEP will call), and the room events
/// that webhooks and a cluster will consume.
@Suite(.timeLimit(.minutes(2))) struct RoomAPITests {
    static func claims(_ identity: String, room: String, grants: Grants? = nil) -> AccessClaims {
        AccessClaims(
            apiKey: ParleyConfig.devAPIKey, identity: identity, notBefore: 0, expires: Int64.max, name: identity.capitalized,
            grants: grants ?? Grants(room: room, join: true, publish: true, subscribe: true, chat: true, record: true))
    }

    /// Events from `stream` collected as they come, for one room.
    final class EventLog: Sendable {
        let events = NIOLockedValueBox<[RoomEvent]>([])
        private let task: Task<Void, Never>

        init(_ stream: AsyncStream<RoomEvent>, room: String) {
            let events = events
            task = Task { for await event in stream where event.room == room { events.withLockedValue { $0.append(event) } } }
        }

        deinit { task.cancel() }

        var names: [String] { events.withLockedValue { $0.map(\.name) } }

        func wait(for name: String, count: Int = 1, within limit: Duration = .seconds(10)) async throws {
            let deadline = ContinuousClock.now + limit
            while names.filter({ $0 == name }).count < count {
                guard ContinuousClock.now < deadline else {
                    Issue.record("no \(count) × \(name) within \(limit); saw \(names)")
                    return
                }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    @Test func aParticipantWithoutSignalingPublishesThroughTheRoomAPIAndIsHeard() async throws {
        let server = try await TestServer.start()
        let log = EventLog(server.server.services.events.subscribe(), room: "api")
        let bob = try await ParleyRoom.connect(url: server.url, token: try await server.token("bob", room: "api"))
        let room = try #require(await server.server.registry.room(named: "api"))

        // An ingest joins with a channel of its own and publishes with an offer: a real client
        // transport (ICE, DTLS, SRTP) sends a tone that bob, on WebSocket signaling, hears.
        let channel = CollectingChannel()
        let sid = try await room.join(claims: Self.claims("ingest", room: "api"), resume: nil, connection: channel)
        #expect(channel.types.first == Joined.type)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let publisher = try await loop.submit { try PublisherConnection(loop: loop) }.get()
        try await publisher.start()
        let offer = try await loop.submit { publisher.makeOffer(video: false) }.get()
        let answer = try await room.publish(offer: offer, from: sid)
        #expect(answer.tracks.map(\.kind) == ["audio"])
        #expect(answer.sdp.contains("a=recvonly"))
        let audio = NIOLockedValueBox<[[UInt8]]>([])
        bob.onMedia = { packet, header, track in
            guard track.kind == "audio" else { return }
            audio.withLockedValue { $0.append(Array(UnsafeRawBufferPointer(rebasing: packet[header.payloadRange]))) }
        }
        try await loop.submit {
            try publisher.apply(answer: answer.sdp)
            try publisher.startSyntheticMedia(frequency: 587)
        }.get()
        let deadline = ContinuousClock.now + .seconds(10)
        while audio.withLockedValue({ $0.count }) < 100, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        let mono = ToneDetector.monoSamples(ofOpus: audio.withLockedValue { $0 })
        #expect(mono.count >= 96_000)
        #expect(ToneDetector.strength(Array(mono.suffix(48_000)), frequency: 587) > 0.5)

        // Chat, presence and mute through the API reach the WebSocket participant.
        let stored = try await room.sendChat(ChatSend(text: "from the API", clientMsgId: "api-1"), from: sid)
        #expect(stored.message.seq == 1 && !stored.duplicate)
        #expect(try await room.sendChat(ChatSend(text: "from the API", clientMsgId: "api-1"), from: sid).duplicate)
        #expect(try await room.chatHistory(ChatHistoryRequest(limit: 10), for: sid).messages.map(\.text) == ["from the API"])
        let presence = try await room.setPresence(PresenceSet(status: .busy, text: "streaming"), of: sid)
        #expect(presence.status == .busy && presence.text == "streaming")
        let muted = try await room.setMuted(true, track: answer.tracks[0].sid, of: sid)
        #expect(muted.muted)
        try await ParleyRoomTests.wait(for: bob, "the API's chat, presence and mute") {
            if case .trackMuted(_, let track, let muted) = $0 { track == answer.tracks[0].sid && muted } else { false }
        }
        #expect(bob.participants.first { $0.identity == "ingest" }?.presence?.status == .busy)

        // Bad calls are refused with the protocol's errors, never a crash.
        await #expect(throws: ProtocolError.self) { try await room.publish(offer: "v=0 not an offer", from: sid) }
        await #expect(throws: ProtocolError.self) { try await room.sendChat(ChatSend(text: "hi"), from: "PA_nobody") }
        await #expect(throws: ProtocolError.self) { try await room.setMuted(true, track: "TR_nothing", of: sid) }
        let viewer = CollectingChannel()
        let viewerSid = try await room.join(
            claims: Self.claims("viewer", room: "api", grants: Grants(room: "api", join: true, subscribe: true)), resume: nil,
            connection: viewer)
        do {
            _ = try await room.publish(offer: offer, from: viewerSid)
            Issue.record("a participant without the publish grant published")
        } catch {
            #expect(error.code == .forbidden)
        }
        // The viewer subscribes: the room offers it the ingest's track on its channel.
        let viewerDeadline = ContinuousClock.now + .seconds(5)
        while !viewer.types.contains(OfferMessage.type), ContinuousClock.now < viewerDeadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(viewer.types.contains(OfferMessage.type))

        let recording = try await room.startRecording(mode: "tracks")
        _ = try await room.stopRecording(recording.id)

        await room.leave(sid: sid)
        #expect(channel.closedWith.withLockedValue { $0 } == .normal("left"))
        try await ParleyRoomTests.wait(for: bob, "the ingest leaving") {
            if case .participantLeft(_, let identity) = $0 { identity == "ingest" } else { false }
        }
        await publisher.close()
        await bob.leave()
        await room.close(reason: "deleted")
        try await log.wait(for: "room_finished")

        let names = log.names
        #expect(names.first == "room_started")
        #expect(names.last == "room_finished")
        #expect(names.filter { $0 == "participant_joined" }.count == 3)
        #expect(names.filter { $0 == "participant_left" }.count == 3)
        #expect(names.filter { $0 == "track_published" }.count == 1)
        #expect(names.filter { $0 == "track_unpublished" }.count == 1)
        #expect(names.filter { $0 == "egress_started" }.count == 1 && names.filter { $0 == "egress_ended" }.count == 1)
        // In the order they happened: the track came after its participant and ended before it left.
        let ingestEvents = log.events.withLockedValue { events in
            events.compactMap { event -> String? in
                switch event.kind {
                case .participantJoined(let info, _) where info.identity == "ingest": "joined"
                case .trackPublished(let info, let track) where info.identity == "ingest" && track.kind == "audio": "published"
                case .trackUnpublished(let info, _) where info.identity == "ingest": "unpublished"
                case .participantLeft(let info, let reason, _) where info.identity == "ingest": "left:\(reason.rawValue)"
                default: nil
                }
            }
        }
        #expect(ingestEvents == ["joined", "published", "unpublished", "left:left"])
        #expect(Set(log.events.withLockedValue { $0.map(\.id) }).count == names.count)
        #expect(log.events.withLockedValue { $0.allSatisfy { $0.roomSid == room.sid && $0.createdAt > 0 } })

        let metrics = try await String(decoding: URLSession.shared.data(from: URL(string: "\(server.httpURL)/metrics")!).0, as: UTF8.self)
        #expect(metrics.contains("parley_room_events_total \(server.server.services.events.counts.emitted)"))
        try await server.stop()
        try await group.shutdownGracefully()
    }

    @Test func aSubscriberThatFallsBehindLosesCountedEventsAndNeverStallsTheRoom() async throws {
        let events = RoomEvents()
        let slow = events.subscribe(bufferLimit: 2)
        var ended = Optional(events.subscribe(bufferLimit: 10))
        for index in 0..<5 {
            events.emit(RoomEvent(id: "EV_\(index)", room: "r", roomSid: "RM_1", createdAt: Int64(index), kind: .roomFinished(reason: "x")))
        }
        #expect(events.counts.emitted == 5 && events.counts.dropped == 3)
        var received: [String] = []
        for await event in slow {
            received.append(event.id)
            if received.count == 2 { break }
        }
        #expect(received == ["EV_0", "EV_1"])
        // A subscriber that stops listening is forgotten: its buffer no longer counts.
        ended = nil
        _ = ended
        events.finish()
        events.emit(RoomEvent(id: "EV_late", room: "r", roomSid: "RM_1", createdAt: 9, kind: .roomFinished(reason: "x")))
        #expect(events.counts.dropped == 3)
    }
}
