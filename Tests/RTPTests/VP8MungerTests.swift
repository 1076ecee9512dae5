import Testing
@testable import RTP

/// One down-track's view: packets go through the munger as the SFU would send them, and what
/// the subscriber receives is parsed back from the rewritten bytes.
struct VP8DownTrack {
    var munger = VP8Munger()
    var maxTemporalLayer: UInt8 = .max

    /// The decision and, when forwarded, the descriptor as the subscriber sees it.
    mutating func send(_ bytes: [UInt8]) -> (decision: VP8Munger.Decision, sent: VP8PayloadDescriptor?) {
        var copy = bytes
        let maxTemporalLayer = maxTemporalLayer
        return copy.withUnsafeMutableBytes { payload in
            guard let descriptor = try? VP8PayloadDescriptor(UnsafeRawBufferPointer(payload)) else {
                Issue.record("test packet does not parse")
                return (.drop(.malformed), nil)
            }
            let decision = munger.process(descriptor: descriptor, payload: payload, maxTemporalLayer: maxTemporalLayer)
            guard decision == .forward else { return (decision, nil) }
            return (decision, try? VP8PayloadDescriptor(UnsafeRawBufferPointer(payload)))
        }
    }

    /// Outgoing picture IDs of the forwarded packets, nil for a dropped one.
    mutating func sendPictureIDs(_ packets: [[UInt8]]) -> [UInt16?] { packets.map { send($0).sent?.pictureID } }
}

/// The packets of one frame: the first starts partition 0 (with the key frame header for a
/// keyframe), the rest continue it.
func vp8Frame(
    _ pictureID: UInt16, wide: Bool = true, tid: UInt8, tl0: UInt8, keyIndex: UInt8 = 0, sync: Bool = false,
    keyframe: Bool = false, packets: Int = 2
) -> [[UInt8]] {
    (0..<packets).map { index in
        TestVP8.payload(
            pictureID: pictureID, wide: wide, tl0: tl0, tid: tid, sync: sync, keyIndex: keyIndex, start: index == 0,
            keyframe: keyframe && index == 0)
    }
}

/// L1T3 frames (TID 0, 2, 1, 2, ...), the first one a keyframe; TL0PICIDX counts TID 0 frames.
func l1t3Frames(
    from firstPictureID: UInt16, count: Int, wide: Bool = true, firstTL0: UInt8, keyIndex: UInt8 = 0, packets: Int = 2,
    startWithKeyframe: Bool = true
) -> [[[UInt8]]] {
    let modulus = wide ? 0x8000 : 0x80
    return (0..<count).map { index in
        vp8Frame(
            UInt16((Int(firstPictureID) + index) % modulus), wide: wide, tid: l1t3Layer(index), tl0: firstTL0 &+ UInt8(truncatingIfNeeded: index / 4),
            keyIndex: keyIndex, keyframe: startWithKeyframe && index == 0, packets: packets)
    }
}

func l1t3Layer(_ frameIndex: Int) -> UInt8 { [0, 2, 1, 2][frameIndex % 4] }

@Suite struct VP8MungerTests {
    @Test func waitsForAKeyframe() {
        var track = VP8DownTrack()
        #expect(track.munger.isWaitingForKeyframe)
        #expect(track.send(TestVP8.payload(pictureID: 7, tid: 0)).decision == .drop(.waitingForKeyframe))
        let key = vp8Frame(8, tid: 0, tl0: 3, keyframe: true)
        #expect(track.send(key[0]).sent?.pictureID == 8)  // the first source passes through
        #expect(!track.munger.isWaitingForKeyframe)
        #expect(track.send(key[1]).sent?.pictureID == 8)
    }

    @Test func allTemporalLayersPassUnchanged() {
        var track = VP8DownTrack()
        let frames = l1t3Frames(from: 1000, count: 12, firstTL0: 50)
        var sent: [VP8PayloadDescriptor?] = []
        for frame in frames { for packet in frame { sent.append(track.send(packet).sent) } }
        let expectedIDs: [UInt16?] = (0..<24).map { UInt16(1000 + $0 / 2) }
        let expectedTL0s: [UInt8?] = (0..<24).map { UInt8(50 + $0 / 8) }
        let expectedLayers: [UInt8?] = (0..<24).map { l1t3Layer($0 / 2) }
        #expect(sent.map { $0?.pictureID } == expectedIDs)
        #expect(sent.map { $0?.tl0PictureIndex } == expectedTL0s)
        #expect(sent.map { $0?.temporalLayer } == expectedLayers)
    }

    @Test func droppedTemporalLayersLeaveNoPictureIDGap() {
        for maxLayer: UInt8 in [1, 0] {
            var track = VP8DownTrack(maxTemporalLayer: maxLayer)
            var forwarded: [VP8PayloadDescriptor] = []
            for (index, frame) in l1t3Frames(from: 1000, count: 16, firstTL0: 50).enumerated() {
                for packet in frame {
                    let (decision, sent) = track.send(packet)
                    if l1t3Layer(index) > maxLayer {
                        #expect(decision == .drop(.temporalLayer))
                    } else {
                        forwarded.append(try! #require(sent))
                    }
                }
            }
            let frameCount = maxLayer == 1 ? 8 : 4
            // Both packets of each forwarded frame carry the same ID; IDs count up by one.
            let expectedIDs: [UInt16?] = (0..<(2 * frameCount)).map { UInt16(1000 + $0 / 2) }
            #expect(forwarded.map(\.pictureID) == expectedIDs)
            #expect(forwarded.allSatisfy { ($0.temporalLayer ?? 9) <= maxLayer })
            // TL0PICIDX still counts TL0 frames one by one.
            let packetsPerTL0 = maxLayer == 1 ? 4 : 2
            let expectedTL0s: [UInt8?] = (0..<(2 * frameCount)).map { UInt8(50 + $0 / packetsPerTL0) }
            #expect(forwarded.map(\.tl0PictureIndex) == expectedTL0s)
        }
    }

    @Test func simulcastSwitchContinuesEveryNumbering() {
        var track = VP8DownTrack()
        // Layer A: 10 frames, IDs 200-209, TL0PICIDX 10-12, KEYIDX 4.
        var sent: [VP8PayloadDescriptor] = []
        for frame in l1t3Frames(from: 200, count: 10, firstTL0: 10, keyIndex: 4) {
            for packet in frame { sent.append(try! #require(track.send(packet).sent)) }
        }
        #expect(sent.last?.pictureID == 209 && sent.last?.tl0PictureIndex == 12 && sent.last?.keyIndex == 4)

        // Switch to layer B: its own numbering (15-bit IDs near the top, TL0PICIDX about to wrap).
        track.munger.switchSource()
        #expect(track.send(TestVP8.payload(pictureID: 29_999, tl0: 249, tid: 2, keyIndex: 30)).decision == .drop(.waitingForKeyframe))
        sent = []
        for frame in l1t3Frames(from: 30_000, count: 6, firstTL0: 255, keyIndex: 31) {
            for packet in frame { sent.append(try! #require(track.send(packet).sent)) }
        }
        let expectedIDs: [UInt16?] = (0..<12).map { UInt16(210 + $0 / 2) }
        #expect(sent.map(\.pictureID) == expectedIDs)
        #expect(sent.map(\.tl0PictureIndex) == [13, 13, 13, 13, 13, 13, 13, 13, 14, 14, 14, 14])
        #expect(sent.allSatisfy { $0.keyIndex == 5 })
        // A packet of B from before its keyframe is from before the switch.
        #expect(track.send(TestVP8.payload(pictureID: 29_999, tl0: 254, tid: 2, keyIndex: 30)).decision == .drop(.stale))

        // Back to A, which went on counting meanwhile, with 7-bit IDs this time: written mod 128.
        track.munger.switchSource()
        sent = []
        for frame in l1t3Frames(from: 100, count: 3, wide: false, firstTL0: 40, keyIndex: 6, packets: 1) {
            sent.append(try! #require(track.send(frame[0]).sent))
        }
        #expect(sent.map(\.pictureID) == [88, 89, 90])  // 216, 217, 218 modulo 128
        #expect(sent.allSatisfy { $0.pictureIDWidth == .sevenBits && $0.length == 5 })
        #expect(sent.map(\.tl0PictureIndex) == [15, 15, 15])
        #expect(sent.map(\.keyIndex) == [6, 6, 6])
        #expect(track.munger.lastOutgoingPictureID == 218)
    }

    @Test func fifteenBitWrapWithDroppedLayers() {
        var track = VP8DownTrack(maxTemporalLayer: 1)
        var bytes: [[UInt8]] = []
        var outgoing: [UInt16] = []
        for frame in l1t3Frames(from: 32_764, count: 11, firstTL0: 0, packets: 1) {
            let packet = frame[0]
            var copy = packet
            let decision = copy.withUnsafeMutableBytes { payload in
                let descriptor = try! VP8PayloadDescriptor(UnsafeRawBufferPointer(payload))
                return track.munger.process(descriptor: descriptor, payload: payload, maxTemporalLayer: 1)
            }
            if decision == .forward {
                bytes.append(copy)
                outgoing.append(try! parseVP8(copy).pictureID!)
            }
        }
        #expect(outgoing == [32_764, 32_765, 32_766, 32_767, 0, 1])
        // The M bit stays set: the field keeps two bytes across the wrap.
        #expect(bytes.allSatisfy { $0[2] & 0x80 != 0 })
        #expect(bytes[4][2] == 0x80 && bytes[4][3] == 0x00)
    }

    @Test func sevenBitIDsWrapModulo128() {
        var track = VP8DownTrack(maxTemporalLayer: 0)
        let outgoing = l1t3Frames(from: 120, count: 20, wide: false, firstTL0: 0, packets: 1).map { track.send($0[0]).sent?.pictureID }
        // TID 0 frames only (every fourth); the first source passes through, then counts by one.
        #expect(outgoing.compactMap { $0 } == [120, 121, 122, 123, 124])
        var wrapping = VP8DownTrack(maxTemporalLayer: 1)
        let wrapped = l1t3Frames(from: 124, count: 10, wide: false, firstTL0: 0, packets: 1).compactMap { wrapping.send($0[0]).sent?.pictureID }
        #expect(wrapped == [124, 125, 126, 127, 0])
    }

    @Test func latePacketsFollowTheirFrame() {
        var track = VP8DownTrack(maxTemporalLayer: 1)
        let frames = [
            vp8Frame(10, tid: 0, tl0: 1, keyframe: true, packets: 3),
            vp8Frame(11, tid: 2, tl0: 1, packets: 3),
            vp8Frame(12, tid: 1, tl0: 1, packets: 3),
        ]
        #expect(track.sendPictureIDs([frames[0][0], frames[0][1], frames[1][0], frames[2][0], frames[2][1]]) == [10, 10, nil, 11, 11])
        // Stragglers: the keyframe's last packet, the dropped frame's, then frame 12's.
        #expect(track.send(frames[0][2]).sent?.pictureID == 10)
        #expect(track.send(frames[1][1]).decision == .drop(.temporalLayer))
        #expect(track.send(frames[2][2]).sent?.pictureID == 11)
        #expect(track.send(frames[0][1]).sent?.pictureID == 10)  // a duplicate maps the same too
    }

    @Test func lateFirstPacketOfAFrameTakesTheNumberLeftForIt() {
        var track = VP8DownTrack(maxTemporalLayer: 1)
        // Frame 12 (TID 1) arrives only after 13 (dropped) and 14: its outgoing ID was left free.
        #expect(track.send(vp8Frame(10, tid: 0, tl0: 1, keyframe: true, packets: 1)[0]).sent?.pictureID == 10)
        #expect(track.send(vp8Frame(11, tid: 2, tl0: 1, packets: 1)[0]).decision == .drop(.temporalLayer))
        #expect(track.send(vp8Frame(13, tid: 2, tl0: 1, packets: 1)[0]).decision == .drop(.temporalLayer))
        #expect(track.send(vp8Frame(14, tid: 0, tl0: 2, packets: 1)[0]).sent?.pictureID == 12)
        let late = track.send(vp8Frame(12, tid: 1, tl0: 1, packets: 1)[0]).sent
        #expect(late?.pictureID == 11)
        #expect(late?.tl0PictureIndex == 1)
        // A late frame above the layer limit stays dropped (its number stays a gap).
        var other = VP8DownTrack(maxTemporalLayer: 0)
        _ = other.send(vp8Frame(10, tid: 0, tl0: 1, keyframe: true, packets: 1)[0])
        _ = other.send(vp8Frame(12, tid: 0, tl0: 2, packets: 1)[0])
        #expect(other.send(vp8Frame(11, tid: 1, tl0: 1, packets: 1)[0]).decision == .drop(.temporalLayer))
        // Older than the recent frames it remembers: stale.
        for id: UInt16 in 13...60 { _ = other.send(vp8Frame(id, tid: 0, tl0: UInt8(id), packets: 1)[0]) }
        #expect(other.send(vp8Frame(20, tid: 0, tl0: 20, packets: 1)[0]).decision == .drop(.stale))
    }

    @Test func temporalUpSwitchOnlyAtSafeFrames() {
        var track = VP8DownTrack(maxTemporalLayer: 0)
        let frames = l1t3Frames(from: 500, count: 12, firstTL0: 0, packets: 1)
        var outgoing: [UInt16?] = []
        for (index, frame) in frames.enumerated() {
            if index == 5 { track.maxTemporalLayer = 2 }  // asked for more at a TID 2 frame
            outgoing.append(track.send(frame[0]).sent?.pictureID)
            if index == 7 { #expect(track.munger.forwardedTemporalLayer == 0) }
        }
        // Frames 5 (TID 2), 6 (TID 1) and 7 (TID 2) could reference frames never sent: dropped.
        // Frame 8 is TID 0: from there on every layer goes.
        #expect(outgoing == [500, nil, nil, nil, 501, nil, nil, nil, 502, 503, 504, 505])
        #expect(track.munger.forwardedTemporalLayer == 2)
    }

    @Test func layerSyncFrameSwitchesUpToItsLayer() {
        var track = VP8DownTrack(maxTemporalLayer: 0)
        #expect(track.send(vp8Frame(1, tid: 0, tl0: 0, keyframe: true, packets: 1)[0]).sent?.pictureID == 1)
        track.maxTemporalLayer = 1
        #expect(track.send(vp8Frame(2, tid: 2, tl0: 0, sync: true, packets: 1)[0]).decision == .drop(.temporalLayer))  // above the maximum
        #expect(track.send(vp8Frame(3, tid: 1, tl0: 0, packets: 1)[0]).decision == .drop(.temporalLayer))  // not a sync frame
        #expect(track.send(vp8Frame(4, tid: 1, tl0: 0, sync: true, packets: 1)[0]).sent?.pictureID == 2)
        #expect(track.munger.forwardedTemporalLayer == 1)
        #expect(track.send(vp8Frame(5, tid: 1, tl0: 0, packets: 1)[0]).sent?.pictureID == 3)
        #expect(track.send(vp8Frame(6, tid: 2, tl0: 0, packets: 1)[0]).decision == .drop(.temporalLayer))
    }

    @Test func temporalDownSwitchWaitsForTheNextFrame() {
        var track = VP8DownTrack()
        _ = track.send(vp8Frame(1, tid: 0, tl0: 0, keyframe: true, packets: 1)[0])
        let frame = vp8Frame(2, tid: 2, tl0: 0, packets: 3)
        #expect(track.send(frame[0]).sent?.pictureID == 2)
        track.maxTemporalLayer = 0
        // The rest of the frame already started still goes, or the subscriber gets half a frame.
        #expect(track.send(frame[1]).sent?.pictureID == 2)
        #expect(track.send(frame[2]).sent?.pictureID == 2)
        #expect(track.send(vp8Frame(3, tid: 1, tl0: 0, packets: 1)[0]).decision == .drop(.temporalLayer))
        #expect(track.send(vp8Frame(4, tid: 0, tl0: 1, packets: 1)[0]).sent?.pictureID == 3)
        #expect(track.munger.forwardedTemporalLayer == 0)
    }

    @Test func keyIndexContinuesAcrossSwitchesAndKeyframes() {
        var track = VP8DownTrack()
        var keyIndices: [UInt8?] = []
        keyIndices.append(track.send(vp8Frame(1, tid: 0, tl0: 0, keyIndex: 30, keyframe: true, packets: 1)[0]).sent?.keyIndex)
        keyIndices.append(track.send(vp8Frame(2, tid: 0, tl0: 1, keyIndex: 31, keyframe: true, packets: 1)[0]).sent?.keyIndex)
        keyIndices.append(track.send(vp8Frame(3, tid: 0, tl0: 2, keyIndex: 0, keyframe: true, packets: 1)[0]).sent?.keyIndex)
        track.munger.switchSource()
        keyIndices.append(track.send(vp8Frame(900, tid: 0, tl0: 7, keyIndex: 12, keyframe: true, packets: 1)[0]).sent?.keyIndex)
        keyIndices.append(track.send(vp8Frame(901, tid: 1, tl0: 7, keyIndex: 12, packets: 1)[0]).sent?.keyIndex)
        // 5-bit KEYIDX wraps 31 -> 0; the new source's keyframe is the next index.
        #expect(keyIndices == [30, 31, 0, 1, 1])
        // TID and Y share the byte and are left alone.
        let sync = track.send(vp8Frame(902, tid: 2, tl0: 7, keyIndex: 12, sync: true, packets: 1)[0]).sent
        #expect(sync?.temporalLayer == 2 && sync?.isLayerSync == true && sync?.keyIndex == 1)
    }

    @Test func keyframeFarBehindRestartsTheSource() {
        var track = VP8DownTrack()
        for id: UInt16 in 1000...1003 { _ = track.send(vp8Frame(id, tid: 0, tl0: UInt8(id & 0xFF), keyframe: id == 1000, packets: 1)[0]) }
        // The publisher restarted its encoder: numbering jumps back.
        #expect(track.send(vp8Frame(5, tid: 0, tl0: 0, packets: 1)[0]).decision == .drop(.stale))
        #expect(track.send(vp8Frame(6, tid: 0, tl0: 0, keyframe: true, packets: 1)[0]).sent?.pictureID == 1004)
        #expect(track.send(vp8Frame(7, tid: 0, tl0: 1, packets: 1)[0]).sent?.pictureID == 1005)
        // A gap lost upstream stays a gap, so the decoder knows frames are missing.
        #expect(track.send(vp8Frame(10, tid: 0, tl0: 2, packets: 1)[0]).sent?.pictureID == 1008)
    }

    @Test func withoutPictureIDs() {
        var track = VP8DownTrack(maxTemporalLayer: 1)
        #expect(track.send(TestVP8.payload(tl0: 5, tid: 0)).decision == .drop(.waitingForKeyframe))
        #expect(track.send(TestVP8.payload(tl0: 5, tid: 0, keyframe: true)).sent?.tl0PictureIndex == 5)
        #expect(track.send(TestVP8.payload(tl0: 5, tid: 2)).decision == .drop(.temporalLayer))
        #expect(track.send(TestVP8.payload(tl0: 5, tid: 2, start: false)).decision == .drop(.temporalLayer))
        #expect(track.send(TestVP8.payload(tl0: 5, tid: 1)).decision == .forward)
        #expect(track.send(TestVP8.payload(tl0: 6, tid: 0)).sent?.tl0PictureIndex == 6)
        track.munger.switchSource()
        #expect(track.send(TestVP8.payload(tl0: 200, tid: 0, keyframe: true)).sent?.tl0PictureIndex == 7)
        #expect(track.send(TestVP8.payload()).decision == .forward)  // no descriptor extension at all
    }

    @Test func descriptorThatDoesNotFitThePayloadIsRefused() {
        var munger = VP8Munger()
        let bytes = TestVP8.payload(pictureID: 300, tl0: 1, tid: 0, keyIndex: 1, keyframe: true)
        let descriptor = try! parseVP8(bytes)
        var short = [UInt8](bytes.prefix(4))
        let decision = short.withUnsafeMutableBytes { munger.process(descriptor: descriptor, payload: $0, maxTemporalLayer: 2) }
        #expect(decision == .drop(.malformed))
        #expect(short == Array(bytes.prefix(4)))  // untouched
    }
}
