// RTCP feedback messages (RFC 4585 §6.1 common layout: sender SSRC, media SSRC, then FCI).

/// Feedback message types (FMT) the SFU understands.
public enum RTCPFeedbackFormat {
    /// RTPFB FMT 1 (RFC 4585 §6.2.1).
    public static let genericNack: UInt8 = 1
    /// RTPFB FMT 15 (draft-holmer-rmcat-transport-wide-cc-extensions).
    public static let transportCC: UInt8 = 15
    /// PSFB FMT 1 (RFC 4585 §6.3.1).
    public static let pictureLossIndication: UInt8 = 1
    /// PSFB FMT 4 (RFC 5104 §4.3.1).
    public static let fullIntraRequest: UInt8 = 4
    /// PSFB FMT 15 (RFC 4585 application layer feedback; REMB uses it).
    public static let applicationLayer: UInt8 = 15
}

/// Length of the sender + media SSRC fields that open every feedback message.
let feedbackHeaderLength = 8

/// One generic NACK FCI entry: packet `pid` and a bitmask of the 16 following ones.
public struct NackEntry: Hashable, Sendable {
    public var packetID: UInt16
    /// Bit i set: packet `packetID + i + 1` is lost too.
    public var lostBitmask: UInt16

    public init(packetID: UInt16, lostBitmask: UInt16) {
        self.packetID = packetID
        self.lostBitmask = lostBitmask
    }

    /// Calls `body` for each lost sequence number of this entry, in increasing order (mod 2^16).
    public func forEachLostSequenceNumber(_ body: (UInt16) throws -> Void) rethrows {
        try body(packetID)
        var mask = lostBitmask
        var bit: UInt16 = 1
        while mask != 0 {
            if mask & 1 != 0 { try body(packetID &+ bit) }
            mask >>= 1
            bit += 1
        }
    }
}

/// Generic NACK (RTPFB FMT 1): lost packets a receiver asks to be retransmitted.
public struct RTCPGenericNack {
    public let senderSSRC: UInt32
    public let mediaSSRC: UInt32
    public let entries: Entries

    public init?(_ packet: RTCPPacket) {
        guard packet.packetType == .transportFeedback, packet.format == RTCPFeedbackFormat.genericNack,
            packet.body.count >= feedbackHeaderLength
        else { return nil }
        let body = packet.body
        senderSSRC = body.uint32(at: 0)
        mediaSSRC = body.uint32(at: 4)
        entries = Entries(UnsafeRawBufferPointer(rebasing: body[feedbackHeaderLength...]))
    }

    /// Every lost sequence number across all entries, without allocating.
    public func forEachLostSequenceNumber(_ body: (UInt16) throws -> Void) rethrows {
        for entry in entries { try entry.forEachLostSequenceNumber(body) }
    }

    public struct Entries: RandomAccessCollection {
        let bytes: UnsafeRawBufferPointer
        public let count: Int

        init(_ bytes: UnsafeRawBufferPointer) {
            self.bytes = bytes
            count = bytes.count / 4
        }

        public var startIndex: Int { 0 }
        public var endIndex: Int { count }

        public subscript(position: Int) -> NackEntry {
            precondition(position >= 0 && position < count, "NACK entry index out of range")
            return NackEntry(packetID: bytes.uint16(at: position * 4), lostBitmask: bytes.uint16(at: position * 4 + 2))
        }
    }
}

/// Transport-wide congestion control feedback (RTPFB FMT 15). Recognised and its fixed fields
/// exposed; the packet status chunks are not decoded here (the SFU terminates TWCC per hop).
public struct RTCPTransportCC {
    public let senderSSRC: UInt32
    public let mediaSSRC: UInt32
    public let baseSequenceNumber: UInt16
    public let packetStatusCount: UInt16
    /// Reference time in multiples of 64 ms (24-bit signed on the wire).
    public let referenceTime: Int32
    public let feedbackPacketCount: UInt8
    /// Packet status chunks and receive deltas, undecoded.
    public let chunksAndDeltas: UnsafeRawBufferPointer

    public init?(_ packet: RTCPPacket) {
        guard packet.packetType == .transportFeedback, packet.format == RTCPFeedbackFormat.transportCC,
            packet.body.count >= feedbackHeaderLength + 8
        else { return nil }
        let body = packet.body
        senderSSRC = body.uint32(at: 0)
        mediaSSRC = body.uint32(at: 4)
        baseSequenceNumber = body.uint16(at: 8)
        packetStatusCount = body.uint16(at: 10)
        referenceTime = Int32(bitPattern: body.uint24(at: 12) << 8) >> 8
        feedbackPacketCount = body.uint8(at: 15)
        chunksAndDeltas = UnsafeRawBufferPointer(rebasing: body[16...])
    }
}

/// Picture loss indication (PSFB FMT 1): the receiver needs a key frame.
public struct RTCPPictureLossIndication {
    public let senderSSRC: UInt32
    public let mediaSSRC: UInt32

    public init?(_ packet: RTCPPacket) {
        guard packet.packetType == .payloadFeedback, packet.format == RTCPFeedbackFormat.pictureLossIndication,
            packet.body.count >= feedbackHeaderLength
        else { return nil }
        senderSSRC = packet.body.uint32(at: 0)
        mediaSSRC = packet.body.uint32(at: 4)
    }
}

/// One FIR FCI entry (RFC 5104 §4.3.1.1): the target source and a command sequence number
/// that lets the sender ignore repeats.
public struct FIREntry: Hashable, Sendable {
    public static let length = 8
    public var ssrc: UInt32
    public var sequenceNumber: UInt8

    public init(ssrc: UInt32, sequenceNumber: UInt8) {
        self.ssrc = ssrc
        self.sequenceNumber = sequenceNumber
    }
}

/// Full intra request (PSFB FMT 4). The media SSRC field is unused (0); targets are in the FCI.
public struct RTCPFullIntraRequest {
    public let senderSSRC: UInt32
    public let mediaSSRC: UInt32
    public let entries: Entries

    public init?(_ packet: RTCPPacket) {
        guard packet.packetType == .payloadFeedback, packet.format == RTCPFeedbackFormat.fullIntraRequest,
            packet.body.count >= feedbackHeaderLength
        else { return nil }
        let body = packet.body
        senderSSRC = body.uint32(at: 0)
        mediaSSRC = body.uint32(at: 4)
        entries = Entries(UnsafeRawBufferPointer(rebasing: body[feedbackHeaderLength...]))
    }

    public struct Entries: RandomAccessCollection {
        let bytes: UnsafeRawBufferPointer
        public let count: Int

        init(_ bytes: UnsafeRawBufferPointer) {
            self.bytes = bytes
            count = bytes.count / FIREntry.length
        }

        public var startIndex: Int { 0 }
        public var endIndex: Int { count }

        public subscript(position: Int) -> FIREntry {
            precondition(position >= 0 && position < count, "FIR entry index out of range")
            let offset = position * FIREntry.length
            return FIREntry(ssrc: bytes.uint32(at: offset), sequenceNumber: bytes.uint8(at: offset + 4))
        }
    }
}

/// Receiver estimated maximum bitrate (draft-alvestrand-rmcat-remb): PSFB FMT 15 with the
/// "REMB" identifier, bitrate = mantissa (18 bits) × 2^exp (6 bits), and the SSRCs it covers.
public struct RTCPREMB {
    static let identifier: UInt32 = 0x5245_4D42  // "REMB"

    public let senderSSRC: UInt32
    public let mediaSSRC: UInt32
    /// Bits per second (saturates at UInt64.max for absurd exponents).
    public let bitrate: UInt64
    public let ssrcs: RTCPSSRCList

    public init?(_ packet: RTCPPacket) {
        guard packet.packetType == .payloadFeedback, packet.format == RTCPFeedbackFormat.applicationLayer,
            packet.body.count >= feedbackHeaderLength + 8
        else { return nil }
        let body = packet.body
        guard body.uint32(at: 8) == Self.identifier else { return nil }
        let ssrcCount = Int(body.uint8(at: 12))
        guard body.count >= 16 + 4 * ssrcCount else { return nil }
        senderSSRC = body.uint32(at: 0)
        mediaSSRC = body.uint32(at: 4)
        let field = body.uint24(at: 13)
        bitrate = Self.decode(exponent: UInt8(field >> 18), mantissa: field & 0x3_FFFF)
        ssrcs = RTCPSSRCList(UnsafeRawBufferPointer(rebasing: body[16...]), count: ssrcCount)
    }

    static func decode(exponent: UInt8, mantissa: UInt32) -> UInt64 {
        let value = UInt64(mantissa)
        guard value != 0 else { return 0 }
        guard Int(exponent) <= value.leadingZeroBitCount else { return .max }
        return value << UInt64(exponent)
    }

    /// The largest representable bitrate ≤ `bitrate`: shifts the mantissa right (rounding down)
    /// until it fits 18 bits, so the advertised estimate never exceeds the real one.
    static func encode(_ bitrate: UInt64) -> (exponent: UInt8, mantissa: UInt32) {
        var mantissa = bitrate
        var exponent: UInt8 = 0
        while mantissa > 0x3_FFFF {
            mantissa >>= 1
            exponent += 1
        }
        return (exponent, UInt32(mantissa))
    }
}
