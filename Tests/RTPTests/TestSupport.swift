@testable import RTP

/// Builds RTP packets byte by byte following the RFC 3550 §5.1 layout.
enum TestRTP {
    static func packet(
        firstByte: UInt8? = nil, marker: Bool = false, payloadType: UInt8 = 96, sequenceNumber: UInt16 = 0x1234,
        timestamp: UInt32 = 0xDEAD_BEEF, ssrc: UInt32 = 0x1122_3344, csrcs: [UInt32] = [],
        extensionProfile: UInt16? = nil, extensionData: [UInt8] = [], payload: [UInt8] = [1, 2, 3, 4],
        paddingLength: Int = 0
    ) -> [UInt8] {
        var first: UInt8 = 0x80 | UInt8(csrcs.count & 0x0F)
        if extensionProfile != nil { first |= 0x10 }
        if paddingLength > 0 { first |= 0x20 }
        var bytes: [UInt8] = [firstByte ?? first, (marker ? 0x80 : 0) | payloadType]
        bytes += be16(sequenceNumber) + be32(timestamp) + be32(ssrc)
        for csrc in csrcs { bytes += be32(csrc) }
        if let extensionProfile {
            var data = extensionData
            while data.count % 4 != 0 { data.append(0) }
            bytes += be16(extensionProfile) + be16(UInt16(data.count / 4)) + data
        }
        bytes += payload
        if paddingLength > 0 {
            bytes += [UInt8](repeating: 0, count: paddingLength - 1) + [UInt8(paddingLength)]
        }
        return bytes
    }

    /// One-byte form elements: header byte (id << 4 | len − 1) then data.
    static func oneByte(_ elements: [(id: UInt8, data: [UInt8])]) -> [UInt8] {
        elements.flatMap { [($0.id << 4) | UInt8($0.data.count - 1)] + $0.data }
    }

    /// Two-byte form elements: id, length, data.
    static func twoByte(_ elements: [(id: UInt8, data: [UInt8])]) -> [UInt8] {
        elements.flatMap { [$0.id, UInt8($0.data.count)] + $0.data }
    }
}

func be16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xFF)] }
func be32(_ value: UInt32) -> [UInt8] { be16(UInt16(value >> 16)) + be16(UInt16(value & 0xFFFF)) }

func hex(_ text: String) -> [UInt8] {
    var bytes: [UInt8] = []
    var iterator = text.filter(\.isHexDigit).makeIterator()
    while let high = iterator.next(), let low = iterator.next() { bytes.append(UInt8(String([high, low]), radix: 16)!) }
    return bytes
}

func parseHeader(_ bytes: [UInt8]) -> RTPHeader? { bytes.withUnsafeBytes { RTPHeader($0) } }

/// Extension elements as (id, data) pairs, copied out of the packet for comparison.
func extensionElements(_ bytes: [UInt8]) -> [(id: UInt8, data: [UInt8])] {
    bytes.withUnsafeBytes { raw in
        guard let header = RTPHeader(raw) else { return [] }
        return header.extensionElements(in: raw).map { (id: $0.id, data: Array(raw[$0.range])) }
    }
}

/// Every RTCP packet of a compound buffer, copied out.
func rtcpPackets(_ bytes: [UInt8]) -> [[UInt8]] {
    bytes.withUnsafeBytes { raw in RTCPCompoundIterator(raw).map { Array($0.bytes) } }
}

/// Runs `body` on the first RTCP packet of `bytes`.
func withFirstRTCP<R>(_ bytes: [UInt8], _ body: (RTCPPacket) throws -> R?) rethrows -> R? {
    try bytes.withUnsafeBytes { raw in
        var iterator = RTCPCompoundIterator(raw)
        guard let packet = iterator.next() else { return nil }
        return try body(packet)
    }
}

/// Deterministic generator so fuzz-style tests are reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Feeds every prefix and every suffix of each seed to a fuzz entry point.
func fuzzTruncations(of seeds: [[UInt8]], _ run: (UnsafeRawBufferPointer) -> Void) {
    for seed in seeds {
        for length in 0...seed.count {
            Array(seed.prefix(length)).withUnsafeBytes(run)
            Array(seed.suffix(length)).withUnsafeBytes(run)
        }
    }
}

/// Feeds `perByte` random replacements of each byte of each seed to a fuzz entry point.
func fuzzSingleByteMutations(of seeds: [[UInt8]], perByte: Int, generatorState: UInt64, _ run: (UnsafeRawBufferPointer) -> Void) {
    var generator = SplitMix64(state: generatorState)
    for seed in seeds {
        for index in seed.indices {
            for _ in 0..<perByte {
                var mutated = seed
                mutated[index] = UInt8.random(in: 0...255, using: &generator)
                mutated.withUnsafeBytes(run)
            }
        }
    }
}
