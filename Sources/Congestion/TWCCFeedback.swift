/// Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01
/// §3.1): which transport-wide sequence numbers arrived, and when. Parsed from and built to the
/// RTCP packet (RTPFB, FMT 15) as bytes; no I/O, no clock.
public struct TWCCFeedback: Sendable, Equatable {
    /// One packet the feedback reports on.
    public struct PacketStatus: Sendable, Equatable {
        public var sequenceNumber: UInt16
        /// Arrival time in microseconds on the receiver's clock (reference time plus deltas);
        /// nil when the packet did not arrive.
        public var arrivalMicroseconds: Int64?

        public init(sequenceNumber: UInt16, arrivalMicroseconds: Int64?) {
            self.sequenceNumber = sequenceNumber
            self.arrivalMicroseconds = arrivalMicroseconds
        }
    }

    public var senderSSRC: UInt32
    public var mediaSSRC: UInt32
    public var baseSequenceNumber: UInt16
    /// Multiples of 64 ms, 24-bit signed on the wire.
    public var referenceTime: Int32
    /// Counts the feedback packets the receiver sent (modulo 256), so a lost one is noticed.
    public var feedbackPacketCount: UInt8
    public var packets: [PacketStatus]

    public init(
        senderSSRC: UInt32, mediaSSRC: UInt32, baseSequenceNumber: UInt16, referenceTime: Int32, feedbackPacketCount: UInt8,
        packets: [PacketStatus]
    ) {
        self.senderSSRC = senderSSRC
        self.mediaSSRC = mediaSSRC
        self.baseSequenceNumber = baseSequenceNumber
        self.referenceTime = referenceTime
        self.feedbackPacketCount = feedbackPacketCount
        self.packets = packets
    }

    public static let payloadType: UInt8 = 205
    public static let format: UInt8 = 15
    /// Receive deltas count in 250 µs ticks.
    public static let deltaTickMicroseconds: Int64 = 250
    public static let referenceTimeMicroseconds: Int64 = 64_000

    /// Why a packet is not valid feedback: each is a counted drop for the caller.
    public enum ParseError: Error, Equatable, Sendable {
        case notTransportFeedback
        case truncated
        /// A status symbol the draft reserves (0b11), or a chunk naming more packets than the
        /// header's count.
        case invalidStatus
    }

    // Status symbols.
    private static let notReceived: UInt8 = 0
    private static let smallDelta: UInt8 = 1
    private static let largeDelta: UInt8 = 2

    /// Parses one RTCP packet (header included; padding allowed).
    public init(parsing packet: UnsafeRawBufferPointer) throws(ParseError) {
        guard packet.count >= 2, packet[0] >> 6 == 2, packet[0] & 0x1F == Self.format, packet[1] == Self.payloadType else {
            throw .notTransportFeedback
        }
        guard packet.count >= 20 else { throw .truncated }
        let declared = ((Int(packet[2]) << 8) + Int(packet[3]) + 1) * 4
        guard declared <= packet.count else { throw .truncated }
        var end = declared
        if packet[0] & 0x20 != 0 {
            let padding = Int(packet[declared - 1])
            guard padding > 0, padding <= declared - 20 else { throw .truncated }
            end -= padding
        }
        func u16(_ at: Int) -> UInt16 { UInt16(packet[at]) << 8 | UInt16(packet[at + 1]) }
        func u32(_ at: Int) -> UInt32 { UInt32(u16(at)) << 16 | UInt32(u16(at + 2)) }
        senderSSRC = u32(4)
        mediaSSRC = u32(8)
        baseSequenceNumber = u16(12)
        let count = Int(u16(14))
        referenceTime = Int32(bitPattern: (UInt32(packet[16]) << 16 | UInt32(packet[17]) << 8 | UInt32(packet[18])) << 8) >> 8
        feedbackPacketCount = packet[19]

        var symbols: [UInt8] = []
        symbols.reserveCapacity(count)
        var offset = 20
        while symbols.count < count {
            guard offset + 2 <= end else { throw .truncated }
            let chunk = u16(offset)
            offset += 2
            let remaining = count - symbols.count
            if chunk & 0x8000 == 0 {
                // Run length: one symbol, 13-bit length.
                let symbol = UInt8((chunk >> 13) & 0x3)
                let length = Int(chunk & 0x1FFF)
                guard symbol != 3, length > 0, length <= remaining else { throw .invalidStatus }
                symbols.append(contentsOf: repeatElement(symbol, count: length))
            } else if chunk & 0x4000 == 0 {
                // Status vector of fourteen one-bit symbols; those past the count are padding.
                for bit in 0..<min(14, remaining) { symbols.append(UInt8((chunk >> (13 - bit)) & 1)) }
            } else {
                // Status vector of seven two-bit symbols.
                for index in 0..<min(7, remaining) {
                    let symbol = UInt8((chunk >> (12 - 2 * index)) & 0x3)
                    guard symbol != 3 else { throw .invalidStatus }
                    symbols.append(symbol)
                }
            }
        }
        var arrival = Int64(referenceTime) * Self.referenceTimeMicroseconds
        var packets: [PacketStatus] = []
        packets.reserveCapacity(count)
        for (index, symbol) in symbols.enumerated() {
            let sequence = baseSequenceNumber &+ UInt16(truncatingIfNeeded: index)
            switch symbol {
            case Self.smallDelta:
                guard offset + 1 <= end else { throw .truncated }
                arrival += Int64(packet[offset]) * Self.deltaTickMicroseconds
                offset += 1
                packets.append(PacketStatus(sequenceNumber: sequence, arrivalMicroseconds: arrival))
            case Self.largeDelta:
                guard offset + 2 <= end else { throw .truncated }
                arrival += Int64(Int16(bitPattern: u16(offset))) * Self.deltaTickMicroseconds
                offset += 2
                packets.append(PacketStatus(sequenceNumber: sequence, arrivalMicroseconds: arrival))
            default:
                packets.append(PacketStatus(sequenceNumber: sequence, arrivalMicroseconds: nil))
            }
        }
        self.packets = packets
    }

    /// The RTCP packet: header, fixed fields, chunks (run lengths for long runs, two-bit vectors
    /// otherwise), deltas, padded to a word. Arrival times are quantized to 250 µs ticks from the
    /// reference time; the caller keeps each delta within ±8.19 s (`TWCCRecorder` does).
    public func serialized() -> [UInt8] {
        var symbols: [UInt8] = []
        var deltas: [Int64] = []
        var previous = Int64(referenceTime) * Self.referenceTimeMicroseconds / Self.deltaTickMicroseconds
        for packet in packets {
            guard let arrival = packet.arrivalMicroseconds else {
                symbols.append(Self.notReceived)
                continue
            }
            let tick = arrival / Self.deltaTickMicroseconds
            let delta = tick - previous
            previous = tick
            symbols.append((0...255).contains(delta) ? Self.smallDelta : Self.largeDelta)
            deltas.append(delta)
        }
        var bytes: [UInt8] = [0x80 | Self.format, Self.payloadType, 0, 0]
        func put16(_ value: UInt16) { bytes += [UInt8(value >> 8), UInt8(value & 0xFF)] }
        func put32(_ value: UInt32) { put16(UInt16(value >> 16)); put16(UInt16(value & 0xFFFF)) }
        put32(senderSSRC)
        put32(mediaSSRC)
        put16(baseSequenceNumber)
        put16(UInt16(symbols.count))
        let reference = UInt32(bitPattern: referenceTime) & 0xFF_FFFF
        bytes += [UInt8(reference >> 16), UInt8((reference >> 8) & 0xFF), UInt8(reference & 0xFF), feedbackPacketCount]
        var index = 0
        while index < symbols.count {
            var run = 1
            while index + run < symbols.count, symbols[index + run] == symbols[index], run < 0x1FFF { run += 1 }
            if run >= 7 {
                put16(UInt16(symbols[index]) << 13 | UInt16(run))
                index += run
            } else {
                var chunk: UInt16 = 0xC000
                for slot in 0..<7 where index + slot < symbols.count { chunk |= UInt16(symbols[index + slot]) << (12 - 2 * slot) }
                put16(chunk)
                index += 7
            }
        }
        for (symbol, delta) in zip(symbols.filter { $0 != Self.notReceived }, deltas) {
            if symbol == Self.smallDelta { bytes.append(UInt8(delta)) } else { put16(UInt16(bitPattern: Int16(clamping: delta))) }
        }
        while bytes.count % 4 != 0 { bytes.append(0) }
        let words = bytes.count / 4 - 1
        bytes[2] = UInt8(words >> 8)
        bytes[3] = UInt8(words & 0xFF)
        return bytes
    }
}

/// Feeds arbitrary bytes to the parser (libFuzzer and the tests' random inputs): it must throw or
/// return, never trap, and what it returns must serialize.
public enum TWCCFuzz {
    public static func run(_ bytes: UnsafeRawBufferPointer) {
        guard let feedback = try? TWCCFeedback(parsing: bytes) else { return }
        _ = feedback.serialized()
    }
}
