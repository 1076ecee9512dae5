/// Writes one forwarded RTP packet for one subscriber into its send buffer: the fixed header
/// rewritten, the extension block rebuilt, then the payload. Rebuilding the block instead of
/// patching a copy lets the SFU add elements the publisher never sent (its own transport-wide
/// sequence number, abs-send-time) and wrap the packet for RTX (RFC 4588: the original sequence
/// number before the payload).
///
/// The block is always written in the one-byte form (RFC 8285 §4.2): the subscriber's ids are
/// the server's (1…14). Publisher elements whose mapped id is 0, above 14 or longer than 16
/// bytes are left out.
public enum ForwardedPacket {
    /// The most the output can exceed the input by: an extension header (4), abs-send-time (4),
    /// transport-wide sequence (3), alignment (3) and RTX's original sequence number (2).
    public static let maxGrowth = 16

    /// What to write besides the source's own bytes. Ids of 0 mean "not negotiated".
    public struct Fields {
        public var ssrc: UInt32
        public var sequenceNumber: UInt16
        public var timestamp: UInt32
        public var payloadType: UInt8
        public var absSendTimeID: UInt8 = 0
        public var absSendTime = AbsSendTime(rawValue: 0)
        public var transportSequenceID: UInt8 = 0
        public var transportSequence: UInt16 = 0
        /// RTX: the original (outgoing) sequence number, written before the payload.
        public var originalSequenceNumber: UInt16?

        public init(ssrc: UInt32, sequenceNumber: UInt16, timestamp: UInt32, payloadType: UInt8) {
            self.ssrc = ssrc
            self.sequenceNumber = sequenceNumber
            self.timestamp = timestamp
            self.payloadType = payloadType
        }
    }

    /// Where the written packet's payload starts (after any OSN), where it ends (before
    /// padding), its total length, and where the transport-wide sequence number sits (so it can
    /// be written once the packet is sure to go).
    public struct Written: Equatable {
        public var length: Int
        public var payloadOffset: Int
        public var payloadEnd: Int
        public var transportSequenceOffset: Int?
    }

    /// Writes `source` (parsed as `header`) into `output`; nil when `output` is too small.
    public static func write(
        _ source: UnsafeRawBufferPointer, header: RTPHeader, fields: Fields, extensionMap: ExtensionIDMap,
        into output: UnsafeMutableRawBufferPointer
    ) -> Written? {
        guard output.count >= source.count + maxGrowth, let outputBase = output.baseAddress, let sourceBase = source.baseAddress else {
            return nil
        }
        let fixedLength = RTPHeader.fixedHeaderLength + 4 * header.csrcCount
        outputBase.copyMemory(from: sourceBase, byteCount: fixedLength)
        output.setUInt8(source.uint8(at: 0) & ~0x10, at: 0)  // X set below if a block is written
        output.setUInt8((source.uint8(at: 1) & 0x80) | (fields.payloadType & 0x7F), at: 1)
        output.setUInt16(fields.sequenceNumber, at: 2)
        output.setUInt32(fields.timestamp, at: 4)
        output.setUInt32(fields.ssrc, at: 8)

        let blockStart = fixedLength
        var cursor = blockStart + 4
        if header.hasExtension {
            for element in header.extensionElements(in: source) {
                let id = extensionMap[element.id]
                let length = element.range.count
                guard id != 0, id <= 14, length >= 1, length <= 16 else { continue }
                output.setUInt8(id << 4 | UInt8(length - 1), at: cursor)
                (outputBase + cursor + 1).copyMemory(from: sourceBase + element.range.lowerBound, byteCount: length)
                cursor += 1 + length
            }
        }
        if fields.absSendTimeID != 0 {
            output.setUInt8(fields.absSendTimeID << 4 | 2, at: cursor)
            output.setUInt24(fields.absSendTime.rawValue, at: cursor + 1)
            cursor += 4
        }
        var transportSequenceOffset: Int?
        if fields.transportSequenceID != 0 {
            output.setUInt8(fields.transportSequenceID << 4 | 1, at: cursor)
            output.setUInt16(fields.transportSequence, at: cursor + 1)
            transportSequenceOffset = cursor + 1
            cursor += 3
        }
        if cursor == blockStart + 4 {
            cursor = blockStart
        } else {
            while (cursor - blockStart) % 4 != 0 {
                output.setUInt8(0, at: cursor)
                cursor += 1
            }
            output.setUInt16(RTPHeaderExtensionForm.oneByteProfile, at: blockStart)
            output.setUInt16(UInt16((cursor - blockStart - 4) / 4), at: blockStart + 2)
            output.setUInt8(output[0] | 0x10, at: 0)
        }
        if let original = fields.originalSequenceNumber {
            output.setUInt16(original, at: cursor)
            cursor += 2
        }
        // Payload and padding (its count byte last) go over as they are.
        let rest = source.count - header.headerLength
        (outputBase + cursor).copyMemory(from: sourceBase + header.headerLength, byteCount: rest)
        return Written(
            length: cursor + rest, payloadOffset: cursor, payloadEnd: cursor + rest - header.paddingLength,
            transportSequenceOffset: transportSequenceOffset)
    }
}

/// A padding-only packet (RFC 3550 §5.1: P set, no payload, the last byte counting the padding)
/// for probing a subscriber's link when none of its video is being forwarded, so there is no
/// media to copy: libwebrtc probes the same way, on the RTX stream, whose receiver drops a
/// packet without an original sequence number but reports its arrival in transport-wide feedback.
public enum PaddingPacket {
    /// The most padding one packet carries (its count is one byte).
    public static let maxPadding = 255
    /// The header with a one-byte extension block holding only the transport-wide sequence number.
    public static let headerLength = RTPHeader.fixedHeaderLength + 8

    /// Writes the packet with `padding` bytes of padding (1…255) and returns its length and where
    /// the transport-wide sequence number goes; nil when `output` is too small or `padding` is out
    /// of range.
    public static func write(
        ssrc: UInt32, sequenceNumber: UInt16, timestamp: UInt32, payloadType: UInt8, transportSequenceID: UInt8, padding: Int,
        into output: UnsafeMutableRawBufferPointer
    ) -> ForwardedPacket.Written? {
        guard (1...maxPadding).contains(padding), (1...14).contains(transportSequenceID), output.count >= headerLength + padding else {
            return nil
        }
        output.setUInt8(0xB0, at: 0)  // version 2, padding, extension
        output.setUInt8(payloadType & 0x7F, at: 1)
        output.setUInt16(sequenceNumber, at: 2)
        output.setUInt32(timestamp, at: 4)
        output.setUInt32(ssrc, at: 8)
        let block = RTPHeader.fixedHeaderLength
        output.setUInt16(RTPHeaderExtensionForm.oneByteProfile, at: block)
        output.setUInt16(1, at: block + 2)
        output.setUInt8(transportSequenceID << 4 | 1, at: block + 4)
        output.setUInt16(0, at: block + 5)
        output.setUInt8(0, at: block + 7)
        for offset in headerLength..<(headerLength + padding - 1) { output.setUInt8(0, at: offset) }
        output.setUInt8(UInt8(padding), at: headerLength + padding - 1)
        return ForwardedPacket.Written(
            length: headerLength + padding, payloadOffset: headerLength, payloadEnd: headerLength, transportSequenceOffset: block + 5)
    }
}

/// RFC 4588 retransmission packets: the original sequence number (OSN) is the first two bytes
/// of the payload.
public enum RetransmissionPacket {
    /// Turns an RTX packet back into the original in place: the OSN is taken out of the payload
    /// (what follows moves up two bytes) and written as the sequence number; the caller sets
    /// SSRC and payload type. Returns the new length, or nil for a packet with no OSN (padding
    /// only, which senders use to probe).
    public static func unwrap(_ packet: UnsafeMutableRawBufferPointer, header: RTPHeader) -> Int? {
        guard header.payloadLength >= 2, let base = packet.baseAddress else { return nil }
        let start = header.headerLength
        let original = UnsafeRawBufferPointer(packet).uint16(at: start)
        (base + start).copyMemory(from: base + start + 2, byteCount: packet.count - start - 2)
        packet.setUInt16(original, at: 2)
        return packet.count - 2
    }
}

/// H.264 (RFC 6184) as far as a forwarder needs it: does this packet start a frame a decoder can
/// start from?
public enum H264Payload {
    /// True when the payload carries an IDR slice or an SPS: a single NAL unit of that type, a
    /// STAP-A holding one, or the first fragment of an FU-A of one.
    public static func startsKeyframe(_ payload: UnsafeRawBufferPointer) -> Bool {
        guard payload.count >= 1 else { return false }
        let type = payload.uint8(at: 0) & 0x1F
        switch type {
        case 5, 7: return true
        case 24:
            var offset = 1
            while offset + 3 <= payload.count {
                let size = Int(payload.uint16(at: offset))
                let inner = payload.uint8(at: offset + 2) & 0x1F
                if inner == 5 || inner == 7 { return true }
                offset += 2 + size
            }
            return false
        case 28:
            guard payload.count >= 2 else { return false }
            let fragment = payload.uint8(at: 1)
            return fragment & 0x80 != 0 && (fragment & 0x1F == 5 || fragment & 0x1F == 7)
        default: return false
        }
    }
}
