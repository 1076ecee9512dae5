import Testing
@testable import RTP

/// Builds a VP8 RTP payload: the RFC 7741 §4.2 descriptor, then either a key frame header
/// (frame tag with P = 0, start code, size) or a one-byte inter frame tag (P = 1), then data.
enum TestVP8 {
    static func payload(
        pictureID: UInt16? = nil, wide: Bool = true, tl0: UInt8? = nil, tid: UInt8? = nil, sync: Bool = false,
        keyIndex: UInt8? = nil, nonReference: Bool = false, start: Bool = true, partition: UInt8 = 0,
        keyframe: Bool = false, width: UInt16 = 640, height: UInt16 = 360
    ) -> [UInt8] {
        let hasExtension = pictureID != nil || tl0 != nil || tid != nil || keyIndex != nil
        var bytes: [UInt8] = [
            (hasExtension ? 0x80 : 0) | (nonReference ? 0x20 : 0) | (start ? 0x10 : 0) | partition,
        ]
        if hasExtension {
            bytes.append(
                (pictureID != nil ? 0x80 : 0) | (tl0 != nil ? 0x40 : 0) | (tid != nil ? 0x20 : 0) | (keyIndex != nil ? 0x10 : 0))
        }
        if let pictureID {
            bytes += wide ? [0x80 | UInt8(pictureID >> 8), UInt8(pictureID & 0xFF)] : [UInt8(pictureID & 0x7F)]
        }
        if let tl0 { bytes.append(tl0) }
        if tid != nil || keyIndex != nil {
            bytes.append((tid ?? 0) << 6 | (sync ? 0x20 : 0) | (keyIndex ?? 0))
        }
        if keyframe {
            bytes += [0x50, 0x2B, 0x00, 0x9D, 0x01, 0x2A, UInt8(width & 0xFF), UInt8(width >> 8), UInt8(height & 0xFF), UInt8(height >> 8)]
        } else {
            bytes.append(0x31)
        }
        return bytes + [0xAA, 0xBB]
    }
}

func parseVP8(_ bytes: [UInt8]) throws -> VP8PayloadDescriptor {
    try bytes.withUnsafeBytes { try VP8PayloadDescriptor($0) }
}

func vp8ParseError(_ bytes: [UInt8]) -> VP8PayloadDescriptor.ParseError? {
    bytes.withUnsafeBytes { raw -> VP8PayloadDescriptor.ParseError? in
        do throws(VP8PayloadDescriptor.ParseError) {
            _ = try VP8PayloadDescriptor(raw)
            return nil
        } catch {
            return error
        }
    }
}

@Suite struct VP8PayloadDescriptorTests {
    @Test func minimalDescriptor() throws {
        // RFC 7741 §4.2: no X byte; S set, partition 0; inter frame (P = 1).
        let descriptor = try parseVP8([0x10, 0x31, 0x00])
        #expect(!descriptor.hasExtension && !descriptor.isNonReference)
        #expect(descriptor.isStartOfPartition && descriptor.partitionIndex == 0 && descriptor.isStartOfFrame)
        #expect(descriptor.pictureID == nil && descriptor.pictureIDWidth == nil && descriptor.pictureIDOffset == nil)
        #expect(descriptor.tl0PictureIndex == nil && descriptor.temporalLayer == nil && descriptor.keyIndex == nil)
        #expect(descriptor.length == 1)
        #expect(!descriptor.isKeyframe && descriptor.frameWidth == nil)
    }

    @Test func sevenBitPictureID() throws {
        let descriptor = try parseVP8([0x90, 0x80, 0x7F, 0x31])
        #expect(descriptor.pictureID == 0x7F)
        #expect(descriptor.pictureIDWidth == .sevenBits)
        #expect(descriptor.pictureIDOffset == 2)
        #expect(descriptor.length == 3)
    }

    @Test func fifteenBitPictureID() throws {
        let descriptor = try parseVP8([0x80, 0x80, 0xAB, 0xCD, 0x31])
        #expect(descriptor.pictureID == 0x2BCD)
        #expect(descriptor.pictureIDWidth == .fifteenBits)
        #expect(descriptor.pictureIDWidth?.modulus == 32768)
        #expect(descriptor.pictureIDOffset == 2)
        #expect(descriptor.length == 4)
        #expect(!descriptor.isStartOfPartition && !descriptor.isKeyframe)
    }

    @Test func everyOptionalField() throws {
        // X, N, S, PID 3 (reserved bits set, to be ignored) | I L T K | M + 15-bit ID | TL0PICIDX |
        // TID 2, Y, KEYIDX 19.
        let bytes: [UInt8] = [0xBB, 0xFF, 0x81, 0x02, 0xFE, 0b1011_0011, 0x31]
        let descriptor = try parseVP8(bytes)
        #expect(descriptor.hasExtension && descriptor.isNonReference && descriptor.isStartOfPartition)
        #expect(descriptor.partitionIndex == 3 && !descriptor.isStartOfFrame)
        #expect(descriptor.pictureID == 0x0102)
        #expect(descriptor.tl0PictureIndex == 0xFE)
        #expect(descriptor.temporalLayer == 2)
        #expect(descriptor.isLayerSync)
        #expect(descriptor.keyIndex == 19)
        #expect(descriptor.pictureIDOffset == 2 && descriptor.tl0PictureIndexOffset == 4 && descriptor.temporalKeyIndexOffset == 5)
        #expect(descriptor.length == 6)
        #expect(!descriptor.isKeyframe)  // partition 3: no payload header here
    }

    @Test func temporalLayerWithoutKeyIndexAndTheReverse() throws {
        let temporalOnly = try parseVP8([0x80, 0x20, 0b0100_0111, 0x31])
        #expect(temporalOnly.temporalLayer == 1 && !temporalOnly.isLayerSync && temporalOnly.keyIndex == nil)
        #expect(temporalOnly.temporalKeyIndexOffset == 2 && temporalOnly.length == 3)
        let keyIndexOnly = try parseVP8([0x80, 0x10, 0b1110_0111, 0x31])
        #expect(keyIndexOnly.temporalLayer == nil && !keyIndexOnly.isLayerSync && keyIndexOnly.keyIndex == 7)
        // L without I: TL0PICIDX straight after the X byte.
        let tl0Only = try parseVP8([0x80, 0x40, 0x09, 0x31])
        #expect(tl0Only.tl0PictureIndex == 9 && tl0Only.tl0PictureIndexOffset == 2 && tl0Only.pictureID == nil)
    }

    @Test func keyframeSize() throws {
        let descriptor = try parseVP8(TestVP8.payload(pictureID: 5, tl0: 1, tid: 0, keyIndex: 2, keyframe: true, width: 1280, height: 720))
        #expect(descriptor.isKeyframe)
        #expect(descriptor.frameWidth == 1280 && descriptor.frameHeight == 720)
        #expect(descriptor.length == 6)
        // The two scaling bits above the 14-bit size are not part of it.
        let scaled = try parseVP8([0x10, 0x00, 0x00, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x42, 0xE0, 0xC1])
        #expect(scaled.frameWidth == 640 && scaled.frameHeight == 480)
        // P = 0 outside the start of partition 0 is just data.
        #expect(try !parseVP8([0x00, 0x00]).isKeyframe)
        #expect(try !parseVP8([0x11, 0x00]).isKeyframe)
    }

    @Test func everyTruncationIsAnError() throws {
        let full: [UInt8] = [0x90, 0xF0, 0x81, 0x02, 0xFE, 0b0110_0011, 0x50, 0x2B, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0x68, 0x01]
        let expected: [VP8PayloadDescriptor.ParseError?] = [
            .empty, .truncatedExtensionByte, .truncatedPictureID, .truncatedPictureID, .truncatedTL0PictureIndex,
            .truncatedTemporalKeyIndexByte, .noPayloadAfterDescriptor,
            .truncatedKeyframeHeader, .truncatedKeyframeHeader, .truncatedKeyframeHeader, .truncatedKeyframeHeader,
            .truncatedKeyframeHeader, .truncatedKeyframeHeader, .truncatedKeyframeHeader, .truncatedKeyframeHeader,
            .truncatedKeyframeHeader, nil,
        ]
        #expect((0...full.count).map { vp8ParseError(Array(full.prefix($0))) } == expected)
        #expect(try parseVP8(full).frameWidth == 640)
        #expect(try parseVP8(full).frameHeight == 360)
        // The 7-bit form is one byte shorter.
        #expect(vp8ParseError([0x80, 0x80]) == .truncatedPictureID)
        #expect(vp8ParseError([0x80, 0x80, 0x05]) == .noPayloadAfterDescriptor)
    }

    @Test func badStartCode() {
        #expect(vp8ParseError([0x10, 0x00, 0x00, 0x00, 0x9D, 0x01, 0x2B, 0x80, 0x02, 0x68, 0x01]) == .badKeyframeStartCode)
        #expect(vp8ParseError([0x10, 0x00, 0x00, 0x00, 0x9C, 0x01, 0x2A, 0x80, 0x02, 0x68, 0x01]) == .badKeyframeStartCode)
    }

    @Test func nullBufferIsEmpty() {
        #expect(throws: VP8PayloadDescriptor.ParseError.empty) { try VP8PayloadDescriptor(UnsafeRawBufferPointer(start: nil, count: 0)) }
    }
}
