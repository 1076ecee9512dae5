import Testing
@testable import RTP

private let millisecond: Int64 = 1_000_000

@Suite struct SequenceRewriterTests {
    typealias Output = SequenceRewriter.Output

    @Test func firstSourcePassesThrough() {
        var rewriter = SequenceRewriter(clockRate: 90000, outgoingSSRC: 99)
        #expect(rewriter.rewrite(ssrc: 1, sequenceNumber: 100, timestamp: 5000, arrivalNanoseconds: 0) == Output(sequenceNumber: 100, timestamp: 5000))
        #expect(rewriter.rewrite(ssrc: 1, sequenceNumber: 101, timestamp: 8000, arrivalNanoseconds: 33 * millisecond) == Output(sequenceNumber: 101, timestamp: 8000))
        // A gap stays a gap so the subscriber can NACK it.
        #expect(rewriter.rewrite(ssrc: 1, sequenceNumber: 104, timestamp: 17000, arrivalNanoseconds: 99 * millisecond) == Output(sequenceNumber: 104, timestamp: 17000))
    }

    @Test func continuesAcrossSSRCSwitch() {
        var rewriter = SequenceRewriter(clockRate: 90000, outgoingSSRC: 99)
        for index in 0..<5 {
            _ = rewriter.rewrite(ssrc: 1, sequenceNumber: UInt16(100 + index), timestamp: UInt32(3000 * index), arrivalNanoseconds: Int64(index) * 33 * millisecond)
        }
        #expect(rewriter.lastOutgoingSequence == 104)
        #expect(rewriter.lastOutgoingTimestamp == 12000)
        // Publisher restarts with a new SSRC and unrelated numbering 100 ms after the last packet.
        let last = 4 * 33 * millisecond
        let first = rewriter.rewrite(ssrc: 2, sequenceNumber: 40000, timestamp: 777, arrivalNanoseconds: last + 100 * millisecond)
        #expect(first == Output(sequenceNumber: 105, timestamp: 12000 + 9000))
        let second = rewriter.rewrite(ssrc: 2, sequenceNumber: 40001, timestamp: 777 + 3000, arrivalNanoseconds: last + 133 * millisecond)
        #expect(second == Output(sequenceNumber: 106, timestamp: 12000 + 9000 + 3000))
        #expect(rewriter.currentSSRC == 2 && rewriter.previousSSRC == 1)
        // A straggler from the old source is dropped, not switched back to.
        #expect(rewriter.rewrite(ssrc: 1, sequenceNumber: 105, timestamp: 15000, arrivalNanoseconds: last + 140 * millisecond) == nil)
    }

    @Test func switchWithoutElapsedTimeStillAdvancesTimestamp() {
        var rewriter = SequenceRewriter(clockRate: 48000, outgoingSSRC: 99)
        _ = rewriter.rewrite(ssrc: 1, sequenceNumber: 1, timestamp: 100, arrivalNanoseconds: 5)
        #expect(rewriter.rewrite(ssrc: 2, sequenceNumber: 9, timestamp: 0, arrivalNanoseconds: 5) == Output(sequenceNumber: 2, timestamp: 101))
        // Time going backwards is treated as no time.
        #expect(rewriter.rewrite(ssrc: 3, sequenceNumber: 9, timestamp: 0, arrivalNanoseconds: 1) == Output(sequenceNumber: 3, timestamp: 102))
    }

    @Test func resyncRebasesSameSSRC() {
        var rewriter = SequenceRewriter(clockRate: 90000, outgoingSSRC: 99)
        _ = rewriter.rewrite(ssrc: 1, sequenceNumber: 10, timestamp: 1000, arrivalNanoseconds: 0)
        rewriter.resync()
        // Unmute after a pause: same SSRC, numbering jumped.
        let output = rewriter.rewrite(ssrc: 1, sequenceNumber: 30000, timestamp: 50, arrivalNanoseconds: 1_000 * millisecond)
        #expect(output == Output(sequenceNumber: 11, timestamp: 1000 + 90000))
        // A packet numbered before the resync point is from before the switch.
        #expect(rewriter.rewrite(ssrc: 1, sequenceNumber: 29999, timestamp: 40, arrivalNanoseconds: 1_001 * millisecond) == nil)
        // Resync also permits returning to the previous SSRC.
        _ = rewriter.rewrite(ssrc: 2, sequenceNumber: 5, timestamp: 5, arrivalNanoseconds: 1_100 * millisecond)
        rewriter.resync()
        #expect(rewriter.rewrite(ssrc: 1, sequenceNumber: 30001, timestamp: 60, arrivalNanoseconds: 1_200 * millisecond) != nil)
    }

    @Test func wrapsSixteenBitSequences() {
        var rewriter = SequenceRewriter(clockRate: 90000, outgoingSSRC: 99)
        _ = rewriter.rewrite(ssrc: 1, sequenceNumber: 65533, timestamp: UInt32.max - 10, arrivalNanoseconds: 0)
        // Switch so the outgoing side wraps while the incoming side does not.
        let switched = rewriter.rewrite(ssrc: 2, sequenceNumber: 7, timestamp: 0, arrivalNanoseconds: 0)
        #expect(switched?.sequenceNumber == 65534)
        var outputs: [UInt16] = []
        for sequence: UInt16 in [8, 9, 10] {
            outputs.append(rewriter.rewrite(ssrc: 2, sequenceNumber: sequence, timestamp: 0, arrivalNanoseconds: 0)?.sequenceNumber ?? 1)
        }
        #expect(outputs == [65535, 0, 1])
        #expect(switched?.timestamp == (UInt32.max - 10) &+ 1)
        // Incoming wrap within a source.
        var incoming = SequenceRewriter(clockRate: 90000, outgoingSSRC: 99)
        var mapped: [UInt16?] = []
        // 0 arrives after 1: a reordered packet across the wrap still maps.
        for sequence: UInt16 in [65534, 65535, 1, 0] {
            mapped.append(incoming.rewrite(ssrc: 1, sequenceNumber: sequence, timestamp: 0, arrivalNanoseconds: 0)?.sequenceNumber)
        }
        #expect(mapped == [65534, 65535, 1, 0])
        // Older than the first packet of the source: from before it started, dropped.
        #expect(incoming.rewrite(ssrc: 1, sequenceNumber: 65533, timestamp: 0, arrivalNanoseconds: 0) == nil)
    }

    @Test func reorderingDuplicatesAndOldPackets() {
        var rewriter = SequenceRewriter(clockRate: 90000, outgoingSSRC: 99)
        _ = rewriter.rewrite(ssrc: 1, sequenceNumber: 1000, timestamp: 0, arrivalNanoseconds: 0)
        _ = rewriter.rewrite(ssrc: 2, sequenceNumber: 10, timestamp: 0, arrivalNanoseconds: 0)  // offset: out = in + 991
        #expect(rewriter.rewrite(ssrc: 2, sequenceNumber: 12, timestamp: 0, arrivalNanoseconds: 0)?.sequenceNumber == 1003)
        #expect(rewriter.rewrite(ssrc: 2, sequenceNumber: 11, timestamp: 0, arrivalNanoseconds: 0)?.sequenceNumber == 1002)
        #expect(rewriter.lastOutgoingSequence == 1003)  // reordered packet does not move the head
        #expect(rewriter.rewrite(ssrc: 2, sequenceNumber: 11, timestamp: 0, arrivalNanoseconds: 0) == nil)  // duplicate
        #expect(rewriter.rewrite(ssrc: 2, sequenceNumber: 12, timestamp: 0, arrivalNanoseconds: 0) == nil)  // duplicate
        #expect(rewriter.rewrite(ssrc: 2, sequenceNumber: 9, timestamp: 0, arrivalNanoseconds: 0) == nil)  // before the switch
        _ = rewriter.rewrite(ssrc: 2, sequenceNumber: 400, timestamp: 0, arrivalNanoseconds: 0)
        #expect(rewriter.rewrite(ssrc: 2, sequenceNumber: 100, timestamp: 0, arrivalNanoseconds: 0) == nil)  // older than the window
        #expect(rewriter.rewrite(ssrc: 2, sequenceNumber: 300, timestamp: 0, arrivalNanoseconds: 0)?.sequenceNumber == 1291)
    }

    @Test func nackReverseMap() {
        var rewriter = SequenceRewriter(clockRate: 90000, outgoingSSRC: 99)
        #expect(rewriter.incomingSequence(forOutgoing: 1) == nil)
        for sequence: UInt16 in 50...52 { _ = rewriter.rewrite(ssrc: 1, sequenceNumber: sequence, timestamp: 0, arrivalNanoseconds: 0) }
        #expect(rewriter.incomingSequence(forOutgoing: 51) == 51)
        for sequence: UInt16 in 65535...65535 { _ = rewriter.rewrite(ssrc: 2, sequenceNumber: sequence, timestamp: 0, arrivalNanoseconds: 0) }
        _ = rewriter.rewrite(ssrc: 2, sequenceNumber: 0, timestamp: 0, arrivalNanoseconds: 0)
        _ = rewriter.rewrite(ssrc: 2, sequenceNumber: 2, timestamp: 0, arrivalNanoseconds: 0)
        // Outgoing 53, 54, 56 carry incoming 65535, 0, 2 of source 2.
        #expect(rewriter.incomingSequence(forOutgoing: 53) == 65535)
        #expect(rewriter.incomingSequence(forOutgoing: 55) == 1)  // the gap: NACKable upstream
        #expect(rewriter.incomingSequence(forOutgoing: 56) == 2)
        #expect(rewriter.incomingSequence(forOutgoing: 52) == nil)  // sent from source 1
        #expect(rewriter.incomingSequence(forOutgoing: 57) == nil)  // not sent yet
    }

    /// Changed with the skip history: a skip no longer cuts the NACK map off (outgoing 11 was
    /// nil here before), and a skip after a gap is accepted (see `skipAfterGapKeepsNumbersOfMissingPackets`).
    @Test func skipLeavesNoGap() {
        var rewriter = SequenceRewriter(clockRate: 90000, outgoingSSRC: 99)
        #expect(rewriter.skip(ssrc: 1, sequenceNumber: 9) == false)  // nothing forwarded yet
        _ = rewriter.rewrite(ssrc: 1, sequenceNumber: 10, timestamp: 0, arrivalNanoseconds: 0)
        _ = rewriter.rewrite(ssrc: 1, sequenceNumber: 11, timestamp: 0, arrivalNanoseconds: 0)
        #expect(rewriter.skip(ssrc: 1, sequenceNumber: 12) == true)  // padding-only packet
        #expect(rewriter.skip(ssrc: 1, sequenceNumber: 12) == false)  // duplicate
        #expect(rewriter.skip(ssrc: 2, sequenceNumber: 13) == false)  // other source
        #expect(rewriter.lastOutgoingSequence == 11)
        #expect(rewriter.rewrite(ssrc: 1, sequenceNumber: 13, timestamp: 0, arrivalNanoseconds: 0)?.sequenceNumber == 12)
        #expect(rewriter.rewrite(ssrc: 1, sequenceNumber: 14, timestamp: 0, arrivalNanoseconds: 0)?.sequenceNumber == 13)
        #expect(rewriter.rewrite(ssrc: 1, sequenceNumber: 12, timestamp: 0, arrivalNanoseconds: 0) == nil)  // the skipped one
        #expect(rewriter.incomingSequence(forOutgoing: 12) == 13)
        #expect(rewriter.incomingSequence(forOutgoing: 11) == 11)  // forwarded before the skip: still NACKable
        #expect(rewriter.incomingSequence(forOutgoing: 10) == 10)
        #expect(rewriter.incomingSequence(forOutgoing: 14) == nil)  // not sent yet
    }

    @Test func skipAfterGapKeepsNumbersOfMissingPackets() {
        var rewriter = SequenceRewriter(clockRate: 90000, outgoingSSRC: 99)
        _ = rewriter.rewrite(ssrc: 1, sequenceNumber: 10, timestamp: 0, arrivalNanoseconds: 0)
        // 11 and 12 are missing; 13 is a dropped temporal-layer packet.
        #expect(rewriter.skip(ssrc: 1, sequenceNumber: 13) == true)
        #expect(rewriter.lastOutgoingSequence == 12)  // 11 and 12 keep their numbers
        #expect(rewriter.rewrite(ssrc: 1, sequenceNumber: 14, timestamp: 0, arrivalNanoseconds: 0)?.sequenceNumber == 13)
        // The missing ones arrive late and fill exactly the numbers the receiver saw missing.
        #expect(rewriter.rewrite(ssrc: 1, sequenceNumber: 12, timestamp: 0, arrivalNanoseconds: 0)?.sequenceNumber == 12)
        #expect(rewriter.rewrite(ssrc: 1, sequenceNumber: 11, timestamp: 0, arrivalNanoseconds: 0)?.sequenceNumber == 11)
        #expect((10...13).map { rewriter.incomingSequence(forOutgoing: $0) } == [10, 11, 12, 14])
    }

    @Test func reorderedPacketMapsWithItsOwnEpoch() {
        var rewriter = SequenceRewriter(clockRate: 90000, outgoingSSRC: 99)
        // Frames of 2 packets; every second frame is dropped: 100-101 sent, 102-103 skipped, ...
        // 104 arrives late, after the next skip.
        _ = rewriter.rewrite(ssrc: 1, sequenceNumber: 100, timestamp: 0, arrivalNanoseconds: 0)
        _ = rewriter.rewrite(ssrc: 1, sequenceNumber: 101, timestamp: 0, arrivalNanoseconds: 0)
        #expect(rewriter.skip(ssrc: 1, sequenceNumber: 102) == true)
        #expect(rewriter.skip(ssrc: 1, sequenceNumber: 103) == true)
        #expect(rewriter.rewrite(ssrc: 1, sequenceNumber: 105, timestamp: 0, arrivalNanoseconds: 0)?.sequenceNumber == 103)
        #expect(rewriter.skip(ssrc: 1, sequenceNumber: 106) == true)
        #expect(rewriter.skip(ssrc: 1, sequenceNumber: 107) == true)
        #expect(rewriter.rewrite(ssrc: 1, sequenceNumber: 108, timestamp: 0, arrivalNanoseconds: 0)?.sequenceNumber == 104)
        #expect(rewriter.rewrite(ssrc: 1, sequenceNumber: 104, timestamp: 0, arrivalNanoseconds: 0)?.sequenceNumber == 102)
        #expect((100...104).map { rewriter.incomingSequence(forOutgoing: $0) } == [100, 101, 104, 105, 108])
        // A late packet of a dropped frame cannot be skipped without a gap: outgoing 2 already
        // lies between 1 and 3. The gap stays, but a NACK for it is not answered.
        var late = SequenceRewriter(clockRate: 90000, outgoingSSRC: 99)
        _ = late.rewrite(ssrc: 1, sequenceNumber: 1, timestamp: 0, arrivalNanoseconds: 0)
        _ = late.rewrite(ssrc: 1, sequenceNumber: 3, timestamp: 0, arrivalNanoseconds: 0)
        #expect(late.skip(ssrc: 1, sequenceNumber: 2) == false)  // the gap at outgoing 2 stays
        #expect(late.incomingSequence(forOutgoing: 2) == nil)  // but a NACK for it is not answered
        #expect(late.rewrite(ssrc: 1, sequenceNumber: 2, timestamp: 0, arrivalNanoseconds: 0) == nil)
        #expect(late.incomingSequence(forOutgoing: 3) == 3)
    }

    @Test func skipsAcrossSequenceWrap() {
        var rewriter = SequenceRewriter(clockRate: 90000, outgoingSSRC: 99)
        _ = rewriter.rewrite(ssrc: 1, sequenceNumber: 65534, timestamp: 0, arrivalNanoseconds: 0)
        #expect(rewriter.skip(ssrc: 1, sequenceNumber: 65535) == true)
        #expect(rewriter.skip(ssrc: 1, sequenceNumber: 0) == true)
        #expect(rewriter.rewrite(ssrc: 1, sequenceNumber: 1, timestamp: 0, arrivalNanoseconds: 0)?.sequenceNumber == 65535)
        #expect(rewriter.rewrite(ssrc: 1, sequenceNumber: 2, timestamp: 0, arrivalNanoseconds: 0)?.sequenceNumber == 0)
        #expect(rewriter.incomingSequence(forOutgoing: 65534) == 65534)
        #expect(rewriter.incomingSequence(forOutgoing: 65535) == 1)
        #expect(rewriter.incomingSequence(forOutgoing: 0) == 2)
        // A switch continues after the newest number, skips included.
        #expect(rewriter.rewrite(ssrc: 2, sequenceNumber: 500, timestamp: 0, arrivalNanoseconds: 0)?.sequenceNumber == 1)
    }

    @Test func skipHistoryIsBounded() {
        var rewriter = SequenceRewriter(clockRate: 90000, outgoingSSRC: 99)
        _ = rewriter.rewrite(ssrc: 1, sequenceNumber: 1000, timestamp: 0, arrivalNanoseconds: 0)
        // 70 skips each followed by a forwarded packet: 71 epochs, the oldest 7 are forgotten.
        #expect(SequenceRewriter.skipHistoryCapacity == 64)
        for index in 0..<70 {
            #expect(rewriter.skip(ssrc: 1, sequenceNumber: UInt16(1001 + 2 * index)) == true)
            let output = rewriter.rewrite(ssrc: 1, sequenceNumber: UInt16(1002 + 2 * index), timestamp: 0, arrivalNanoseconds: 0)
            #expect(output?.sequenceNumber == UInt16(1001 + index))
        }
        // Outgoing 1001 + i carried incoming 1002 + 2i; epoch i + 1 starts at incoming 1002 + 2i.
        #expect(rewriter.incomingSequence(forOutgoing: 1070) == 1140)
        #expect(rewriter.incomingSequence(forOutgoing: 1007) == 1014)  // the oldest epoch kept
        #expect(rewriter.incomingSequence(forOutgoing: 1006) == nil)  // its epoch is forgotten
        #expect(rewriter.incomingSequence(forOutgoing: 1000) == nil)
    }

    @Test func runOfSkipsUsesOneEpoch() {
        var rewriter = SequenceRewriter(clockRate: 90000, outgoingSSRC: 99)
        _ = rewriter.rewrite(ssrc: 1, sequenceNumber: 0, timestamp: 0, arrivalNanoseconds: 0)
        // 200 skipped packets in a row (a long paused layer) take a single history slot, so the
        // first packet's mapping survives 63 later, separate skips.
        for sequence: UInt16 in 1...200 { #expect(rewriter.skip(ssrc: 1, sequenceNumber: sequence) == true) }
        for index in 0..<62 {
            _ = rewriter.rewrite(ssrc: 1, sequenceNumber: UInt16(201 + 2 * index), timestamp: 0, arrivalNanoseconds: 0)
            #expect(rewriter.skip(ssrc: 1, sequenceNumber: UInt16(202 + 2 * index)) == true)
        }
        #expect(rewriter.rewrite(ssrc: 1, sequenceNumber: 325, timestamp: 0, arrivalNanoseconds: 0)?.sequenceNumber == 63)
        #expect(rewriter.incomingSequence(forOutgoing: 0) == 0)
        #expect(rewriter.incomingSequence(forOutgoing: 1) == 201)
        #expect(rewriter.incomingSequence(forOutgoing: 62) == 323)
    }
}
