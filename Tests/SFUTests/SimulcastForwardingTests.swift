import Congestion
import RTP
import Testing
@testable import SFU
@testable import WebRTC

/// A VP8 packet of one simulcast layer as Chromium sends it: mid (id 1), rid or repaired rid
/// (id 10 or 11), the transport-wide sequence number (id 3), then a payload descriptor with a
/// 15-bit picture id and the VP8 payload header (its P bit clear on a keyframe).
func simulcastPacket(
    ssrc: UInt32, rid: String, sequence: UInt16, timestamp: UInt32, pictureID: UInt16, keyframe: Bool, payloadType: UInt8 = 96,
    transportSequence: UInt16 = 0, repaired: Bool = false, osn: UInt16? = nil, startOfFrame: Bool = true
) -> [UInt8] {
    var packet: [UInt8] = [0x90, payloadType, UInt8(sequence >> 8), UInt8(sequence & 0xFF)]
    packet += withUnsafeBytes(of: timestamp.bigEndian, Array.init) + withUnsafeBytes(of: ssrc.bigEndian, Array.init)
    var elements: [UInt8] = [0x10, UInt8(ascii: "0")]
    let ridBytes = Array(rid.utf8)
    elements += [(repaired ? 11 : 10) << 4 | UInt8(ridBytes.count - 1)] + ridBytes
    elements += [0x31, UInt8(transportSequence >> 8), UInt8(transportSequence & 0xFF)]
    while elements.count % 4 != 0 { elements.append(0) }
    packet += [0xBE, 0xDE, 0, UInt8(elements.count / 4)] + elements
    if let osn { packet += [UInt8(osn >> 8), UInt8(osn & 0xFF)] }
    packet += [startOfFrame ? 0x90 : 0x80, 0x80, 0x80 | UInt8(pictureID >> 8 & 0x7F), UInt8(pictureID & 0xFF)]
    // The VP8 frame tag; a keyframe's carries the start code and a 480x270 size.
    packet += keyframe ? [0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0xE0, 0x01, 0x0E, 0x01] : [0x11, 0x02, 0x00]
    packet += [UInt8](repeating: 0x55, count: 60)
    return packet
}

@Suite(.serialized, .timeLimit(.minutes(2))) struct SimulcastForwardingTests {
    static let vp8 = RTPCodec(payloadType: 96, name: "VP8", clockRate: 90_000)
    static let rtx = RTPCodec(payloadType: 97, name: "rtx", clockRate: 90_000, fmtp: "apt=96")
    static let ssrcs: [String: UInt32] = ["q": 0x1000_0001, "h": 0x1000_0002, "f": 0x1000_0003]

    /// Publisher "pub" sends q, h and f; subscriber "sub" took VP8 as 100 with RTX 101 and
    /// transport-cc as id 5.
    static func setUp(_ fixture: RoomFixture) async throws -> (publisher: Peer, subscriber: Peer, downTrack: DownTrack) {
        try await fixture.onLoop { () -> (Peer, Peer, DownTrack) in
            let publisher = try fixture.connect("pub", role: .publisher)
            let publication = fixture.room.publish(
                participant: "pub", trackSid: "TR_v", kind: .video, mid: "0", ssrc: nil,
                layers: ["q", "h", "f"].map { Publication.LayerDescription(rid: $0) }, codecs: [vp8, rtx],
                extensions: RTPExtensionIDs(mid: 1, transportCC: 3, rid: 10, repairedRID: 11),
                feedback: Publication.Feedback(nack: true, pli: true, fir: true, remb: true, transportCC: true), retransmission: [97: 96])
            let subscriber = try fixture.connect("sub", role: .subscriber)
            let downTrack = fixture.room.subscribe("sub", to: publication, mid: "0")
            fixture.room.negotiate(
                downTrack, codecs: [RTPCodec(payloadType: 100, name: "VP8", clockRate: 90_000)], retransmissionPayloadType: 101,
                extensions: RTPExtensionIDs(mid: 1, transportCC: 5))
            return (publisher, subscriber, downTrack)
        }
    }

    static func headers(_ packets: [[UInt8]]) -> [RTPHeader] { packets.compactMap { $0.withUnsafeBytes { RTPHeader($0) } } }

    @Test func eachLayerIsLearnedByItsRidAndTheSubscriberGetsOneAtATimeSwitchingAtKeyframes() async throws {
        let fixture = try RoomFixture()
        let (publisher, subscriber, downTrack) = try await Self.setUp(fixture)
        let (first, afterSwitch, statistics, plis) = try await fixture.onLoop { () -> ([[UInt8]], [[UInt8]], SFUStatistics, Int) in
            let now = fixture.port.now()
            var transportSequence: UInt16 = 0
            func send(_ rid: String, _ sequence: UInt16, keyframe: Bool, at time: UInt64) throws {
                transportSequence &+= 1
                try publisher.sendRTP(
                    simulcastPacket(
                        ssrc: Self.ssrcs[rid]!, rid: rid, sequence: sequence, timestamp: UInt32(sequence) * 4500, pictureID: sequence, keyframe: keyframe,
                        transportSequence: transportSequence), now: time)
            }
            // A new subscriber starts on the middle layer, at its keyframe.
            for rid in ["q", "h", "f"] { try send(rid, 10, keyframe: false, at: now) }
            for rid in ["q", "h", "f"] { try send(rid, 11, keyframe: true, at: now) }
            for rid in ["q", "h", "f"] { try send(rid, 12, keyframe: false, at: now) }
            // A rid nobody negotiated is dropped and counted.
            try publisher.sendRTP(simulcastPacket(ssrc: 0x1000_0009, rid: "x", sequence: 1, timestamp: 0, pictureID: 1, keyframe: true), now: now)
            let first = subscriber.received(from: fixture.sink).rtp
            _ = publisher.received(from: fixture.sink)
            // Up to the top layer: it is asked for a keyframe, and the switch waits for it.
            fixture.room.apply(2, temporal: 2, to: downTrack, now: now + 100_000_000)
            let plis = publisher.pictureLossIndications(for: Self.ssrcs["f"]!, from: fixture.sink)
            for rid in ["q", "h", "f"] { try send(rid, 13, keyframe: false, at: now + 150_000_000) }
            for rid in ["q", "h", "f"] { try send(rid, 14, keyframe: true, at: now + 200_000_000) }
            for rid in ["q", "h", "f"] { try send(rid, 15, keyframe: false, at: now + 250_000_000) }
            return (first, subscriber.received(from: fixture.sink).rtp, fixture.room.workerStatistics.counts, plis)
        }
        let publication = downTrack.publication
        #expect(publication.layers.map(\.ssrc) == ["q", "h", "f"].map { Self.ssrcs[$0] })
        #expect(publication.layers.map(\.width) == [480, 480, 480], "each layer's size, from its keyframe")
        #expect(statistics.droppedUnknownSSRC == 1)
        #expect(plis == 1)

        let before = Self.headers(first), after = Self.headers(afterSwitch)
        #expect(before.count == 2, "h's keyframe and the packet after it")
        #expect(after.count == 4, "h's 13 and 14 (h flows until f's keyframe), then f from its keyframe: \(after.map(\.sequenceNumber))")
        let all = before + after
        #expect(all.allSatisfy { $0.ssrc == downTrack.outgoingSSRC && $0.payloadType == 100 })
        let sequences = all.map(\.sequenceNumber)
        #expect(zip(sequences, sequences.dropFirst()).allSatisfy { $1 == $0 &+ 1 }, "one continuous stream: \(sequences)")
        let timestamps = all.map(\.timestamp)
        #expect(zip(timestamps, timestamps.dropFirst()).allSatisfy { Int32(bitPattern: $1 &- $0) >= 0 }, "never back: \(timestamps)")
        // VP8 picture ids continue across the switch: h's 11…14 then f's 14 and 15 go out as 15 and 16.
        let pictureIDs = (first + afterSwitch).map { packet in
            packet.withUnsafeBytes { bytes -> Int in
                let start = RTPHeader(bytes)!.payloadRange.lowerBound
                return Int(bytes[start + 2] & 0x7F) << 8 | Int(bytes[start + 3])
            }
        }
        #expect(pictureIDs == [11, 12, 13, 14, 15, 16])
        // Every copy carries a transport-wide sequence number under the subscriber's id, counting up.
        let wide = (first + afterSwitch).compactMap { packet in
            packet.withUnsafeBytes { bytes -> UInt16? in
                let header = RTPHeader(bytes)!
                guard let range = header.extensionElement(id: 5, in: bytes) else { return nil }
                return TransportSequenceNumber.read(UnsafeRawBufferPointer(rebasing: bytes[range]))
            }
        }
        #expect(wide.count == 6 && zip(wide, wide.dropFirst()).allSatisfy { $1 == $0 &+ 1 }, "\(wide)")
        #expect(downTrack.currentLayer == 2 && downTrack.layerSwitches == 1)
        try await fixture.shutdown()
    }

    @Test func retransmissionsAreUnwrappedFromThePublisherAndSentToTheSubscriberOnItsRTXStream() async throws {
        let fixture = try RoomFixture()
        let (publisher, subscriber, downTrack) = try await Self.setUp(fixture)
        let (resent, statistics) = try await fixture.onLoop { () -> ([[UInt8]], SFUStatistics) in
            let now = fixture.port.now()
            let h = Self.ssrcs["h"]!
            try publisher.sendRTP(simulcastPacket(ssrc: h, rid: "h", sequence: 100, timestamp: 0, pictureID: 1, keyframe: true), now: now)
            // 101 is lost upstream and comes back on RTX (its own SSRC, learned by the repaired rid).
            try publisher.sendRTP(simulcastPacket(ssrc: h, rid: "h", sequence: 102, timestamp: 3000, pictureID: 3, keyframe: false), now: now)
            try publisher.sendRTP(
                simulcastPacket(
                    ssrc: 0x2000_0002, rid: "h", sequence: 7, timestamp: 1500, pictureID: 2, keyframe: false, payloadType: 97, repaired: true, osn: 101),
                now: now)
            // Padding-only RTX (the publisher probing): counted, not forwarded.
            var padding: [UInt8] = [0xA0, 97, 0, 8] + withUnsafeBytes(of: UInt32(0).bigEndian, Array.init)
                + withUnsafeBytes(of: UInt32(0x2000_0002).bigEndian, Array.init)
            padding += [UInt8](repeating: 0, count: 99) + [100]
            try publisher.sendRTP(padding, now: now)
            let forwarded = fixture.sink.take(to: subscriber.address).compactMap { $0.withUnsafeBytes { RTPHeader($0) } }
                .filter { $0.ssrc == downTrack.outgoingSSRC }.map(\.sequenceNumber)
            // The subscriber lost the repaired packet: it comes to it on its RTX stream.
            let nack = RTCPBuilder.genericNack(senderSSRC: 1, mediaSSRC: downTrack.outgoingSSRC, lostSequenceNumbers: [forwarded[2]])!
            try subscriber.sendRTCP(nack, now: now)
            return (subscriber.received(from: fixture.sink).rtp, fixture.room.workerStatistics.counts)
        }
        #expect(statistics.repairsReceived == 1)
        #expect(statistics.paddingReceived == 1)
        #expect(downTrack.publication.layers[1].retransmissionSSRC == 0x2000_0002)
        #expect(resent.count == 1)
        let packet = try #require(resent.first)
        try packet.withUnsafeBytes { bytes in
            let header = try #require(RTPHeader(bytes))
            #expect(header.ssrc == downTrack.retransmissionSSRC)
            #expect(header.payloadType == 101)
            let payload = bytes[header.payloadRange]
            let osn = UInt16(payload[payload.startIndex]) << 8 | UInt16(payload[payload.startIndex + 1])
            #expect(osn == downTrack.rewriter.lastOutgoingSequence &- 1 || osn == downTrack.rewriter.lastOutgoingSequence, "OSN \(osn)")
        }
        #expect(statistics.retransmissions == 1)
        try await fixture.shutdown()
    }

    @Test func transportWideFeedbackFeedsTheSubscribersEstimateAndThePublisherGetsItsOwn() async throws {
        let fixture = try RoomFixture()
        let (publisher, subscriber, downTrack) = try await Self.setUp(fixture)
        let (uplinkFeedback, statistics) = try await fixture.onLoop { () -> ([TWCCFeedback], SFUStatistics) in
            let now = fixture.port.now()
            for sequence in UInt16(1)...5 {
                try publisher.sendRTP(
                    simulcastPacket(
                        ssrc: Self.ssrcs["h"]!, rid: "h", sequence: sequence, timestamp: 0, pictureID: sequence, keyframe: sequence == 1,
                        transportSequence: sequence), now: now + UInt64(sequence) * 5_000_000)
            }
            _ = subscriber.received(from: fixture.sink)
            let feedback = TWCCFeedback(
                senderSSRC: 9, mediaSSRC: downTrack.outgoingSSRC, baseSequenceNumber: 1, referenceTime: 0, feedbackPacketCount: 0,
                packets: (0..<5).map { TWCCFeedback.PacketStatus(sequenceNumber: UInt16(1 + $0), arrivalMicroseconds: Int64($0) * 5000) })
            try subscriber.sendRTCP(feedback.serialized(), now: now)
            // Cut short: a counted drop.
            try subscriber.sendRTCP(Array(feedback.serialized().prefix(20)).withLength(), now: now)
            fixture.room.tick(now: now + 100_000_000)
            var uplink: [TWCCFeedback] = []
            for compound in publisher.received(from: fixture.sink).rtcp {
                compound.withUnsafeBytes { bytes in
                    var iterator = RTCPCompoundIterator(bytes)
                    while let packet = iterator.next() {
                        if let parsed = try? TWCCFeedback(parsing: UnsafeRawBufferPointer(rebasing: bytes[packet.range])) { uplink.append(parsed) }
                    }
                }
            }
            return (uplink, fixture.room.workerStatistics.counts)
        }
        #expect(statistics.transportFeedbackReceived == 1)
        #expect(statistics.droppedMalformedTransportFeedback == 1)
        #expect(downTrack.bandwidth.hasFeedback)
        #expect(uplinkFeedback.count == 1)
        #expect(uplinkFeedback.first?.packets.map(\.sequenceNumber) == [1, 2, 3, 4, 5])
        #expect(uplinkFeedback.first?.packets.allSatisfy { $0.arrivalMicroseconds != nil } == true)
        try await fixture.shutdown()
    }

    /// On the loop: transport-wide feedback from the subscriber (for nothing yet: its estimate is
    /// its own from now on, and the prober starts), then five ticks 20 ms apart; what it was sent.
    static func feedbackThenTicks(_ fixture: RoomFixture, subscriber: Peer, downTrack: DownTrack) throws -> ([[UInt8]], SFUStatistics) {
        let now = fixture.port.now()
        let feedback = TWCCFeedback(
            senderSSRC: 9, mediaSSRC: downTrack.outgoingSSRC, baseSequenceNumber: 0, referenceTime: 0, feedbackPacketCount: 0,
            packets: [TWCCFeedback.PacketStatus(sequenceNumber: 0, arrivalMicroseconds: nil)])
        try subscriber.sendRTCP(feedback.serialized(), now: now)
        for step in UInt64(1)...5 { fixture.room.tick(now: now + step * 20_000_000) }
        return (subscriber.received(from: fixture.sink).rtp, fixture.room.workerStatistics.counts)
    }

    @Test func aSubscriberWithNoVideoForwardedIsProbedWithPaddingOnTheRTXStream() async throws {
        let fixture = try RoomFixture()
        let (_, subscriber, downTrack) = try await Self.setUp(fixture)
        let (probes, statistics) = try await fixture.onLoop { () -> ([[UInt8]], SFUStatistics) in
            // No layer was ever forwarded: no media to copy.
            try Self.feedbackThenTicks(fixture, subscriber: subscriber, downTrack: downTrack)
        }
        #expect(downTrack.currentLayer == -1)
        let padding = probes.filter { packet in packet.withUnsafeBytes { RTPHeader($0)?.ssrc == downTrack.retransmissionSSRC } }
        #expect(!padding.isEmpty)
        var transportSequences: [UInt16] = []
        var sequenceNumbers: [UInt16] = []
        for packet in padding {
            try packet.withUnsafeBytes { bytes in
                let header = try #require(RTPHeader(bytes))
                sequenceNumbers.append(header.sequenceNumber)
                #expect(header.payloadType == 101)
                #expect(header.payloadLength == 0 && header.paddingLength > 0)
                let element = try #require(header.extensionElements(in: bytes).first { $0.id == 5 })
                transportSequences.append(UInt16(bytes[element.range.lowerBound]) << 8 | UInt16(bytes[element.range.lowerBound + 1]))
            }
        }
        // Each its own RTX sequence number (SRTP would drop a repeated one as a replay), stamped
        // in turn for the estimate, and counted as probe bytes.
        #expect(sequenceNumbers == (0..<sequenceNumbers.count).map { sequenceNumbers[0] &+ UInt16($0) })
        #expect(transportSequences == Array(transportSequences.sorted()) && Set(transportSequences).count == transportSequences.count)
        #expect(statistics.probeBytesSent == UInt64(padding.reduce(0) { $0 + $1.count }))
        #expect(downTrack.bandwidth.probeBytesSent == statistics.probeBytesSent)
        try await fixture.shutdown()
    }

    @Test func aSubscriberWithoutRTXIsNotSentPadding() async throws {
        let fixture = try RoomFixture()
        let (_, subscriber, downTrack) = try await Self.setUp(fixture)
        let (received, statistics) = try await fixture.onLoop { () -> ([[UInt8]], SFUStatistics) in
            fixture.room.negotiate(
                downTrack, codecs: [RTPCodec(payloadType: 100, name: "VP8", clockRate: 90_000)], retransmissionPayloadType: nil,
                extensions: RTPExtensionIDs(mid: 1, transportCC: 5))
            return try Self.feedbackThenTicks(fixture, subscriber: subscriber, downTrack: downTrack)
        }
        #expect(downTrack.bandwidth.hasFeedback)
        #expect(received.isEmpty && statistics.probeBytesSent == 0)
        try await fixture.shutdown()
    }
}

extension Array where Element == UInt8 {
    /// An RTCP packet cut short, its length field made to match so the compound still parses.
    func withLength() -> [UInt8] {
        var copy = self
        copy[2] = 0
        copy[3] = UInt8(count / 4 - 1)
        return copy
    }
}

/// Down-tracks live on the room's loop; the tests hand them to it and read them after.
extension DownTrack: @unchecked Sendable {}
