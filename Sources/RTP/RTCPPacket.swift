/// RTCP packet types (RFC 3550 §12.1, RFC 4585 §6.1, RFC 3611).
public struct RTCPPacketType: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let senderReport = RTCPPacketType(rawValue: 200)
    public static let receiverReport = RTCPPacketType(rawValue: 201)
    public static let sourceDescription = RTCPPacketType(rawValue: 202)
    public static let bye = RTCPPacketType(rawValue: 203)
    public static let application = RTCPPacketType(rawValue: 204)
    /// Transport-layer feedback (RFC 4585): generic NACK, transport-cc.
    public static let transportFeedback = RTCPPacketType(rawValue: 205)
    /// Payload-specific feedback (RFC 4585): PLI, FIR, REMB.
    public static let payloadFeedback = RTCPPacketType(rawValue: 206)
    public static let extendedReport = RTCPPacketType(rawValue: 207)
}

/// One RTCP packet inside a compound packet, with a validated common header.
///
/// `bytes` covers the whole packet (header included) as declared by its length field; `body`
/// is what follows the 4-byte header, minus any padding.
public struct RTCPPacket {
    public static let headerLength = 4

    public let bytes: UnsafeRawBufferPointer
    /// Where this packet sits in the compound buffer it came from (for in-place rewriting).
    public let range: Range<Int>
    public let padding: Bool
    /// The 5-bit count field: report count, source count, or feedback message type (FMT).
    public let count: UInt8
    public let packetType: RTCPPacketType
    /// Length of `body` in bytes (declared length minus header and padding).
    public let bodyLength: Int

    /// The FMT of feedback packets (same bits as `count`).
    public var format: UInt8 { count }

    public var body: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[Self.headerLength..<(Self.headerLength + bodyLength)])
    }

    /// Validates the header at the start of `buffer`: version 2, declared length within the
    /// buffer, sane padding. `offset` is only recorded in `range`.
    public init?(_ buffer: UnsafeRawBufferPointer, offset: Int = 0) {
        guard buffer.count >= Self.headerLength else { return nil }
        let first = buffer.uint8(at: 0)
        guard first >> 6 == 2 else { return nil }
        let length = (Int(buffer.uint16(at: 2)) + 1) * 4
        guard length <= buffer.count else { return nil }
        padding = first & 0x20 != 0
        count = first & 0x1F
        packetType = RTCPPacketType(rawValue: buffer.uint8(at: 1))
        var paddingLength = 0
        if padding {
            paddingLength = Int(buffer.uint8(at: length - 1))
            guard paddingLength >= 1, paddingLength <= length - Self.headerLength else { return nil }
        }
        bodyLength = length - Self.headerLength - paddingLength
        bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<length])
        range = offset..<(offset + length)
    }
}

/// Walks the packets of a compound RTCP packet without allocating. Reduced-size RTCP
/// (RFC 5506) is accepted: no requirement that the first packet is an SR or RR.
///
/// Iteration ends at the end of the buffer or at the first invalid packet; `isMalformed` then
/// tells the caller that trailing bytes were not understood.
public struct RTCPCompoundIterator: IteratorProtocol, Sequence {
    public let buffer: UnsafeRawBufferPointer
    private var offset = 0
    public private(set) var isMalformed = false

    public init(_ buffer: UnsafeRawBufferPointer) { self.buffer = buffer }

    public mutating func next() -> RTCPPacket? {
        guard offset < buffer.count, !isMalformed else { return nil }
        guard let packet = RTCPPacket(UnsafeRawBufferPointer(rebasing: buffer[offset...]), offset: offset) else {
            isMalformed = true
            return nil
        }
        offset = packet.range.upperBound
        return packet
    }

    /// True when the whole buffer is a sequence of valid RTCP packets (at least one).
    public static func isValidCompound(_ buffer: UnsafeRawBufferPointer) -> Bool {
        var iterator = RTCPCompoundIterator(buffer)
        var packets = 0
        while iterator.next() != nil { packets += 1 }
        return packets > 0 && !iterator.isMalformed
    }
}

/// A list of big-endian 32-bit SSRCs inside a packet (BYE, REMB), read lazily.
public struct RTCPSSRCList: RandomAccessCollection {
    let bytes: UnsafeRawBufferPointer
    public let count: Int

    init(_ bytes: UnsafeRawBufferPointer, count: Int) {
        self.bytes = bytes
        self.count = Swift.min(Swift.max(count, 0), bytes.count / 4)
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }

    public subscript(position: Int) -> UInt32 {
        precondition(position >= 0 && position < count, "RTCPSSRCList index out of range")
        return bytes.uint32(at: position * 4)
    }
}
