/// A validated RTP fixed header (RFC 3550 §5.1) parsed from a packet without copying.
///
/// Parsing checks every length against the buffer so the rest of the packet path can index
/// the packet using `headerLength`, `payloadRange` and `extensionRange` without re-checking.
public struct RTPHeader: Hashable, Sendable {
    public static let fixedHeaderLength = 12

    public var version: UInt8
    public var padding: Bool
    public var hasExtension: Bool
    public var csrcCount: Int
    public var marker: Bool
    public var payloadType: UInt8
    public var sequenceNumber: UInt16
    public var timestamp: UInt32
    public var ssrc: UInt32
    /// Offset of the payload: fixed header + CSRCs + extension block.
    public var headerLength: Int
    /// Payload bytes, excluding padding.
    public var payloadLength: Int
    /// Trailing padding bytes including the count byte (0 when `padding` is false).
    public var paddingLength: Int
    /// The extension block's "defined by profile" field (0xBEDE, 0x100X, ...); 0 when absent.
    public var extensionProfile: UInt16
    /// Byte range of the extension data (after the 4-byte extension header); empty when absent.
    public var extensionRange: Range<Int>

    public var payloadRange: Range<Int> { headerLength..<(headerLength + payloadLength) }

    /// Returns nil unless the buffer holds a complete version-2 RTP packet whose CSRC list,
    /// extension block and padding all fit.
    public init?(_ packet: UnsafeRawBufferPointer) {
        let count = packet.count
        guard count >= Self.fixedHeaderLength else { return nil }
        let first = packet.uint8(at: 0)
        guard first >> 6 == 2 else { return nil }
        version = 2
        padding = first & 0x20 != 0
        hasExtension = first & 0x10 != 0
        csrcCount = Int(first & 0x0F)
        let second = packet.uint8(at: 1)
        marker = second & 0x80 != 0
        payloadType = second & 0x7F
        sequenceNumber = packet.uint16(at: 2)
        timestamp = packet.uint32(at: 4)
        ssrc = packet.uint32(at: 8)

        var offset = Self.fixedHeaderLength + 4 * csrcCount
        guard offset <= count else { return nil }
        if hasExtension {
            guard offset + 4 <= count else { return nil }
            extensionProfile = packet.uint16(at: offset)
            let extensionLength = 4 * Int(packet.uint16(at: offset + 2))
            let dataStart = offset + 4
            guard dataStart + extensionLength <= count else { return nil }
            extensionRange = dataStart..<(dataStart + extensionLength)
            offset = dataStart + extensionLength
        } else {
            extensionProfile = 0
            extensionRange = offset..<offset
        }
        headerLength = offset

        if padding {
            // The last byte counts the padding including itself, so zero is malformed.
            let paddingCount = Int(packet.uint8(at: count - 1))
            guard paddingCount >= 1, paddingCount <= count - offset else { return nil }
            paddingLength = paddingCount
        } else {
            paddingLength = 0
        }
        payloadLength = count - offset - paddingLength
    }

    /// The CSRC at `index` (0..<csrcCount), or nil when out of range.
    public func csrc(at index: Int, in packet: UnsafeRawBufferPointer) -> UInt32? {
        guard index >= 0, index < csrcCount else { return nil }
        let offset = Self.fixedHeaderLength + 4 * index
        guard offset + 4 <= packet.count else { return nil }
        return packet.uint32(at: offset)
    }

    /// Header extension elements (RFC 8285) of this packet; empty for unknown profiles.
    public func extensionElements(in packet: UnsafeRawBufferPointer) -> RTPHeaderExtensionElements {
        RTPHeaderExtensionElements(packet: packet, profile: extensionProfile, range: hasExtension ? extensionRange : 0..<0)
    }

    /// The data range (within `packet`) of the first extension element with `id`, if any.
    public func extensionElement(id: UInt8, in packet: UnsafeRawBufferPointer) -> Range<Int>? {
        extensionElements(in: packet).first(id: id)?.range
    }
}
