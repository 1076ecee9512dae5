import Foundation
import NIOConcurrencyHelpers
import ParleyClient
import ParleyProtocol
import ParleyTools
import ParleyServer
import RTP
import Testing

/// The SDK against a live server when the signaling connection is cut: the session resumes with
/// its sid while media keeps flowing, what was missed arrives after, and a session the server let
/// go is started again with its tracks. Then RTCP: NACKs answered both ways, receiver reports,
/// and the per-track statistics.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ParleyRoomSessionTests {
    @Test func aCutSignalingConnectionResumesTheSessionWhileTheToneKeepsPlaying() async throws {
        let server = try await TestServer.start()
        let cutEnds = Gate()
        let alice = try await server.room("alice", room: "cut")
        let bob = try await server.room("bob", room: "cut", reconnectPolicy: cutEnds.reconnectPolicy)
        let (aliceEvents, bobEvents) = (EventLog(alice), EventLog(bob))
        let audio = AudioCollector(bob)
        try await alice.publishTone(frequency: 659)
        try await waitUntil { audio.count >= 50 }
        let sid = bob.sid

        await bob.reconnect()
        try await bobEvents.first("reconnecting") { if case .reconnecting(1) = $0 { true } else { false } }
        // The server holds bob for the resume window; media does not depend on signaling.
        try await waitUntil { try await server.participants(in: "cut").contains { $0.identity == "bob" && $0.reconnecting == true } }
        let beforeGap = audio.count
        try await waitUntil { audio.count >= beforeGap + 25 }
        await cutEnds.open()
        try await bobEvents.first("reconnected") { if case .reconnected(resumed: true) = $0 { true } else { false } }

        #expect(bob.sid == sid)
        #expect(bob.joined.resumed)
        #expect(bob.participants.map(\.identity) == ["alice"])
        #expect(try await server.participants(in: "cut").map(\.identity).sorted() == ["alice", "bob"])
        #expect(try await server.metric("parley_session_resumes_total") == 1)
        try await alice.sendChat("after the cut")
        try await bobEvents.first("alice's chat") { if case .chat(let message) = $0 { message.text == "after the cut" } else { false } }
        try await bob.sendChat("back again")
        try await aliceEvents.first("bob's chat") { if case .chat(let message) = $0 { message.text == "back again" } else { false } }

        // The tone went on through the cut: nothing lost, and it still decodes.
        let afterCut = audio.count
        try await waitUntil { audio.count >= afterCut + 50 }
        let received = try #require(await bob.statistics().received.first { $0.kind == "audio" })
        #expect(received.packetsLost == 0)
        #expect(received.packetsReceived >= audio.count)
        #expect(ToneDetector.strength(Array(ToneDetector.monoSamples(ofOpus: audio.payloads).suffix(96_000)), frequency: 659) > 0.5)
        #expect(!aliceEvents.all.contains { if case .participantLeft = $0 { true } else { false } })
        try await server.stop(leaving: alice, bob)
    }

    @Test func whatHappenedWhileDisconnectedArrivesWhenTheSessionResumes() async throws {
        let server = try await TestServer.start()
        let cutEnds = Gate()
        let alice = try await server.room("alice", room: "away")
        let bob = try await server.room("bob", room: "away", reconnectPolicy: cutEnds.reconnectPolicy)
        let bobEvents = EventLog(bob)
        try await alice.sendChat("before the cut")
        try await bobEvents.first("the first chat") { if case .chat(let message) = $0 { message.text == "before the cut" } else { false } }

        await bob.reconnect()
        try await waitUntil { try await server.participants(in: "away").contains { $0.identity == "bob" && $0.reconnecting == true } }
        // Bob hears none of this live.
        let carol = try await server.room("carol", room: "away")
        let carolTracks = try await carol.publishTone(frequency: 880)
        try await alice.sendChat("while you were away")
        try await alice.setPresence(.busy, text: "in a call")
        try await waitUntil { try await server.participants(in: "away").contains { $0.presence?.status == .busy } }
        let carolAudio = AudioCollector(bob, from: carol.sid)
        await cutEnds.open()

        try await bobEvents.first("reconnected") { if case .reconnected(resumed: true) = $0 { true } else { false } }
        let carolSid = carol.sid
        let missed = bobEvents.all.drop { if case .reconnecting = $0 { false } else { true } }
        #expect(missed.contains { if case .participantJoined(let info) = $0 { info.sid == carolSid } else { false } })
        #expect(missed.contains { if case .trackPublished(carolSid, let track) = $0 { track.sid == carolTracks.first?.sid } else { false } })
        #expect(missed.contains { if case .presence(let event) = $0 { event.identity == "alice" && event.status == .busy } else { false } })
        let chats = bobEvents.all.compactMap { if case .chat(let message) = $0 { message.text } else { nil } }
        #expect(chats == ["before the cut", "while you were away"])
        #expect(bob.participants.map(\.identity) == ["alice", "carol"])
        #expect(bob.participants.first { $0.identity == "carol" }?.tracks?.map(\.sid) == carolTracks.map(\.sid))
        #expect(bob.participants.first { $0.identity == "alice" }?.presence?.status == .busy)
        // Carol's track, published while bob was away, is offered to him on resuming.
        try await waitUntil { carolAudio.count >= 100 }
        #expect(ToneDetector.strength(Array(ToneDetector.monoSamples(ofOpus: carolAudio.payloads).suffix(48_000)), frequency: 880) > 0.5)
        try await server.stop(leaving: carol, alice, bob)
    }

    @Test func requestsMadeWhileReconnectingWaitAndGoThroughOnce() async throws {
        let server = try await TestServer.start()
        let cutEnds = Gate()
        let alice = try await server.room("alice", room: "patient")
        let bob = try await server.room("bob", room: "patient", reconnectPolicy: cutEnds.reconnectPolicy)
        let (aliceEvents, bobEvents) = (EventLog(alice), EventLog(bob))
        await bob.reconnect()
        try await bobEvents.first("reconnecting") { if case .reconnecting(1) = $0 { true } else { false } }

        // Made while the connection is down: they wait instead of failing.
        let chat = Task { try await bob.sendChat("typed while away") }
        let presence = Task { try await bob.setPresence(.away, text: "on a train") }
        try await Task.sleep(for: .milliseconds(300))
        #expect(!aliceEvents.all.contains { if case .chat = $0 { true } else { false } })
        await cutEnds.open()

        let sent = try await chat.value
        try await presence.value
        #expect(sent.text == "typed while away")
        try await aliceEvents.first("bob's chat") { if case .chat(let message) = $0 { message.text == "typed while away" } else { false } }
        try await aliceEvents.first("bob's presence") { if case .presence(let event) = $0 { event.identity == "bob" && event.status == .away } else { false } }
        try await Task.sleep(for: .milliseconds(200))
        #expect(aliceEvents.all.filter { if case .chat = $0 { true } else { false } }.count == 1)

        // Once the room is left, a request fails at once.
        await bob.leave()
        await #expect(throws: SignalingClientError.self) { try await bob.sendChat("too late") }
        try await server.stop(leaving: alice)
    }

    @Test func aSessionTheServerLetGoStartsAgainAndPublishesAgain() async throws {
        let clock = ManualClock()
        let server = try await TestServer.start(clock: clock, ["signaling.resumeWindow=20s"])
        let cutEnds = Gate()
        let alice = try await server.room("alice", room: "gone", reconnectPolicy: cutEnds.reconnectPolicy)
        let bob = try await server.room("bob", room: "gone")
        let (aliceEvents, bobEvents) = (EventLog(alice), EventLog(bob))
        try await alice.publishTone(frequency: 523)
        let oldSid = alice.sid
        try await bobEvents.first("alice's track") { if case .trackPublished(oldSid, _) = $0 { true } else { false } }

        let sleepers = clock.sleeperCount
        await alice.reconnect()
        try await waitUntil { clock.sleeperCount > sleepers }
        clock.advance(by: .seconds(20))
        try await bobEvents.first("alice leaving") { if case .participantLeft(oldSid, _) = $0 { true } else { false } }
        await cutEnds.open()

        try await aliceEvents.first("a new session") { if case .reconnected(resumed: false) = $0 { true } else { false } }
        let newSid = alice.sid
        #expect(newSid != oldSid)
        try await bobEvents.first("alice's new track") { if case .trackPublished(newSid, _) = $0 { true } else { false } }
        let audio = AudioCollector(bob, from: newSid)
        try await waitUntil { audio.count >= 100 }
        #expect(ToneDetector.strength(Array(ToneDetector.monoSamples(ofOpus: audio.payloads).suffix(48_000)), frequency: 523) > 0.5)
        let sent = await alice.statistics().sent
        #expect(sent.map(\.kind) == ["audio"])
        #expect(sent.first?.packetsSent ?? 0 >= 100)
        try await server.stop(leaving: alice, bob)
    }

    @Test func theSubscriberNacksLostVideoAndTheServerResendsIt() async throws {
        let server = try await TestServer.start()
        let alice = try await server.room("alice", room: "nack-down")
        let bob = try await server.room("bob", room: "nack-down")
        let dropped = DropOnce(every: 7, upTo: 20)
        await bob.simulateLoss(received: { header, track in track?.kind == "video" && dropped.drops(header.sequenceNumber) })
        try await alice.publishTone(frequency: 440, video: true)

        try await waitUntil { dropped.count == 20 }
        try await waitUntil { try await server.metric("parley_media_retransmissions_total") >= 20 }
        // A retransmission that came after a second NACK is a duplicate: loss goes below zero.
        try await waitUntil { await bob.statistics().received.first { $0.kind == "video" }.map { $0.packetsLost <= 0 } ?? false }
        let video = try #require(await bob.statistics().received.first { $0.kind == "video" })
        #expect(video.nacksSent > 0)
        #expect(try await server.metric(#"parley_media_nacks_total{direction="in"}"#) >= Double(video.nacksSent))
        try await waitUntil { try await server.metric("parley_media_receiver_reports_total") > 0 }
        try await server.stop(leaving: alice, bob)
    }

    @Test func thePublisherResendsWhatTheServerNacks() async throws {
        let server = try await TestServer.start()
        let alice = try await server.room("alice", room: "nack-up")
        let bob = try await server.room("bob", room: "nack-up")
        try await alice.publishTone(frequency: 440, video: true)
        let dropped = DropOnce(every: 5, upTo: 20)
        await alice.simulateLoss(sent: { header, source in source?.kind == "video" && dropped.drops(header.sequenceNumber) })

        try await waitUntil { dropped.count == 20 }
        try await waitUntil { await alice.statistics().sent.first { $0.kind == "video" }.map { $0.retransmissions >= 20 } ?? false }
        let sent = try #require(await alice.statistics().sent.first { $0.kind == "video" })
        #expect(sent.nacksReceived > 0)
        #expect(sent.retransmissionMisses == 0)
        #expect(try await server.metric(#"parley_media_nacks_total{direction="out"}"#) >= Double(sent.nacksReceived))
        // Recovered upstream, so the subscriber misses nothing either.
        try await waitUntil { await bob.statistics().received.first { $0.kind == "video" }.map { $0.packetsLost <= 0 && $0.packetsReceived > 0 } ?? false }
        try await server.stop(leaving: alice, bob)
    }

    @Test func perTrackStatisticsCountWhatWasSentReceivedAndLost() async throws {
        let server = try await TestServer.start()
        let alice = try await server.room("alice", room: "stats")
        let tracks = try await alice.publishTone(frequency: 440, video: true)
        // Bob comes once alice's media flows, so his down-track's keyframe request reaches her.
        try await waitUntil { await alice.statistics().sent.allSatisfy { $0.packetsSent > 0 } }
        let bob = try await server.room("bob", room: "stats")
        // Audio does not negotiate NACK: what is lost stays lost and is counted.
        let dropped = DropOnce(every: 11, upTo: 10)
        await bob.simulateLoss(received: { header, track in track?.kind == "audio" && dropped.drops(header.sequenceNumber) })
        try await waitUntil { dropped.count == 10 }
        // Two report intervals after the drops, so the bitrates and the server's reports are in.
        try await Task.sleep(for: .milliseconds(2200))

        let received = await bob.statistics().received
        let sent = await alice.statistics().sent
        #expect(Set(received.map(\.trackSid)) == Set(tracks.map(\.sid)))
        #expect(sent.map(\.trackSid) == tracks.map(\.sid))
        let audioIn = try #require(received.first { $0.kind == "audio" })
        let videoIn = try #require(received.first { $0.kind == "video" })
        let audioOut = try #require(sent.first { $0.kind == "audio" })
        let videoOut = try #require(sent.first { $0.kind == "video" })
        #expect(audioIn.participantSid == alice.sid)
        #expect(audioIn.packetsLost == 10)
        #expect(audioIn.packetsExpected == audioIn.packetsReceived + 10)
        #expect(audioIn.nacksSent == 0)
        #expect(audioIn.jitterMilliseconds < 20)
        #expect(audioIn.bytesReceived > audioIn.packetsReceived * 12)
        #expect(audioIn.bitrate > 8_000 && audioIn.bitrate < 200_000, "audio at \(audioIn.bitrate) bit/s")
        #expect(videoIn.packetsLost == 0)
        #expect(videoIn.averageBitrate > 150_000 && videoIn.averageBitrate < 2_000_000, "video at \(videoIn.averageBitrate) bit/s")
        // What bob received, alice sent (and more before he came).
        #expect(audioOut.packetsSent >= audioIn.packetsExpected)
        #expect(videoOut.packetsSent >= videoIn.packetsReceived)
        #expect(videoOut.bytesSent > videoOut.packetsSent * 100)
        #expect(videoOut.bitrate > 150_000)
        // The server asked for a keyframe when bob's down-track started, and reports what it gets.
        #expect(videoOut.plisReceived + videoOut.firsReceived >= 1)
        #expect(audioOut.remotePacketsLost == 0)
        #expect(audioOut.remoteJitterMilliseconds.map { $0 < 20 } == true)
        #expect(audioOut.retransmissions == 0)
        try await server.stop(leaving: alice, bob)
    }
}

/// Holds callers until opened: a reconnect policy's sleep that ends when the test says.
actor Gate {
    private var isOpen = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func wait() async {
        if isOpen { return }
        await withCheckedContinuation { waiters.append($0) }
    }

    /// Reconnects as soon as the gate opens.
    nonisolated var reconnectPolicy: ParleyRoom.ReconnectPolicy { ParleyRoom.ReconnectPolicy(sleep: { _ in await self.wait() }) }

    func open() {
        isOpen = true
        for waiter in waiters { waiter.resume() }
        waiters.removeAll()
    }
}

/// Every event of a room, kept as it comes, so a test can wait for one and look at the rest.
final class EventLog: Sendable {
    private let events: NIOLockedValueBox<[ParleyRoom.Event]>
    private let reader: Task<Void, Never>

    init(_ room: ParleyRoom) {
        let events = NIOLockedValueBox<[ParleyRoom.Event]>([])
        self.events = events
        reader = Task { for await event in room.events { events.withLockedValue { $0.append(event) } } }
    }

    var all: [ParleyRoom.Event] { events.withLockedValue { $0 } }

    /// Waits for an event that matches.
    func first(_ what: String, timeout: Duration = .seconds(15), where matches: @escaping @Sendable (ParleyRoom.Event) -> Bool) async throws {
        do {
            try await waitUntil(timeout: timeout) { self.all.contains(where: matches) }
        } catch {
            Issue.record("no \(what); events: \(all)")
            throw error
        }
    }
}

/// The audio payloads a room receives (of one participant's tracks, or everyone's), in order.
final class AudioCollector: Sendable {
    private let received = NIOLockedValueBox<[[UInt8]]>([])

    init(_ room: ParleyRoom, from participant: String? = nil) {
        let received = received
        room.onMedia = { packet, header, track in
            guard track.kind == "audio", participant == nil || track.participantSid == participant else { return }
            received.withLockedValue { $0.append(Array(UnsafeRawBufferPointer(rebasing: packet[header.payloadRange]))) }
        }
    }

    var count: Int { received.withLockedValue { $0.count } }
    var payloads: [[UInt8]] { received.withLockedValue { $0 } }
}

/// Simulated loss that takes every `every`-th sequence number once, `upTo` of them, after the
/// stream started (a receiver counts loss from its first packet): a dropped packet's
/// retransmission gets through.
final class DropOnce: Sendable {
    private let state = NIOLockedValueBox((passed: 0, dropped: Set<UInt16>()))
    private let every: UInt16
    private let upTo: Int

    init(every: UInt16, upTo: Int) {
        self.every = every
        self.upTo = upTo
    }

    var count: Int { state.withLockedValue { $0.dropped.count } }

    func drops(_ sequenceNumber: UInt16) -> Bool {
        state.withLockedValue { state in
            guard state.passed >= 10, sequenceNumber % every == 0, state.dropped.count < upTo,
                state.dropped.insert(sequenceNumber).inserted
            else {
                state.passed += 1
                return false
            }
            return true
        }
    }
}

extension TestServer {
    /// `identity` joined to `room` through the SDK.
    func room(
        _ identity: String, room: String, reconnectPolicy: ParleyRoom.ReconnectPolicy = ParleyRoom.ReconnectPolicy()
    ) async throws -> ParleyRoom {
        try await ParleyRoom.connect(url: url, token: try await token(identity, room: room), reconnectPolicy: reconnectPolicy)
    }

    /// The rooms leave, then the server stops.
    func stop(leaving rooms: ParleyRoom...) async throws {
        for room in rooms { await room.leave() }
        try await stop()
    }

    /// The room's participants as the admin API lists them.
    func participants(in room: String) async throws -> [ParticipantInfo] {
        let (status, json) = try await http("GET", "/v1/rooms/\(room)/participants")
        guard status == 200, let list = json["participants"] else { return [] }
        return try JSONDecoder().decode([ParticipantInfo].self, from: JSONSerialization.data(withJSONObject: list))
    }

    /// One series of /metrics, e.g. `parley_media_nacks_total{direction="in"}`; 0 when absent.
    func metric(_ series: String) async throws -> Double {
        let text = try await http("GET", "/metrics", token: nil).json["_text"] as? String ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1)) ?? 0
        }
        return 0
    }
}
