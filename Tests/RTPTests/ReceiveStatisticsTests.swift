import Testing
@testable import RTP

@Suite struct ReceiveStatisticsTests {
    @Test func lostCountAndFractionWithKnownGap() {
        var statistics = ReceiveStatistics(ssrc: 7)
        for sequence: UInt16 in 1...10 where sequence != 4 && sequence != 5 {
            statistics.packetReceived(sequenceNumber: sequence, rtpTimestamp: 0, arrival: 0)
        }
        #expect(statistics.expected == 10)
        #expect(statistics.received == 8)
        var block = statistics.makeReportBlock(nowNanoseconds: 0)
        #expect(block.ssrc == 7)
        #expect(block.cumulativeLost == 2)
        #expect(block.fractionLost == UInt8(2 * 256 / 10))
        #expect(block.extendedHighestSequence == 10)
        // Next interval without loss: fraction back to 0, cumulative stays.
        for sequence: UInt16 in 11...20 { statistics.packetReceived(sequenceNumber: sequence, rtpTimestamp: 0, arrival: 0) }
        block = statistics.makeReportBlock(nowNanoseconds: 0)
        #expect(block.fractionLost == 0)
        #expect(block.cumulativeLost == 2)
        // A late packet makes the interval "gain" one: fraction clamps at 0, cumulative drops.
        statistics.packetReceived(sequenceNumber: 4, rtpTimestamp: 0, arrival: 0)
        block = statistics.makeReportBlock(nowNanoseconds: 0)
        #expect(block.fractionLost == 0)
        #expect(block.cumulativeLost == 1)
    }

    @Test func extendedSequenceAcrossWrap() {
        var statistics = ReceiveStatistics(ssrc: 1)
        for sequence: UInt16 in 65530...65535 { statistics.packetReceived(sequenceNumber: sequence, rtpTimestamp: 0, arrival: 0) }
        for sequence: UInt16 in 0...5 { statistics.packetReceived(sequenceNumber: sequence, rtpTimestamp: 0, arrival: 0) }
        #expect(statistics.extendedHighestSequence == 65536 + 5)
        #expect(statistics.expected == 12)
        #expect(statistics.cumulativeLost == 0)
        // A reordered packet from before the wrap does not add a cycle.
        statistics.packetReceived(sequenceNumber: 65535, rtpTimestamp: 0, arrival: 0)
        #expect(statistics.extendedHighestSequence == 65536 + 5)
    }

    @Test func largeJumpNeedsConfirmation() {
        var statistics = ReceiveStatistics(ssrc: 1)
        for sequence: UInt16 in 1...3 { statistics.packetReceived(sequenceNumber: sequence, rtpTimestamp: 0, arrival: 0) }
        #expect(statistics.packetReceived(sequenceNumber: 20000, rtpTimestamp: 0, arrival: 0) == false)
        #expect(statistics.extendedHighestSequence == 3)
        // The next packet confirms the restart: counters start over from it.
        #expect(statistics.packetReceived(sequenceNumber: 20001, rtpTimestamp: 0, arrival: 0) == true)
        #expect(statistics.extendedHighestSequence == 20001)
        #expect(statistics.expected == 1 && statistics.received == 1)
    }

    @Test func probation() {
        var statistics = ReceiveStatistics(ssrc: 1, minSequential: 2)
        #expect(statistics.packetReceived(sequenceNumber: 100, rtpTimestamp: 0, arrival: 0) == false)
        #expect(statistics.expected == 0)
        #expect(statistics.packetReceived(sequenceNumber: 101, rtpTimestamp: 0, arrival: 0) == true)
        #expect(statistics.packetReceived(sequenceNumber: 102, rtpTimestamp: 0, arrival: 0) == true)
        #expect(statistics.expected == 2 && statistics.received == 2)
    }

    @Test func jitterIsZeroForConstantTransit() {
        var statistics = ReceiveStatistics(ssrc: 1)
        for index in 0..<50 {
            statistics.packetReceived(sequenceNumber: UInt16(index), rtpTimestamp: UInt32(index * 960), arrival: UInt32(5000 + index * 960))
        }
        #expect(statistics.jitter == 0)
    }

    @Test func jitterWithKnownPattern() {
        // Every other packet arrives 80 ticks late, so |D| = 80 for each packet after the first.
        var statistics = ReceiveStatistics(ssrc: 1)
        var reference: Double = 0
        for index in 0..<400 {
            let timestamp = UInt32(index * 160)
            statistics.packetReceived(sequenceNumber: UInt16(index), rtpTimestamp: timestamp, arrival: timestamp + (index % 2 == 1 ? 80 : 0))
            if index > 0 { reference += (80 - reference) / 16 }
            if index == 1 { #expect(statistics.jitter == 5) }  // 80 / 16
        }
        #expect(statistics.jitter >= 79 && statistics.jitter <= 80)
        #expect(abs(Double(statistics.jitter) - reference) <= 1)
        #expect(statistics.makeReportBlock(nowNanoseconds: 0).jitter == statistics.jitter)
    }

    @Test func lastSenderReportAndDelay() {
        var statistics = ReceiveStatistics(ssrc: 1)
        statistics.packetReceived(sequenceNumber: 1, rtpTimestamp: 0, arrival: 0)
        #expect(statistics.makeReportBlock(nowNanoseconds: 10).lastSenderReport == 0)
        let ntp = NTPTimestamp(seconds: 0x1234_5678, fraction: 0x9ABC_DEF0)
        statistics.senderReportReceived(ntp: ntp, arrivalNanoseconds: 2_000_000_000)
        let block = statistics.makeReportBlock(nowNanoseconds: 3_500_000_000)
        #expect(block.lastSenderReport == 0x5678_9ABC)
        #expect(block.delaySinceLastSenderReport == 98304)  // 1.5 s × 65536
    }

    @Test func negativeCumulativeLostWithDuplicates() {
        var statistics = ReceiveStatistics(ssrc: 1)
        for _ in 0..<3 { statistics.packetReceived(sequenceNumber: 0, rtpTimestamp: 0, arrival: 0) }
        #expect(statistics.cumulativeLost == -2)
        // The wire field is 24-bit signed: larger values clamp when written.
        let bytes = RTCPBuilder.receiverReport(ssrc: 9, reportBlocks: [
            ReportBlock(ssrc: 1, cumulativeLost: -9_000_000), ReportBlock(ssrc: 2, cumulativeLost: 9_000_000),
            statistics.makeReportBlock(nowNanoseconds: 0),
        ])
        let decoded = bytes.flatMap { withFirstRTCP($0) { RTCPReceiverReport($0).map { Array($0.reportBlocks) } } }
        #expect(decoded?.map(\.cumulativeLost) == [-0x80_0000, 0x7F_FFFF, -2])
    }
}

@Suite struct NTPTests {
    @Test func fromUnixNanoseconds() {
        let ntp = NTPTimestamp(unixNanoseconds: 1_000_000_000 * 1_700_000_000 + 500_000_000)
        #expect(ntp.seconds == UInt32(1_700_000_000 + 2_208_988_800))
        #expect(ntp.fraction == 0x8000_0000)
        #expect(ntp.middle32 == UInt32(truncatingIfNeeded: (1_700_000_000 + 2_208_988_800) << 16) | 0x8000)
        #expect(ntp.unixNanoseconds == 1_000_000_000 * 1_700_000_000 + 500_000_000)
        #expect(NTPTimestamp(unixNanoseconds: 0).rawValue == UInt64(2_208_988_800) << 32)
        #expect(NTPTimestamp(rawValue: ntp.rawValue) == ntp)
    }
}
