/// One reception report block (RFC 3550 §6.4.1): what a receiver says about one source.
public struct ReportBlock: Hashable, Sendable {
    public static let length = 24

    public var ssrc: UInt32
    /// Fraction lost since the previous report, in 1/256.
    public var fractionLost: UInt8
    /// Cumulative lost packets, a 24-bit signed value on the wire.
    public var cumulativeLost: Int32
    public var extendedHighestSequence: UInt32
    /// Interarrival jitter in RTP clock units.
    public var jitter: UInt32
    /// Middle 32 bits of the NTP time of the last SR received from this source (LSR).
    public var lastSenderReport: UInt32
    /// Delay since that SR in 1/65536 s (DLSR).
    public var delaySinceLastSenderReport: UInt32

    public init(
        ssrc: UInt32, fractionLost: UInt8 = 0, cumulativeLost: Int32 = 0, extendedHighestSequence: UInt32 = 0,
        jitter: UInt32 = 0, lastSenderReport: UInt32 = 0, delaySinceLastSenderReport: UInt32 = 0
    ) {
        self.ssrc = ssrc
        self.fractionLost = fractionLost
        self.cumulativeLost = cumulativeLost
        self.extendedHighestSequence = extendedHighestSequence
        self.jitter = jitter
        self.lastSenderReport = lastSenderReport
        self.delaySinceLastSenderReport = delaySinceLastSenderReport
    }

    /// Reads a block from 24 bytes (caller checked the length).
    init(reading bytes: UnsafeRawBufferPointer, at offset: Int) {
        ssrc = bytes.uint32(at: offset)
        fractionLost = bytes.uint8(at: offset + 4)
        let lost = bytes.uint24(at: offset + 5)
        // Sign-extend the 24-bit field.
        cumulativeLost = Int32(bitPattern: lost << 8) >> 8
        extendedHighestSequence = bytes.uint32(at: offset + 8)
        jitter = bytes.uint32(at: offset + 12)
        lastSenderReport = bytes.uint32(at: offset + 16)
        delaySinceLastSenderReport = bytes.uint32(at: offset + 20)
    }

    func write(to buffer: UnsafeMutableRawBufferPointer, at offset: Int) {
        buffer.setUInt32(ssrc, at: offset)
        buffer.setUInt8(fractionLost, at: offset + 4)
        let clamped = min(max(cumulativeLost, -0x80_0000), 0x7F_FFFF)
        buffer.setUInt24(UInt32(bitPattern: clamped) & 0xFF_FFFF, at: offset + 5)
        buffer.setUInt32(extendedHighestSequence, at: offset + 8)
        buffer.setUInt32(jitter, at: offset + 12)
        buffer.setUInt32(lastSenderReport, at: offset + 16)
        buffer.setUInt32(delaySinceLastSenderReport, at: offset + 20)
    }
}

/// The report blocks of an SR or RR, decoded on access.
public struct RTCPReportBlocks: RandomAccessCollection {
    let bytes: UnsafeRawBufferPointer
    public let count: Int

    init(_ bytes: UnsafeRawBufferPointer, count: Int) {
        self.bytes = bytes
        self.count = Swift.min(Swift.max(count, 0), bytes.count / ReportBlock.length)
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }

    public subscript(position: Int) -> ReportBlock {
        precondition(position >= 0 && position < count, "RTCPReportBlocks index out of range")
        return ReportBlock(reading: bytes, at: position * ReportBlock.length)
    }
}

/// Sender report (RFC 3550 §6.4.1): maps RTP time to NTP time and carries reception reports.
public struct RTCPSenderReport {
    public let ssrc: UInt32
    public let ntp: NTPTimestamp
    public let rtpTimestamp: UInt32
    public let packetCount: UInt32
    public let octetCount: UInt32
    public let reportBlocks: RTCPReportBlocks

    /// Nil unless `packet` is an SR whose body holds the sender info and all declared blocks.
    public init?(_ packet: RTCPPacket) {
        guard packet.packetType == .senderReport else { return nil }
        let body = packet.body
        let blockCount = Int(packet.count)
        guard body.count >= 24 + blockCount * ReportBlock.length else { return nil }
        ssrc = body.uint32(at: 0)
        ntp = NTPTimestamp(rawValue: body.uint64(at: 4))
        rtpTimestamp = body.uint32(at: 12)
        packetCount = body.uint32(at: 16)
        octetCount = body.uint32(at: 20)
        reportBlocks = RTCPReportBlocks(UnsafeRawBufferPointer(rebasing: body[24...]), count: blockCount)
    }
}

/// Receiver report (RFC 3550 §6.4.2).
public struct RTCPReceiverReport {
    public let ssrc: UInt32
    public let reportBlocks: RTCPReportBlocks

    public init?(_ packet: RTCPPacket) {
        guard packet.packetType == .receiverReport else { return nil }
        let body = packet.body
        let blockCount = Int(packet.count)
        guard body.count >= 4 + blockCount * ReportBlock.length else { return nil }
        ssrc = body.uint32(at: 0)
        reportBlocks = RTCPReportBlocks(UnsafeRawBufferPointer(rebasing: body[4...]), count: blockCount)
    }
}

/// One SDES chunk: a source and its CNAME, if the chunk has one.
public struct RTCPSourceDescriptionChunk {
    public let ssrc: UInt32
    /// The CNAME item's text bytes (a view into the packet).
    public let cname: UnsafeRawBufferPointer?

    /// The CNAME decoded as UTF-8 (allocates; for logs and signalling, not the packet path).
    public var cnameString: String? { cname.map { String(decoding: $0, as: UTF8.self) } }
}

/// Source description (RFC 3550 §6.5), iterated chunk by chunk without allocating. Iteration
/// stops at the first chunk that does not fit.
public struct RTCPSourceDescription: Sequence {
    static let cnameItem: UInt8 = 1

    public let body: UnsafeRawBufferPointer
    public let chunkCount: Int

    public init?(_ packet: RTCPPacket) {
        guard packet.packetType == .sourceDescription else { return nil }
        body = packet.body
        chunkCount = Int(packet.count)
    }

    public func makeIterator() -> Iterator { Iterator(body: body, remaining: chunkCount) }

    public struct Iterator: IteratorProtocol {
        let body: UnsafeRawBufferPointer
        var remaining: Int
        var offset = 0

        public mutating func next() -> RTCPSourceDescriptionChunk? {
            guard remaining > 0, offset + 4 <= body.count else { return nil }
            remaining -= 1
            let ssrc = body.uint32(at: offset)
            var cursor = offset + 4
            var cname: UnsafeRawBufferPointer?
            // Items run until a zero type byte; the chunk then pads to a 32-bit boundary.
            while true {
                guard cursor < body.count else {
                    remaining = 0  // unterminated chunk: stop after yielding what we have
                    return RTCPSourceDescriptionChunk(ssrc: ssrc, cname: cname)
                }
                let itemType = body.uint8(at: cursor)
                if itemType == 0 { break }
                guard cursor + 2 <= body.count else {
                    remaining = 0
                    return RTCPSourceDescriptionChunk(ssrc: ssrc, cname: cname)
                }
                let length = Int(body.uint8(at: cursor + 1))
                let textRange = (cursor + 2)..<(cursor + 2 + length)
                guard textRange.upperBound <= body.count else {
                    remaining = 0
                    return RTCPSourceDescriptionChunk(ssrc: ssrc, cname: cname)
                }
                if itemType == RTCPSourceDescription.cnameItem, cname == nil { cname = body.slice(textRange) }
                cursor = textRange.upperBound
            }
            // Skip the terminating null and pad to the next multiple of four.
            offset = (cursor + 1 + 3) & ~3
            return RTCPSourceDescriptionChunk(ssrc: ssrc, cname: cname)
        }
    }
}

/// BYE (RFC 3550 §6.6): the sources leaving. The optional reason text is not decoded.
public struct RTCPBye {
    public let ssrcs: RTCPSSRCList

    public init?(_ packet: RTCPPacket) {
        guard packet.packetType == .bye else { return nil }
        let count = Int(packet.count)
        guard packet.body.count >= count * 4 else { return nil }
        ssrcs = RTCPSSRCList(packet.body, count: count)
    }
}
