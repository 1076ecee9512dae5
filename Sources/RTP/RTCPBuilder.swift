/// Writes RTCP packets into caller-provided buffers (the send path reuses one buffer) and,
/// for tests and control paths, into fresh `[UInt8]`s.
///
/// Every writer returns the number of bytes written, or nil when the buffer is too small or
/// the input cannot be encoded (e.g. more than 31 report blocks); nothing useful is left in the
/// buffer on nil. Concatenate results to form a compound packet.
public enum RTCPBuilder {
    static let maxCount = 31

    // MARK: - Reports

    public static func senderReport(
        ssrc: UInt32, ntp: NTPTimestamp, rtpTimestamp: UInt32, packetCount: UInt32, octetCount: UInt32,
        reportBlocks: some Collection<ReportBlock>, into buffer: UnsafeMutableRawBufferPointer
    ) -> Int? {
        let blockCount = reportBlocks.count
        guard blockCount <= maxCount else { return nil }
        let length = RTCPPacket.headerLength + 24 + blockCount * ReportBlock.length
        guard length <= buffer.count else { return nil }
        writeHeader(count: blockCount, type: .senderReport, length: length, into: buffer)
        buffer.setUInt32(ssrc, at: 4)
        buffer.setUInt64(ntp.rawValue, at: 8)
        buffer.setUInt32(rtpTimestamp, at: 16)
        buffer.setUInt32(packetCount, at: 20)
        buffer.setUInt32(octetCount, at: 24)
        var offset = 28
        for block in reportBlocks {
            block.write(to: buffer, at: offset)
            offset += ReportBlock.length
        }
        return length
    }

    public static func receiverReport(
        ssrc: UInt32, reportBlocks: some Collection<ReportBlock>, into buffer: UnsafeMutableRawBufferPointer
    ) -> Int? {
        let blockCount = reportBlocks.count
        guard blockCount <= maxCount else { return nil }
        let length = RTCPPacket.headerLength + 4 + blockCount * ReportBlock.length
        guard length <= buffer.count else { return nil }
        writeHeader(count: blockCount, type: .receiverReport, length: length, into: buffer)
        buffer.setUInt32(ssrc, at: 4)
        var offset = 8
        for block in reportBlocks {
            block.write(to: buffer, at: offset)
            offset += ReportBlock.length
        }
        return length
    }

    /// SDES with one chunk holding only a CNAME (at most 255 bytes).
    public static func sourceDescription(
        ssrc: UInt32, cname: some Collection<UInt8>, into buffer: UnsafeMutableRawBufferPointer
    ) -> Int? {
        let textLength = cname.count
        guard textLength <= 255 else { return nil }
        // Item type + length + text + at least one terminating zero, padded to 32 bits.
        let itemsLength = (2 + textLength + 1 + 3) & ~3
        let length = RTCPPacket.headerLength + 4 + itemsLength
        guard length <= buffer.count else { return nil }
        writeHeader(count: 1, type: .sourceDescription, length: length, into: buffer)
        buffer.setUInt32(ssrc, at: 4)
        buffer.setUInt8(RTCPSourceDescription.cnameItem, at: 8)
        buffer.setUInt8(UInt8(textLength), at: 9)
        var offset = 10
        for byte in cname {
            buffer.setUInt8(byte, at: offset)
            offset += 1
        }
        buffer.zero(offset..<length)
        return length
    }

    public static func bye(ssrcs: some Collection<UInt32>, into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        guard ssrcs.count <= maxCount else { return nil }
        let length = RTCPPacket.headerLength + 4 * ssrcs.count
        guard length <= buffer.count else { return nil }
        writeHeader(count: ssrcs.count, type: .bye, length: length, into: buffer)
        var offset = 4
        for ssrc in ssrcs {
            buffer.setUInt32(ssrc, at: offset)
            offset += 4
        }
        return length
    }

    // MARK: - Feedback

    /// Generic NACK packing `lostSequenceNumbers` into pid/blp entries. Numbers given in
    /// increasing order (mod 2^16) pack tightest; any order is still encoded correctly, and
    /// duplicates of an entry's pid are folded. Nil when the list is empty or does not fit.
    public static func genericNack(
        senderSSRC: UInt32, mediaSSRC: UInt32, lostSequenceNumbers: some Sequence<UInt16>,
        into buffer: UnsafeMutableRawBufferPointer
    ) -> Int? {
        let fciStart = RTCPPacket.headerLength + feedbackHeaderLength
        guard fciStart <= buffer.count else { return nil }
        var offset = fciStart
        var current: NackEntry?
        for sequenceNumber in lostSequenceNumbers {
            if var entry = current {
                let distance = sequenceNumber &- entry.packetID
                if distance == 0 { continue }
                if distance <= 16 {
                    entry.lostBitmask |= 1 << (distance - 1)
                    current = entry
                    continue
                }
                guard offset + 4 <= buffer.count else { return nil }
                write(entry, into: buffer, at: offset)
                offset += 4
            }
            current = NackEntry(packetID: sequenceNumber, lostBitmask: 0)
        }
        guard let last = current, offset + 4 <= buffer.count else { return nil }
        write(last, into: buffer, at: offset)
        offset += 4
        guard offset / 4 - 1 <= Int(UInt16.max) else { return nil }
        writeHeader(count: Int(RTCPFeedbackFormat.genericNack), type: .transportFeedback, length: offset, into: buffer)
        buffer.setUInt32(senderSSRC, at: 4)
        buffer.setUInt32(mediaSSRC, at: 8)
        return offset
    }

    public static func pictureLossIndication(
        senderSSRC: UInt32, mediaSSRC: UInt32, into buffer: UnsafeMutableRawBufferPointer
    ) -> Int? {
        let length = RTCPPacket.headerLength + feedbackHeaderLength
        guard length <= buffer.count else { return nil }
        writeHeader(count: Int(RTCPFeedbackFormat.pictureLossIndication), type: .payloadFeedback, length: length, into: buffer)
        buffer.setUInt32(senderSSRC, at: 4)
        buffer.setUInt32(mediaSSRC, at: 8)
        return length
    }

    /// FIR; the media SSRC field is 0 as RFC 5104 requires, targets go in `entries`.
    public static func fullIntraRequest(
        senderSSRC: UInt32, entries: some Collection<FIREntry>, into buffer: UnsafeMutableRawBufferPointer
    ) -> Int? {
        let length = RTCPPacket.headerLength + feedbackHeaderLength + FIREntry.length * entries.count
        guard !entries.isEmpty, length <= buffer.count, length / 4 - 1 <= Int(UInt16.max) else { return nil }
        writeHeader(count: Int(RTCPFeedbackFormat.fullIntraRequest), type: .payloadFeedback, length: length, into: buffer)
        buffer.setUInt32(senderSSRC, at: 4)
        buffer.setUInt32(0, at: 8)
        var offset = 12
        for entry in entries {
            buffer.setUInt32(entry.ssrc, at: offset)
            buffer.setUInt8(entry.sequenceNumber, at: offset + 4)
            buffer.zero((offset + 5)..<(offset + 8))
            offset += FIREntry.length
        }
        return length
    }

    /// REMB; `bitrate` is rounded down to the nearest representable value (18-bit mantissa).
    public static func remb(
        senderSSRC: UInt32, bitrate: UInt64, ssrcs: some Collection<UInt32>, into buffer: UnsafeMutableRawBufferPointer
    ) -> Int? {
        guard ssrcs.count <= 255 else { return nil }
        let length = RTCPPacket.headerLength + feedbackHeaderLength + 8 + 4 * ssrcs.count
        guard length <= buffer.count else { return nil }
        writeHeader(count: Int(RTCPFeedbackFormat.applicationLayer), type: .payloadFeedback, length: length, into: buffer)
        buffer.setUInt32(senderSSRC, at: 4)
        buffer.setUInt32(0, at: 8)
        buffer.setUInt32(RTCPREMB.identifier, at: 12)
        buffer.setUInt8(UInt8(ssrcs.count), at: 16)
        let (exponent, mantissa) = RTCPREMB.encode(bitrate)
        buffer.setUInt24(UInt32(exponent) << 18 | mantissa, at: 17)
        var offset = 20
        for ssrc in ssrcs {
            buffer.setUInt32(ssrc, at: offset)
            offset += 4
        }
        return length
    }

    // MARK: - Array conveniences (allocate; not for the packet path)

    public static func senderReport(
        ssrc: UInt32, ntp: NTPTimestamp, rtpTimestamp: UInt32, packetCount: UInt32, octetCount: UInt32,
        reportBlocks: [ReportBlock] = []
    ) -> [UInt8]? {
        bytes(capacity: 28 + reportBlocks.count * ReportBlock.length) {
            senderReport(
                ssrc: ssrc, ntp: ntp, rtpTimestamp: rtpTimestamp, packetCount: packetCount, octetCount: octetCount,
                reportBlocks: reportBlocks, into: $0)
        }
    }

    public static func receiverReport(ssrc: UInt32, reportBlocks: [ReportBlock]) -> [UInt8]? {
        bytes(capacity: 8 + reportBlocks.count * ReportBlock.length) {
            receiverReport(ssrc: ssrc, reportBlocks: reportBlocks, into: $0)
        }
    }

    public static func sourceDescription(ssrc: UInt32, cname: String) -> [UInt8]? {
        let text = Array(cname.utf8)
        return bytes(capacity: 12 + text.count + 4) { sourceDescription(ssrc: ssrc, cname: text, into: $0) }
    }

    public static func bye(ssrcs: [UInt32]) -> [UInt8]? {
        bytes(capacity: 4 + 4 * ssrcs.count) { bye(ssrcs: ssrcs, into: $0) }
    }

    public static func genericNack(senderSSRC: UInt32, mediaSSRC: UInt32, lostSequenceNumbers: [UInt16]) -> [UInt8]? {
        bytes(capacity: 12 + 4 * lostSequenceNumbers.count) {
            genericNack(senderSSRC: senderSSRC, mediaSSRC: mediaSSRC, lostSequenceNumbers: lostSequenceNumbers, into: $0)
        }
    }

    public static func pictureLossIndication(senderSSRC: UInt32, mediaSSRC: UInt32) -> [UInt8]? {
        bytes(capacity: 12) { pictureLossIndication(senderSSRC: senderSSRC, mediaSSRC: mediaSSRC, into: $0) }
    }

    public static func fullIntraRequest(senderSSRC: UInt32, entries: [FIREntry]) -> [UInt8]? {
        bytes(capacity: 12 + FIREntry.length * entries.count) {
            fullIntraRequest(senderSSRC: senderSSRC, entries: entries, into: $0)
        }
    }

    public static func remb(senderSSRC: UInt32, bitrate: UInt64, ssrcs: [UInt32]) -> [UInt8]? {
        bytes(capacity: 20 + 4 * ssrcs.count) { remb(senderSSRC: senderSSRC, bitrate: bitrate, ssrcs: ssrcs, into: $0) }
    }

    // MARK: - Helpers

    /// Version 2, no padding, `count` in the low 5 bits, length in 32-bit words minus one.
    static func writeHeader(count: Int, type: RTCPPacketType, length: Int, into buffer: UnsafeMutableRawBufferPointer) {
        buffer.setUInt8(0x80 | UInt8(truncatingIfNeeded: count & 0x1F), at: 0)
        buffer.setUInt8(type.rawValue, at: 1)
        buffer.setUInt16(UInt16(truncatingIfNeeded: length / 4 - 1), at: 2)
    }

    static func write(_ entry: NackEntry, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) {
        buffer.setUInt16(entry.packetID, at: offset)
        buffer.setUInt16(entry.lostBitmask, at: offset + 2)
    }

    static func bytes(capacity: Int, _ write: (UnsafeMutableRawBufferPointer) -> Int?) -> [UInt8]? {
        var output = [UInt8](repeating: 0, count: capacity)
        guard let written = output.withUnsafeMutableBytes(write) else { return nil }
        output.removeLast(output.count - written)
        return output
    }
}
