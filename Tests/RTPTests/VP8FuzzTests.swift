import Testing
@testable import RTP

@Suite struct VP8FuzzTests {
    /// One record of a `VP8Fuzz` trace: control byte (maximum layer, switch, padding, step), length, payload.
    static func record(_ payload: [UInt8], maxTemporalLayer: UInt8 = 3, switchSource: Bool = false, padding: Bool = false, step: Int8 = 1)
        -> [UInt8]
    {
        let control = UInt8(bitPattern: step << 4) | (padding ? 0x08 : 0) | (switchSource ? 0x04 : 0) | maxTemporalLayer
        return [control, UInt8(payload.count)] + payload
    }

    /// Traces like the corpus seeds: an L1T3 layer with a simulcast switch, reordered 7-bit IDs.
    static var seeds: [[UInt8]] {
        var switching: [UInt8] = []
        for (index, frame) in l1t3Frames(from: 1000, count: 8, firstTL0: 50, keyIndex: 3).enumerated() {
            for packet in frame { switching += record(packet, maxTemporalLayer: 1) }
            if index == 3 { switching += record([], padding: true) }
        }
        for (index, frame) in l1t3Frames(from: 30_000, count: 6, firstTL0: 255, keyIndex: 31).enumerated() {
            for (packetIndex, packet) in frame.enumerated() {
                switching += record(packet, switchSource: index == 0 && packetIndex == 0, step: index == 0 && packetIndex == 0 ? 7 : 1)
            }
        }
        var reordered: [UInt8] = []
        let frames = l1t3Frames(from: 126, count: 6, wide: false, firstTL0: 9, packets: 1)
        for (index, step) in [(0, 1), (1, 1), (2, 1), (4, 2), (3, -1), (5, 2)] as [(Int, Int8)] {
            reordered += record(frames[index][0], maxTemporalLayer: index == 1 ? 0 : 2, step: step)
        }
        return [switching, reordered, TestVP8.payload(pictureID: 0x1234, tl0: 7, tid: 2, sync: true, keyIndex: 5, keyframe: true)]
    }

    @Test func everyTruncationOfTheSeeds() {
        fuzzTruncations(of: Self.seeds) { VP8Fuzz.run($0) }
    }

    @Test func singleByteMutationsOfTheSeeds() {
        fuzzSingleByteMutations(of: Self.seeds, perByte: 8, generatorState: 15) { VP8Fuzz.run($0) }
    }

    @Test func randomTraces() {
        var generator = SplitMix64(state: 0x0B8)
        for _ in 0..<3000 {
            var trace: [UInt8] = []
            for _ in 0..<Int.random(in: 0...40, using: &generator) {
                // Plausible descriptors with random fields, and now and then random bytes.
                let payload = Bool.random(using: &generator)
                    ? TestVP8.payload(
                        pictureID: UInt16.random(in: 0...40, using: &generator), wide: Bool.random(using: &generator),
                        tl0: UInt8.random(in: 0...3, using: &generator), tid: UInt8.random(in: 0...3, using: &generator),
                        sync: Bool.random(using: &generator), keyIndex: UInt8.random(in: 0...31, using: &generator),
                        start: Bool.random(using: &generator), keyframe: Int.random(in: 0..<6, using: &generator) == 0)
                    : (0..<Int.random(in: 0...12, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
                trace += Self.record(
                    payload, maxTemporalLayer: UInt8.random(in: 0...3, using: &generator),
                    switchSource: Int.random(in: 0..<12, using: &generator) == 0, padding: Int.random(in: 0..<10, using: &generator) == 0,
                    step: Int8.random(in: -3...4, using: &generator))
            }
            trace.withUnsafeBytes { VP8Fuzz.run($0) }
        }
    }

    @Test func nullAndEmptyBuffers() {
        VP8Fuzz.run(UnsafeRawBufferPointer(start: nil, count: 0))
        [UInt8]().withUnsafeBytes { VP8Fuzz.run($0) }
    }
}
