/// The RFC 7741 §4.2 VP8 payload descriptor at the start of an RTP payload, read in place:
///
///         0 1 2 3 4 5 6 7
///        +-+-+-+-+-+-+-+-+
///        |X|R|N|S|R| PID |  required
///        +-+-+-+-+-+-+-+-+
///     X: |I|L|T|K| RSV   |
///        +-+-+-+-+-+-+-+-+
///     I: |M| PictureID   |  M: a second byte follows (15-bit picture ID)
///        +-+-+-+-+-+-+-+-+
///        |   PictureID   |
///        +-+-+-+-+-+-+-+-+
///     L: |   TL0PICIDX   |
///        +-+-+-+-+-+-+-+-+
///   T/K: |TID|Y| KEYIDX  |
///        +-+-+-+-+-+-+-+-+
///
/// The offsets let the SFU rewrite the picture ID, TL0PICIDX and KEYIDX in the copy it sends
/// without parsing again. Reserved bits are ignored, as the RFC asks of receivers.
public struct VP8PayloadDescriptor: Hashable, Sendable {
    /// Picture IDs come in two widths; a rewrite must keep the one the sender chose, because
    /// the descriptor's length (and so every byte after it) depends on it.
    public enum PictureIDWidth: Hashable, Sendable {
        case sevenBits
        case fifteenBits

        /// Number of distinct picture IDs: values wrap modulo this.
        public var modulus: Int { self == .sevenBits ? 0x80 : 0x8000 }
    }

    public enum ParseError: Error, Hashable, Sendable {
        case empty
        case truncatedExtensionByte
        case truncatedPictureID
        case truncatedTL0PictureIndex
        case truncatedTemporalKeyIndexByte
        /// Nothing follows the descriptor: a VP8 packet carries at least one byte of the frame.
        case noPayloadAfterDescriptor
        /// A keyframe's first packet is shorter than the 10-byte frame tag and key frame header.
        case truncatedKeyframeHeader
        /// A keyframe's start code is not 9d 01 2a (RFC 6386 §9.1).
        case badKeyframeStartCode
    }

    /// X: the extension byte is present.
    public var hasExtension: Bool
    /// N: no other frame references this one, so it can be dropped without harm.
    public var isNonReference: Bool
    /// S: this packet starts a VP8 partition.
    public var isStartOfPartition: Bool
    /// PID: the partition this packet's first byte belongs to.
    public var partitionIndex: UInt8
    /// Present when the I bit is set; its width is `pictureIDWidth`.
    public var pictureID: UInt16?
    public var pictureIDWidth: PictureIDWidth?
    /// Present when the L bit is set: the TL0 frame this frame builds on.
    public var tl0PictureIndex: UInt8?
    /// TID, present when the T bit is set.
    public var temporalLayer: UInt8?
    /// Y: the frame depends only on temporal layer 0, so forwarding may move up to its layer
    /// here. Meaningful only when `temporalLayer` is present.
    public var isLayerSync: Bool
    /// KEYIDX, present when the K bit is set.
    public var keyIndex: UInt8?
    /// Bytes from the start of the payload to the VP8 payload (the descriptor's size).
    public var length: Int
    /// Where the picture ID's first byte is (the one holding the M bit).
    public var pictureIDOffset: Int?
    public var tl0PictureIndexOffset: Int?
    /// The byte holding TID, Y and KEYIDX; present when T or K is set.
    public var temporalKeyIndexOffset: Int?
    /// The packet starts partition 0 of a frame whose payload header marks it intra-coded.
    public var isKeyframe: Bool
    /// From the key frame header (14 bits each; the scaling bits are left out); keyframes only.
    public var frameWidth: UInt16?
    public var frameHeight: UInt16?

    /// The packet carries the first bytes of a frame (start of partition 0).
    public var isStartOfFrame: Bool { isStartOfPartition && partitionIndex == 0 }

    /// Parses the descriptor at the start of `payload` (the RTP payload, padding excluded).
    public init(_ payload: UnsafeRawBufferPointer) throws(ParseError) {
        guard payload.count >= 1 else { throw .empty }
        let first = payload[0]
        hasExtension = first & 0x80 != 0
        isNonReference = first & 0x20 != 0
        isStartOfPartition = first & 0x10 != 0
        partitionIndex = first & 0x07
        pictureID = nil
        pictureIDWidth = nil
        tl0PictureIndex = nil
        temporalLayer = nil
        isLayerSync = false
        keyIndex = nil
        pictureIDOffset = nil
        tl0PictureIndexOffset = nil
        temporalKeyIndexOffset = nil
        isKeyframe = false
        frameWidth = nil
        frameHeight = nil

        var offset = 1
        if hasExtension {
            guard payload.count > offset else { throw .truncatedExtensionByte }
            let extensionBits = payload[offset]
            offset += 1
            if extensionBits & 0x80 != 0 {
                guard payload.count > offset else { throw .truncatedPictureID }
                pictureIDOffset = offset
                if payload[offset] & 0x80 != 0 {
                    guard payload.count > offset + 1 else { throw .truncatedPictureID }
                    pictureID = payload.uint16(at: offset) & 0x7FFF
                    pictureIDWidth = .fifteenBits
                    offset += 2
                } else {
                    pictureID = UInt16(payload[offset])
                    pictureIDWidth = .sevenBits
                    offset += 1
                }
            }
            if extensionBits & 0x40 != 0 {
                guard payload.count > offset else { throw .truncatedTL0PictureIndex }
                tl0PictureIndexOffset = offset
                tl0PictureIndex = payload[offset]
                offset += 1
            }
            let hasTemporalLayer = extensionBits & 0x20 != 0
            let hasKeyIndex = extensionBits & 0x10 != 0
            if hasTemporalLayer || hasKeyIndex {
                guard payload.count > offset else { throw .truncatedTemporalKeyIndexByte }
                temporalKeyIndexOffset = offset
                let byte = payload[offset]
                if hasTemporalLayer {
                    temporalLayer = byte >> 6
                    isLayerSync = byte & 0x20 != 0
                }
                if hasKeyIndex { keyIndex = byte & 0x1F }
                offset += 1
            }
        }
        length = offset
        guard payload.count > offset else { throw .noPayloadAfterDescriptor }

        // RFC 7741 §4.3: the payload header's P bit is 0 for a key frame; the header is only
        // at the start of partition 0.
        guard isStartOfPartition, partitionIndex == 0, payload[offset] & 0x01 == 0 else { return }
        isKeyframe = true
        // 3-byte frame tag, 3-byte start code, then width and height, 16 bits little-endian each.
        guard payload.count >= offset + 10 else { throw .truncatedKeyframeHeader }
        guard payload[offset + 3] == 0x9D, payload[offset + 4] == 0x01, payload[offset + 5] == 0x2A else {
            throw .badKeyframeStartCode
        }
        frameWidth = (UInt16(payload[offset + 7]) << 8 | UInt16(payload[offset + 6])) & 0x3FFF
        frameHeight = (UInt16(payload[offset + 9]) << 8 | UInt16(payload[offset + 8])) & 0x3FFF
    }
}
