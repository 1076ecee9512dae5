/// A TURN ChannelData message (RFC 8656 §12.4): a 4-byte header, then application data. Parsed
/// without copying because relayed media rides in it.
public struct ChannelData: Sendable, Equatable {
    /// RFC 8656 narrowed channels to 0x4000–0x4FFF; RFC 5766 allowed up to 0x7FFF and clients
    /// still pick from there (coturn's among them), so both are accepted.
    public static let channelRange: ClosedRange<UInt16> = 0x4000...0x7FFF
    public static let headerLength = 4

    public let channel: UInt16
    /// Where the application data sits in the buffer that was parsed.
    public let dataRange: Range<Int>

    /// Parses one ChannelData message at the start of `bytes`. Over UDP trailing padding is allowed;
    /// over TCP the caller frames with `STUNFraming.messageLength` first.
    public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= Self.headerLength else { return nil }
        let channel = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
        guard Self.channelRange.contains(channel) else { return nil }
        let length = Int(UInt16(bytes[2]) << 8 | UInt16(bytes[3]))
        guard Self.headerLength + length <= bytes.count else { return nil }
        self.channel = channel
        self.dataRange = Self.headerLength..<(Self.headerLength + length)
    }

    /// Writes the header for `length` bytes of data on `channel`; over TCP pad the data to 4 bytes.
    public static func header(channel: UInt16, length: Int) -> (UInt8, UInt8, UInt8, UInt8) {
        (UInt8(channel >> 8), UInt8(channel & 0xFF), UInt8(length >> 8), UInt8(length & 0xFF))
    }

    public static func encode(channel: UInt16, data: some Collection<UInt8>, padForTCP: Bool) -> [UInt8] {
        var bytes: [UInt8] = [UInt8(channel >> 8), UInt8(channel & 0xFF), UInt8(data.count >> 8), UInt8(data.count & 0xFF)]
        bytes.append(contentsOf: data)
        if padForTCP { bytes.append(contentsOf: repeatElement(0, count: (4 - data.count % 4) % 4)) }
        return bytes
    }
}

/// Framing of STUN and ChannelData on a byte stream (RFC 8656 §12.5, RFC 6062).
public enum STUNFraming {
    public enum Frame: Equatable, Sendable {
        /// A whole frame of this many bytes (ChannelData padded to a multiple of 4).
        case complete(length: Int)
        /// More bytes are needed to know.
        case needMore
        /// Neither STUN nor ChannelData: the stream cannot be resynchronised and should close.
        case invalid
    }

    public static func nextFrame(_ bytes: UnsafeRawBufferPointer) -> Frame {
        guard bytes.count >= 4 else { return .needMore }
        let first = bytes[0]
        let length = Int(UInt16(bytes[2]) << 8 | UInt16(bytes[3]))
        if first & 0xC0 == 0 {
            guard length % 4 == 0 else { return .invalid }
            return .complete(length: STUNMessage.headerLength + length)
        }
        if (0x40...0x7F).contains(first) {
            return .complete(length: ChannelData.headerLength + (length + 3) & ~3)
        }
        return .invalid
    }
}
