import RTP
import Testing
@testable import SFU
@testable import WebRTC

/// A WHEP player follows the active speaker on one m-line: the SFU points its stream at another
/// publication and the player sees one stream go on.
@Suite(.serialized, .timeLimit(.minutes(2))) struct SourceSwitchTests {
    static let vp8 = RTPCodec(payloadType: 96, name: "VP8", clockRate: 90_000)
    static let feedback = Publication.Feedback(nack: true, pli: true, fir: true, remb: true)
    static let fixed = (media: UInt32(0x5555_0001), retransmission: UInt32(0x5555_0002))

    static func packet(_ ssrc: UInt32, _ sequence: UInt16, _ timestamp: UInt32, pictureID: UInt16, keyframe: Bool) -> [UInt8] {
        simulcastPacket(ssrc: ssrc, rid: "f", sequence: sequence, timestamp: timestamp, pictureID: pictureID, keyframe: keyframe)
    }

    @Test func aSwitchedStreamKeepsItsSSRCAndContinuesItsNumbersFromTheNewSourcesKeyframe() async throws {
        let fixture = try RoomFixture()
        let (alice, bob, viewer, ssrc, switched) = try await fixture.onLoop { () -> (Peer, Peer, Peer, UInt32, Bool) in
            let alice = try fixture.connect("alice", role: .publisher)
            let bob = try fixture.connect("bob", role: .publisher)
            let extensions = RTPExtensionIDs(mid: 1)
            let aliceVideo = fixture.room.publish(
                participant: "alice", trackSid: "TR_a", kind: .video, mid: "0", ssrc: 0xA000_0001, codecs: [Self.vp8], extensions: extensions,
                feedback: Self.feedback)
            _ = fixture.room.publish(
                participant: "bob", trackSid: "TR_b", kind: .video, mid: "0", ssrc: 0xB000_0001, codecs: [Self.vp8], extensions: extensions,
                feedback: Self.feedback)
            let viewer = try fixture.connect("viewer", role: .subscriber)
            let downTrack = fixture.room.subscribe("viewer", to: aliceVideo, mid: "1", ssrcs: Self.fixed)
            fixture.room.negotiate(downTrack, codecs: [RTPCodec(payloadType: 98, name: "VP8", clockRate: 90_000)], extensions: RTPExtensionIDs())
            return (alice, bob, viewer, downTrack.outgoingSSRC, downTrack.rewritesVP8)
        }
        #expect(ssrc == Self.fixed.media)
        #expect(switched, "picture ids are rewritten from the start")

        let (received, bobDownstream) = try await fixture.onLoop { () -> ([[UInt8]], Int) in
            let now = fixture.port.now()
            try alice.sendRTP(Self.packet(0xA000_0001, 500, 9000, pictureID: 20_000, keyframe: true), now: now)
            try alice.sendRTP(Self.packet(0xA000_0001, 501, 12_000, pictureID: 20_001, keyframe: false), now: now + 33_000_000)
            let old = fixture.room.participants["viewer"]!.downTracks[0]
            let next = fixture.room.switchSource(old, to: fixture.room.publication(trackSid: "TR_b")!)
            fixture.room.negotiate(next, codecs: [RTPCodec(payloadType: 98, name: "VP8", clockRate: 90_000)], extensions: RTPExtensionIDs())
            // alice's packets no longer reach the viewer; bob's wait for his keyframe.
            try alice.sendRTP(Self.packet(0xA000_0001, 502, 15_000, pictureID: 20_002, keyframe: false), now: now + 66_000_000)
            try bob.sendRTP(Self.packet(0xB000_0001, 70, 444, pictureID: 300, keyframe: false), now: now + 80_000_000)
            try bob.sendRTP(Self.packet(0xB000_0001, 71, 3444, pictureID: 301, keyframe: true), now: now + 100_000_000)
            try bob.sendRTP(Self.packet(0xB000_0001, 72, 6444, pictureID: 302, keyframe: false), now: now + 133_000_000)
            return (viewer.received(from: fixture.sink).rtp, fixture.room.publication(trackSid: "TR_b")!.downTracks.count)
        }
        #expect(bobDownstream == 1)
        #expect(try await fixture.onLoop { fixture.room.publication(trackSid: "TR_a")!.downTracks.count } == 0)
        let headers = SimulcastForwardingTests.headers(received)
        #expect(headers.count == 4, "alice's two, then bob's keyframe and the frame after it")
        #expect(headers.allSatisfy { $0.ssrc == Self.fixed.media && $0.payloadType == 98 })
        let sequences = headers.map(\.sequenceNumber)
        #expect(zip(sequences, sequences.dropFirst()).allSatisfy { $1 == $0 &+ 1 }, "one numbering: \(sequences)")
        let timestamps = headers.map(\.timestamp)
        #expect(zip(timestamps, timestamps.dropFirst()).allSatisfy { Int32(bitPattern: $1 &- $0) > 0 }, "time moves on: \(timestamps)")
        #expect(timestamps[3] &- timestamps[2] == 3000, "bob's own spacing after the switch")
        let pictureIDs = received.map { packet in
            packet.withUnsafeBytes { bytes -> UInt16 in
                let payload = RTPHeader(bytes)!.payloadRange.lowerBound
                return UInt16(bytes[payload + 2] & 0x7F) << 8 | UInt16(bytes[payload + 3])
            }
        }
        #expect(pictureIDs == [20_000, 20_001, 20_002, 20_003], "picture ids continue: \(pictureIDs)")
        // A NACK for the stream and a PLI on its SSRC still find it.
        try await fixture.onLoop {
            #expect(fixture.room.participants["viewer"]!.downTracksBySSRC[Self.fixed.media]?.publication.trackSid == "TR_b")
            #expect(fixture.room.participants["viewer"]!.downTracksBySSRC[Self.fixed.retransmission]?.publication.trackSid == "TR_b")
        }
        try await fixture.shutdown()
    }
}
