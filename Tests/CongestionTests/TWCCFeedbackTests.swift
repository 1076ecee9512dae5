@testable import Congestion
import Testing

/// Transport-wide feedback against hand-assembled packets (draft-holmer-rmcat-transport-wide-cc-
/// extensions-01 §3.1), round trips through the builder, and bad input.
@Suite struct TWCCFeedbackTests {
    /// Header for `words` 32-bit words after the first, sender 0x01020304, media 0x0A0B0C0D.
    static func header(words: Int, padding: Bool = false) -> [UInt8] {
        [padding ? 0xAF : 0x8F, 205, 0, UInt8(words), 1, 2, 3, 4, 0x0A, 0x0B, 0x0C, 0x0D]
    }

    @Test func aStatusVectorWithSmallLargeAndMissingPackets() throws {
        // Base 100, 4 packets, reference time 2 (128 ms), feedback count 7.
        // Two-bit vector: small, not received, large, small (then padding symbols).
        let chunk: UInt16 = 0xC000 | 1 << 12 | 0 << 10 | 2 << 8 | 1 << 6
        var bytes = Self.header(words: 6) + [0, 100, 0, 4, 0, 0, 2, 7, UInt8(chunk >> 8), UInt8(chunk & 0xFF)]
        bytes += [4]  // +1 ms
        bytes += [0xFF, 0xF8]  // -2 ms (large, negative)
        bytes += [40]  // +10 ms
        while bytes.count % 4 != 0 { bytes.append(0) }
        let feedback = try bytes.withUnsafeBytes { try TWCCFeedback(parsing: $0) }
        #expect(feedback.senderSSRC == 0x0102_0304 && feedback.mediaSSRC == 0x0A0B_0C0D)
        #expect(feedback.baseSequenceNumber == 100 && feedback.referenceTime == 2 && feedback.feedbackPacketCount == 7)
        #expect(feedback.packets.map(\.sequenceNumber) == [100, 101, 102, 103])
        #expect(feedback.packets.map(\.arrivalMicroseconds) == [129_000, nil, 127_000, 137_000])
        let again = try feedback.serialized().withUnsafeBytes { try TWCCFeedback(parsing: $0) }
        #expect(again == feedback)
    }

    @Test func runLengthAndOneBitChunksAcrossASequenceWrap() throws {
        // Base 65534: a run of 3 received-small, then a one-bit vector: 0,1 (and padding bits).
        let run: UInt16 = 1 << 13 | 3
        let vector: UInt16 = 0x8000 | 0 << 13 | 1 << 12
        var bytes = Self.header(words: 7) + [0xFF, 0xFE, 0, 5, 0xFF, 0xFF, 0xFF, 0]  // reference time -1
        bytes += [UInt8(run >> 8), UInt8(run & 0xFF), UInt8(vector >> 8), UInt8(vector & 0xFF)]
        bytes += [0, 1, 2, 3, 0, 0, 0, 0]
        let feedback = try bytes.withUnsafeBytes { try TWCCFeedback(parsing: $0) }
        #expect(feedback.referenceTime == -1)
        #expect(feedback.packets.map(\.sequenceNumber) == [65534, 65535, 0, 1, 2])
        #expect(feedback.packets.map(\.arrivalMicroseconds) == [-64_000, -63_750, -63_250, nil, -62_500])
    }

    @Test func theRecorderReportsEveryPacketOnceAndSplitsLongGaps() throws {
        var recorder = TWCCRecorder(senderSSRC: 9, mediaSSRC: 0)
        for sequence in UInt16(65530)...65535 where sequence != 65532 {
            recorder.packetArrived(sequenceNumber: sequence, arrivalMicroseconds: 1_000_000 + Int64(sequence - 65530) * 2_000)
        }
        for sequence: UInt16 in 0..<10 { recorder.packetArrived(sequenceNumber: sequence, arrivalMicroseconds: 1_020_000 + Int64(sequence) * 1_000) }
        let first = recorder.makeFeedback()
        #expect(first.count == 1)
        let parsed = try first[0].serialized().withUnsafeBytes { try TWCCFeedback(parsing: $0) }
        #expect(parsed.packets.count == 16)
        #expect(parsed.packets.filter { $0.arrivalMicroseconds == nil }.map(\.sequenceNumber) == [65532])
        #expect(parsed.packets.last?.arrivalMicroseconds == 1_029_000)
        #expect(recorder.makeFeedback().isEmpty)
        // A packet arriving after its number was reported is counted, not reported again.
        recorder.packetArrived(sequenceNumber: 65532, arrivalMicroseconds: 1_040_000)
        #expect(recorder.lateArrivals == 1)
        // Ten seconds between two arrivals do not fit one delta: two feedback packets.
        recorder.packetArrived(sequenceNumber: 10, arrivalMicroseconds: 2_000_000)
        recorder.packetArrived(sequenceNumber: 11, arrivalMicroseconds: 12_000_000)
        let split = recorder.makeFeedback()
        #expect(split.map(\.packets.count) == [1, 1])
        #expect(split.map(\.feedbackPacketCount) == [1, 2])
    }

    @Test func badFeedbackIsRefusedWithAReason() {
        func parse(_ bytes: [UInt8]) -> TWCCFeedback.ParseError? {
            do {
                _ = try bytes.withUnsafeBytes { try TWCCFeedback(parsing: $0) }
                return nil
            } catch let error as TWCCFeedback.ParseError {
                return error
            } catch {
                return nil
            }
        }
        #expect(parse([0x81, 205, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]) == .notTransportFeedback)  // a NACK
        #expect(parse([0x8F, 205, 0, 4]) == .truncated)
        // Header says 20 words.
        #expect(parse(Self.header(words: 20) + [0, 1, 0, 1, 0, 0, 0, 0, 0x20, 0x01, 0, 0]) == .truncated)
        // Reserved symbol 3 in a run.
        #expect(parse(Self.header(words: 5) + [0, 1, 0, 1, 0, 0, 0, 0, 0x60, 0x01, 0, 0]) == .invalidStatus)
        // A run longer than the packet count.
        #expect(parse(Self.header(words: 5) + [0, 1, 0, 1, 0, 0, 0, 0, 0x20, 0x05, 0, 0]) == .invalidStatus)
        // Deltas missing.
        #expect(parse(Self.header(words: 5) + [0, 1, 0, 4, 0, 0, 0, 0, 0x20, 0x04, 1, 2]) == .truncated)
    }

    @Test func randomBytesNeverTrap() {
        var random = SplitMix64(seed: 15)
        for _ in 0..<20_000 {
            let length = Int(random.next() % 80)
            var bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            if bytes.count >= 20, random.next() % 2 == 0 {
                // Half plausible: a valid header and length, so the chunks are parsed.
                bytes[0] = 0x8F
                bytes[1] = 205
                let words = bytes.count / 4 - 1
                bytes = Array(bytes[..<((words + 1) * 4)])
                bytes[2] = 0
                bytes[3] = UInt8(words)
            }
            bytes.withUnsafeBytes { TWCCFuzz.run($0) }
        }
    }
}
