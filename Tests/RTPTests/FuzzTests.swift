import Testing
@testable import RTP

@Suite struct FuzzTests {
    /// Valid packets of every kind the parsers know, as fuzz seeds.
    static var seeds: [[UInt8]] {
        var seeds: [[UInt8]] = [
            TestRTP.packet(csrcs: [1, 2], extensionProfile: 0xBEDE,
                extensionData: TestRTP.oneByte([(1, [0x85]), (2, [1, 2, 3]), (3, [4, 5]), (4, [0x61])]), paddingLength: 3),
            TestRTP.packet(extensionProfile: 0x1003, extensionData: TestRTP.twoByte([(1, [1]), (2, [1, 2, 3]), (3, [0, 1]), (0xFF, [])])),
            handEncodedSenderReport + handEncodedSourceDescription,
        ]
        seeds.append(RTCPBuilder.genericNack(senderSSRC: 1, mediaSSRC: 2, lostSequenceNumbers: [1, 2, 40, 41])!)
        seeds.append(RTCPBuilder.pictureLossIndication(senderSSRC: 1, mediaSSRC: 2)!)
        seeds.append(RTCPBuilder.fullIntraRequest(senderSSRC: 1, entries: [FIREntry(ssrc: 3, sequenceNumber: 4)])!)
        seeds.append(RTCPBuilder.remb(senderSSRC: 1, bitrate: 2_000_000, ssrcs: [3, 4])!)
        seeds.append(RTCPBuilder.bye(ssrcs: [5])!)
        seeds.append(hex("8F CD 00 05  00 00 00 01  00 00 00 02  00 0A 00 01  FF FF FE 07  20 01 04 00"))
        return seeds
    }

    @Test func everyTruncationOfValidPackets() {
        fuzzTruncations(of: Self.seeds) { RTPFuzz.run($0) }
    }

    @Test func singleByteMutationsOfValidPackets() {
        fuzzSingleByteMutations(of: Self.seeds, perByte: 4, generatorState: 7) { RTPFuzz.run($0) }
    }

    @Test func randomBytes() {
        var generator = SplitMix64(state: 0x5EED)
        for iteration in 0..<5000 {
            let length = Int.random(in: 0...160, using: &generator)
            var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            // Bias half the inputs towards plausible headers so the deeper paths get exercised.
            if iteration % 2 == 0, !bytes.isEmpty {
                bytes[0] = (bytes[0] & 0x3F) | 0x80
                if bytes.count > 1, iteration % 4 == 0 { bytes[1] = UInt8.random(in: 200...206, using: &generator) }
                if bytes.count > 3, iteration % 4 == 0 { bytes[2] = 0; bytes[3] = UInt8(min(bytes.count / 4, 255)) &- 1 }
                if bytes.count > 13, iteration % 4 == 2 { bytes[12] = 0xBE; bytes[13] = 0xDE; bytes[0] |= 0x10 }
            }
            bytes.withUnsafeBytes { RTPFuzz.run($0) }
        }
    }

    @Test func nullAndEmptyBuffers() {
        RTPFuzz.run(UnsafeRawBufferPointer(start: nil, count: 0))
        [UInt8]().withUnsafeBytes { RTPFuzz.run($0) }
    }
}
