import Congestion
import Foundation
import NIOPosix
@testable import ParleyClient
import ParleyProtocol
@testable import ParleyTools
import RTP
import SDP
import Testing

/// The SDK's adaptive video: a simulcast publisher (three synthetic VP8 layers with RTX and
/// transport-cc) against a live server, subscribers that ask for a quality and see which layer
/// they get; and, with times passed in, the pieces: the offer, RTX wrapping, transport-wide
/// feedback credited per stream, a VP8 keyframe's size.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ClientSimulcastTests {
    // MARK: Against a server

    @Test func eachSubscriberGetsTheLayerOfTheQualityItAskedFor() async throws {
        let server = try await TestServer.start()
        let alice = try await server.room("alice", room: "simulcast")
        let aliceEvents = EventLog(alice)
        let tracks = try await alice.publishTone(frequency: 440, video: true, simulcast: true)
        let video = try #require(tracks.first { $0.kind == "video" })
        #expect(video.layers?.map(\.rid) == ["0", "1", "2"])
        try await waitUntil { await alice.statistics().sent.filter { $0.kind == "video" }.allSatisfy { $0.packetsSent > 0 } }

        let bob = try await server.room("bob", room: "simulcast")
        let carol = try await server.room("carol", room: "simulcast")
        try await bob.subscribe(tracks: [video.sid], quality: .low)
        try await carol.subscribe(tracks: [video.sid], quality: .high)
        @Sendable func receivedWidth(_ room: ParleyRoom) async -> Int? { await room.statistics().received.first { $0.kind == "video" }?.frameWidth }
        try await waitUntil {
            let (low, high) = (await receivedWidth(bob), await receivedWidth(carol))
            return low == 320 && high == 1280
        }
        let bobVideo = try #require(await bob.statistics().received.first { $0.kind == "video" })
        #expect(bobVideo.frameHeight == 180)
        #expect(bobVideo.trackSid == video.sid)
        #expect(await carol.statistics().received.first { $0.kind == "video" }?.frameHeight == 720)

        // Nobody needs the middle layer: dynacast pauses it at alice, and it stops.
        try await aliceEvents.first("publisher.layers without the middle layer") { event in
            if case .publisherLayers(video.sid, let active) = event { active == ["0", "2"] } else { false }
        }
        let paused = try #require(await alice.statistics().sent.first { $0.layer == 1 })
        #expect(paused.paused)
        try await Task.sleep(for: .milliseconds(300))
        let later = await alice.statistics().sent.filter { $0.kind == "video" }
        #expect(later.first { $0.layer == 1 }?.packetsSent == paused.packetsSent)
        #expect(later.first { $0.layer == 0 }.map { !$0.paused } == true)
        // Bob still gets the low layer, a quarter of the picture, and a fraction of the top's bitrate.
        #expect(await receivedWidth(bob) == 320)

        // Asked for high now, bob moves up (and alice's middle layer stays unneeded).
        try await bob.subscribe(tracks: [video.sid], quality: .high)
        try await waitUntil { await receivedWidth(bob) == 1280 }
        let keyframes = try #require(await bob.statistics().received.first { $0.kind == "video" }?.keyframesByWidth)
        #expect(keyframes[320, default: 0] >= 1 && keyframes[1280, default: 0] >= 1)
        try await server.stop(leaving: alice, bob, carol)
    }

    @Test func theSimulcastPublisherGetsTransportFeedbackAndAnswersNacksOverRTX() async throws {
        let server = try await TestServer.start()
        let alice = try await server.room("alice", room: "simulcast-rtx")
        let bob = try await server.room("bob", room: "simulcast-rtx")
        let tracks = try await alice.publishTone(frequency: 440, video: true, simulcast: true)
        let video = try #require(tracks.first { $0.kind == "video" })
        try await bob.subscribe(tracks: [video.sid], quality: .low)
        // Originals of the low layer only: their retransmissions leave on its RTX SSRC and get through.
        let dropped = DropOnce(every: 5, upTo: 20)
        await alice.simulateLoss(sent: { header, source in source?.layer == 0 && dropped.drops(header.sequenceNumber) })

        try await waitUntil { dropped.count == 20 }
        try await waitUntil { await alice.statistics().sent.first { $0.layer == 0 }.map { $0.retransmissions >= 20 } ?? false }
        try await waitUntil { try await server.metric("parley_media_repairs_total") >= 20 }
        let sent = await alice.statistics().sent
        let low = try #require(sent.first { $0.layer == 0 })
        #expect(low.retransmissionSSRC != nil && low.retransmissionSSRC != low.ssrc)
        #expect(low.retransmissionMisses == 0)
        #expect(try await server.metric(#"parley_media_nacks_total{direction="out"}"#) >= Double(low.nacksReceived))
        // Transport-wide feedback every 50 ms: it acknowledged packets of every source, audio too,
        // and reported the dropped originals missing.
        #expect(sent.allSatisfy { $0.transportFeedbackReceived > 10 }, "\(sent)")
        #expect(sent.allSatisfy { $0.packetsAcknowledged > 0 }, "\(sent)")
        // The last drop's feedback may still be on its way (it goes every 50 ms).
        try await waitUntil { await alice.statistics().sent.first { $0.layer == 0 }.map { $0.packetsReportedMissing >= 20 } ?? false }
        #expect(try await server.metric(#"parley_media_transport_feedback_total{direction="out"}"#) >= Double(low.transportFeedbackReceived))
        // Repaired upstream, so bob misses nothing of the low layer.
        try await waitUntil {
            await bob.statistics().received.first { $0.kind == "video" }.map { $0.packetsLost <= 0 && $0.frameWidth == 320 } ?? false
        }
        try await server.stop(leaving: alice, bob)
    }

    // MARK: The pieces

    @Test func theSimulcastOfferListsThreeLayersWithRTXAndTransportCC() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let publisher = try await loop.submit { try PublisherConnection(loop: loop) }.get()
        let text = try await loop.submit { publisher.makeOffer(video: true, simulcast: true) }.get()
        let sources = try await loop.submit { publisher.sources }.get()
        let offer = try SessionDescription(parsing: text)
        let videoSection = try #require(offer.media.first { $0.kind == "video" })
        let layers = sources.filter { $0.kind == "video" }
        #expect(layers.map(\.layer) == [0, 1, 2])
        #expect(videoSection.ssrcGroups.first { $0.semantics == "SIM" }?.ssrcs == layers.map(\.ssrc))
        let pairs = videoSection.ssrcGroups.filter { $0.semantics == "FID" }.map(\.ssrcs)
        #expect(pairs == layers.map { [$0.ssrc, $0.retransmissionSSRC ?? 0] })
        #expect(videoSection.codecs.contains { $0.name == "rtx" && $0.parameter("apt") == "96" })
        #expect(videoSection.codecs.first { $0.name == "VP8" }?.feedback.contains("transport-cc") == true)
        for section in offer.media {
            #expect(section.extmaps.contains { $0.uri == Extmap.transportCCURI && $0.id == PublisherConnection.transportSequenceID })
        }
        // Without simulcast the offer stays as it was: one SSRC, no RTX, no transport-cc.
        let plain = try SessionDescription(parsing: try await loop.submit { publisher.makeOffer(video: true) }.get())
        let plainVideo = try #require(plain.media.first { $0.kind == "video" })
        #expect(plainVideo.ssrcGroups.isEmpty && !plainVideo.codecs.contains { $0.name == "rtx" })
        #expect(!plain.media.contains { $0.extmaps.contains { $0.uri == Extmap.transportCCURI } })
        try await group.shutdownGracefully()
    }

    @Test func nackedPacketsOfAStreamWithRTXAreHandedOverForItsRTXStream() throws {
        var streams = OutboundStreams()
        streams.willSend(ssrc: 7, clockRate: 90_000, retransmittable: true)
        streams.retransmit(7, on: 70, payloadType: 97)
        for sequenceNumber in UInt16(1)...5 {
            ClientRTCPTests.packet(sequenceNumber, ssrc: 7).withUnsafeBytes { streams.sent($0, header: RTPHeader($0)!, now: 0) }
        }
        let first = try #require(streams.streams[7]?.retransmission?.nextSequenceNumber)
        var handed: [(original: UInt16, rtx: OutboundStreams.Retransmission?)] = []
        let nack = try #require(RTCPBuilder.genericNack(senderSSRC: 1, mediaSSRC: 7, lostSequenceNumbers: [2, 4, 900]))
        nack.withUnsafeBytes { raw in
            var iterator = RTCPCompoundIterator(raw)
            while let packet = iterator.next() {
                streams.handle(packet) { stored, retransmission in
                    handed.append((RTPHeader(stored)!.sequenceNumber, retransmission))
                    return true
                }
            }
        }
        #expect(handed.map(\.original) == [2, 4])
        #expect(handed.map { $0.rtx?.ssrc } == [70, 70])
        #expect(handed.map { $0.rtx?.payloadType } == [97, 97])
        // RTX numbers its own packets in a row (RFC 4588 §4), whatever the originals' numbers.
        #expect(handed.map { $0.rtx?.nextSequenceNumber } == [first, first &+ 1])
        #expect(streams.streams[7]?.retransmission?.nextSequenceNumber == first &+ 2)
        #expect(streams.streams[7]?.retransmissions == 2)
        #expect(streams.streams[7]?.retransmissionMisses == 1)
    }

    @Test func transportWideFeedbackIsCreditedToTheStreamEachPacketWentOutFor() throws {
        var streams = OutboundStreams()
        streams.willSend(ssrc: 7, clockRate: 90_000, retransmittable: true)
        streams.willSend(ssrc: 8, clockRate: 48_000, retransmittable: false)
        var numbers: [(sequence: UInt16, ssrc: UInt32)] = []
        for index in 0..<10 {
            let ssrc: UInt32 = index % 3 == 0 ? 8 : 7
            numbers.append((streams.takeTransportSequence(for: ssrc), ssrc))
        }
        #expect(zip(numbers, numbers.dropFirst()).allSatisfy { $0.sequence &+ 1 == $1.sequence })
        // The receiver got all but the second and the third (both of stream 7).
        let statuses = numbers.enumerated().map { index, number in
            TWCCFeedback.PacketStatus(sequenceNumber: number.sequence, arrivalMicroseconds: [1, 2].contains(index) ? nil : Int64(index) * 1000)
        }
        let feedback = TWCCFeedback(
            senderSSRC: 1, mediaSSRC: 7, baseSequenceNumber: numbers[0].sequence, referenceTime: 0, feedbackPacketCount: 0, packets: statuses)
        feedback.serialized().withUnsafeBytes { raw in
            var iterator = RTCPCompoundIterator(raw)
            while let packet = iterator.next() { streams.handle(packet) { _, _ in Issue.record("nothing to resend"); return false } }
        }
        #expect(streams.transportFeedbackReceived == 1)
        #expect(streams.streams[8]?.packetsAcknowledged == 4)
        #expect(streams.streams[7]?.packetsAcknowledged == 4)
        #expect(streams.streams[7]?.packetsReportedMissing == 2)
        #expect(streams.streams[8]?.packetsReportedMissing == 0)
        // Garbage with the right header is counted, not credited.
        let broken: [UInt8] = [0x8F, 205, 0, 2, 0, 0, 0, 1, 0, 0, 0, 7]
        broken.withUnsafeBytes { raw in
            var iterator = RTCPCompoundIterator(raw)
            while let packet = iterator.next() { streams.handle(packet) { _, _ in false } }
        }
        #expect(streams.malformedTransportFeedback == 1)
        #expect(streams.transportFeedbackReceived == 1)
    }

    @Test func videoWithoutAKeyframeAsksForOneEverySecondUntilOneComes() throws {
        let second: UInt64 = 1_000_000_000
        var streams = InboundStreams()
        streams.expect(ssrc: 7, clockRate: 90_000, nack: true, isVP8: true, pli: true)
        streams.expect(ssrc: 8, clockRate: 90_000, nack: true, isVP8: true, pli: false)
        func plis(at now: UInt64) -> [UInt32] {
            streams.dueKeyframeRequests(senderSSRC: 1, now: now).map { compound in
                compound.withUnsafeBytes { raw in
                    var iterator = RTCPCompoundIterator(raw)
                    return iterator.next().flatMap(RTCPPictureLossIndication.init)?.mediaSSRC ?? 0
                }
            }
        }
        // The first interval is the server's own request's.
        #expect(plis(at: 10 * second) == [])
        #expect(plis(at: 10 * second + second / 2) == [])
        #expect(plis(at: 11 * second) == [7])
        #expect(plis(at: 11 * second + second / 2) == [])
        #expect(plis(at: 12 * second) == [7])
        var camera = SyntheticVP8Camera(width: 320, height: 180, bitrate: 150_000, fps: 15)
        let packet = ClientRTCPTests.packet(1, ssrc: 7, payload: [0x90, 0x80, 0x81, 0x23] + camera.nextFrame(keyframe: true).bytes.prefix(200))
        packet.withUnsafeBytes { streams.received(RTPHeader($0)!, packet: $0, now: 12 * second) }
        #expect(streams.streams[7]?.frameWidth == 320 && streams.streams[7]?.keyframesByWidth == [320: 1])
        #expect(plis(at: 14 * second) == [])
        #expect(streams.streams[7]?.plisSent == 2)
    }

    @Test func aVP8KeyframesSizeIsReadFromItsFirstPacket() {
        var camera = SyntheticVP8Camera(width: 640, height: 360, bitrate: 500_000, fps: 15)
        let keyframe = camera.nextFrame(keyframe: true).bytes
        let interframe = camera.nextFrame(keyframe: false).bytes
        // The descriptors VideoSender writes: X, S on the first packet, a 15-bit picture id.
        let first: [UInt8] = [0x90, 0x80, 0x81, 0x23]
        let middle: [UInt8] = [0x80, 0x80, 0x81, 0x23]
        func size(_ payload: [UInt8]) -> [Int]? { payload.withUnsafeBytes { VP8Keyframe.size(ofPayload: $0).map { [$0.width, $0.height] } } }
        #expect(size(first + keyframe.prefix(100)) == [640, 360])
        #expect(size(first + interframe.prefix(100)) == nil)
        #expect(size(middle + keyframe.prefix(100)) == nil)
        // No descriptor extensions; a 7-bit picture id; TL0PICIDX and TID too.
        #expect(size([0x10] + keyframe.prefix(20)) == [640, 360])
        #expect(size([0x90, 0x80, 0x05] + keyframe.prefix(20)) == [640, 360])
        #expect(size([0x90, 0xE0, 0x05, 0x01, 0x40] + keyframe.prefix(20)) == [640, 360])
        // Too short to hold the header.
        #expect(size(first + keyframe.prefix(9)) == nil)
    }
}
