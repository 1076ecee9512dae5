import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ParleyClient
import ParleyProtocol
import ParleyTools
import Recording
import Testing

/// The Swift client's media against a live server: one participant publishes a libopus tone
/// through `PublisherConnection`, another receives it through `SubscriberConnection`, and the
/// received packets decode to the tone.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ClientMediaTests {
    @Test func aSwiftPublishersToneReachesASwiftSubscriber() async throws {
        let server = try await TestServer.start()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let (alice, _) = try await server.join("alice", room: "sdk")
        let (bob, _) = try await server.join("bob", room: "sdk")

        let publisher = try await loop.submit { try PublisherConnection(loop: loop) }.get()
        try await publisher.start()
        let offer = try await loop.submit { publisher.makeOffer(video: false) }.get()
        let reply = try await alice.request(ParleyProtocol.SessionDescription(target: .publisher, sdp: offer))
        let answer = try reply.decode(AnswerMessage.self)
        #expect(answer.tracks?.first?.kind == "audio")
        let tone = try await loop.submit { () -> ToneSender in
            try publisher.apply(answer: answer.sdp)
            let tone = try ToneSender(connection: publisher, frequency: 523)
            publisher.transport.onTick = { now in tone.sendDue(now: now) }
            return tone
        }.get()

        let subscriber = try await loop.submit { try SubscriberConnection(loop: loop) }.get()
        try await subscriber.start()
        let received = NIOLockedValueBox<[[UInt8]]>([])
        try await loop.submit {
            subscriber.onRTP = { packet, header, track, _ in
                guard track.kind == "audio" else { return }
                received.withLockedValue { $0.append(Array(UnsafeRawBufferPointer(rebasing: packet[header.payloadRange]))) }
            }
        }.get()
        let offerFrame = try await bob.next(timeout: .seconds(10), "a subscriber offer") { $0.type == "offer" }
        let serverOffer = try offerFrame.decode(ParleyProtocol.SessionDescription.self)
        let offerID = try #require(try JSONSerialization.jsonObject(with: Data(offerFrame.text.utf8)) as? [String: Any])["id"] as? String
        let bobAnswer = try await loop.submit { try subscriber.answer(offer: serverOffer.sdp) }.get()
        try await bob.sendRaw(SignalCodec().encode(AnswerMessage(target: .subscriber, sdp: bobAnswer), re: offerID))

        let deadline = ContinuousClock.now + .seconds(15)
        while received.withLockedValue({ $0.count }) < 150, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        let packets = received.withLockedValue { $0 }
        let sent = try await loop.submit { tone.packetsSent }.get()
        #expect(packets.count >= 150, "received \(packets.count) packets; sent \(sent)")

        let mono = ToneDetector.monoSamples(ofOpus: packets)
        let window = Array(mono.suffix(48_000))
        #expect(ToneDetector.strength(window, frequency: 523) > 0.5)
        #expect(ToneDetector.strength(window, frequency: 440) < 0.05)

        await publisher.close()
        await subscriber.close()
        await alice.close()
        await bob.close()
        try await group.shutdownGracefully()
        try await server.stop()
    }
}

/// The SDK's room API end to end: events as an AsyncSequence, publish, receive, chat, presence, leave.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ParleyRoomTests {
    /// Collects events until `found` matches one, or `timeout` passes.
    static func wait(
        for room: ParleyRoom, _ what: String, timeout: Duration = .seconds(10), _ found: @escaping @Sendable (ParleyRoom.Event) -> Bool
    ) async throws {
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                for await event in room.events where found(event) { return true }
                return false
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return false
            }
            let result = try await group.next() ?? false
            group.cancelAll()
            #expect(result, "no \(what) within \(timeout)")
        }
    }

    @Test func joinPublishReceiveChatPresenceAndLeave() async throws {
        let server = try await TestServer.start()
        let alice = try await ParleyRoom.connect(url: server.url, token: try await server.token("alice", room: "sdkroom"))
        let bob = try await ParleyRoom.connect(url: server.url, token: try await server.token("bob", room: "sdkroom"))
        #expect(bob.joined.participants.map(\.identity) == ["alice"])
        try await Self.wait(for: alice, "bob's join") { if case .participantJoined(let info) = $0 { info.identity == "bob" } else { false } }

        let audio = NIOLockedValueBox<[[UInt8]]>([])
        bob.onMedia = { packet, header, track in
            guard track.kind == "audio" else { return }
            audio.withLockedValue { $0.append(Array(UnsafeRawBufferPointer(rebasing: packet[header.payloadRange]))) }
        }
        let tracks = try await alice.publishTone(frequency: 659)
        #expect(tracks.map(\.kind) == ["audio"])
        let aliceSid = alice.sid
        try await Self.wait(for: bob, "alice's track") { if case .trackPublished(let participant, _) = $0 { participant == aliceSid } else { false } }
        let deadline = ContinuousClock.now + .seconds(10)
        while audio.withLockedValue({ $0.count }) < 100, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        let mono = ToneDetector.monoSamples(ofOpus: audio.withLockedValue { $0 })
        #expect(mono.count >= 96_000)
        #expect(ToneDetector.strength(Array(mono.suffix(48_000)), frequency: 659) > 0.5)

        let sent = try await bob.sendChat("hello from the SDK")
        #expect(sent.from.identity == "bob")
        try await Self.wait(for: alice, "bob's chat") { if case .chat(let message) = $0 { message.text == "hello from the SDK" } else { false } }
        try await alice.setPresence(.away, text: "lunch")
        try await Self.wait(for: bob, "alice's presence") {
            if case .presence(let event) = $0 { event.identity == "alice" && event.status == .away } else { false }
        }
        await alice.leave()
        try await Self.wait(for: bob, "alice leaving") { if case .participantLeft(_, let identity) = $0 { identity == "alice" } else { false } }
        await bob.leave()
        try await server.stop()
    }

    @Test func selectiveSubscriptionMuteAndTyping() async throws {
        let server = try await TestServer.start()
        let alice = try await ParleyRoom.connect(url: server.url, token: try await server.token("alice", room: "choosy"))
        let bob = try await ParleyRoom.connect(url: server.url, token: try await server.token("bob", room: "choosy"))
        let packets = NIOLockedValueBox(0)
        bob.onMedia = { _, _, track in if track.kind == "audio" { packets.withLockedValue { $0 += 1 } } }
        /// Audio packets bob receives over `window`.
        func arriving(over window: Duration) async throws -> Int {
            let before = packets.withLockedValue { $0 }
            try await Task.sleep(for: window)
            return packets.withLockedValue { $0 } - before
        }
        let track = try #require(try await alice.publishTone(frequency: 523).first?.sid)
        let deadline = ContinuousClock.now + .seconds(10)
        while packets.withLockedValue({ $0 }) < 25, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        #expect(try await arriving(over: .seconds(1)) > 30, "bob hears alice")

        try await bob.subscribe(tracks: [track], false)
        try await Task.sleep(for: .seconds(1))
        #expect(try await arriving(over: .seconds(1)) == 0, "nothing arrives once bob unsubscribed")
        try await bob.subscribe(tracks: [track])
        try await Task.sleep(for: .seconds(1))
        #expect(try await arriving(over: .seconds(1)) > 30, "audio is back after subscribing again")

        try await alice.setMuted(true, track: track)
        try await Self.wait(for: bob, "alice's mute") {
            if case .trackMuted(_, let mutedTrack, true) = $0 { mutedTrack == track } else { false }
        }
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await arriving(over: .seconds(1)) == 0, "a muted track is not forwarded")
        try await alice.setTyping(true)
        try await Self.wait(for: bob, "alice typing") { if case .typing(let event) = $0 { event.active } else { false } }
        await alice.leave()
        await bob.leave()
        try await server.stop()
    }
}
