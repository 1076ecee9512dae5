/// Ogg framing (RFC 3533): packets cut into 255-byte lacing segments and gathered into pages,
/// each with a granule position and a CRC. Pure: bytes in, bytes out.
public struct OggPage: Sendable, Equatable {
    public struct Flags: OptionSet, Sendable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// The page starts with the rest of a packet begun on an earlier page.
        public static let continued = Flags(rawValue: 0x01)
        public static let beginningOfStream = Flags(rawValue: 0x02)
        public static let endOfStream = Flags(rawValue: 0x04)
    }

    public var flags: Flags
    /// -1 (all ones) when no packet ends on this page.
    public var granulePosition: Int64
    public var serial: UInt32
    public var sequence: UInt32
    public var segments: [UInt8]
    public var body: [UInt8]

    /// The page as written to disk, CRC included.
    public var bytes: [UInt8] {
        var out: [UInt8] = Array("OggS".utf8)
        out.reserveCapacity(27 + segments.count + body.count)
        out.append(0)  // version
        out.append(flags.rawValue)
        appendLittleEndian(UInt64(bitPattern: granulePosition), bytes: 8, to: &out)
        appendLittleEndian(UInt64(serial), bytes: 4, to: &out)
        appendLittleEndian(UInt64(sequence), bytes: 4, to: &out)
        appendLittleEndian(0, bytes: 4, to: &out)  // CRC, filled below
        out.append(UInt8(segments.count))
        out += segments
        out += body
        let crc = OggCRC.checksum(out)
        out[22] = UInt8(crc & 0xFF)
        out[23] = UInt8((crc >> 8) & 0xFF)
        out[24] = UInt8((crc >> 16) & 0xFF)
        out[25] = UInt8(crc >> 24)
        return out
    }

    /// Reads the page at the start of `bytes`, checking its CRC; nil when there is none whole.
    public static func parse(_ bytes: ArraySlice<UInt8>) -> (page: OggPage, length: Int)? {
        let base = bytes.startIndex
        guard bytes.count >= 27, Array(bytes[base..<base + 4]) == Array("OggS".utf8), bytes[base + 4] == 0 else { return nil }
        func little(_ offset: Int, _ count: Int) -> UInt64 {
            (0..<count).reduce(UInt64(0)) { $0 | UInt64(bytes[base + offset + $1]) << (8 * UInt64($1)) }
        }
        let segmentCount = Int(bytes[base + 26])
        guard bytes.count >= 27 + segmentCount else { return nil }
        let segments = Array(bytes[base + 27..<base + 27 + segmentCount])
        let bodyLength = segments.reduce(0) { $0 + Int($1) }
        let total = 27 + segmentCount + bodyLength
        guard bytes.count >= total else { return nil }
        let page = OggPage(
            flags: Flags(rawValue: bytes[base + 5]), granulePosition: Int64(bitPattern: little(6, 8)), serial: UInt32(little(14, 4)),
            sequence: UInt32(little(18, 4)), segments: segments, body: Array(bytes[base + 27 + segmentCount..<base + total]))
        var zeroed = Array(bytes[base..<base + total])
        for index in 22..<26 { zeroed[index] = 0 }
        guard OggCRC.checksum(zeroed) == UInt32(little(22, 4)) else { return nil }
        return (page, total)
    }

    /// The packets that end on this page (a packet continued from an earlier page is not split out).
    public var packetLengths: [Int] {
        var lengths: [Int] = []
        var current = 0
        for segment in segments {
            current += Int(segment)
            if segment < 255 {
                lengths.append(current)
                current = 0
            }
        }
        return lengths
    }
}

func appendLittleEndian(_ value: UInt64, bytes: Int, to out: inout [UInt8]) {
    for index in 0..<bytes { out.append(UInt8(truncatingIfNeeded: value >> (8 * UInt64(index)))) }
}

/// Ogg's CRC-32: polynomial 0x04C11DB7, not reflected, initial value 0, no final XOR.
public enum OggCRC {
    static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index) << 24
        for _ in 0..<8 { value = value & 0x8000_0000 != 0 ? (value << 1) ^ 0x04C1_1DB7 : value << 1 }
        return value
    }

    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc: UInt32 = 0
        for byte in bytes { crc = (crc << 8) ^ table[Int(((crc >> 24) ^ UInt32(byte)) & 0xFF)] }
        return crc
    }
}

/// Gathers packets into pages for one logical stream. A page is cut when it would pass
/// `maxSegments` segments, or when the caller flushes (so pages go to disk every second or so).
public struct OggStreamPager: Sendable {
    public let serial: UInt32
    private var sequence: UInt32 = 0
    private var segments: [UInt8] = []
    private var body: [UInt8] = []
    private var granule: Int64 = -1
    private var continued = false
    private var started = false

    public init(serial: UInt32) { self.serial = serial }

    public var hasPendingData: Bool { !segments.isEmpty }

    /// Adds one packet ending at `granulePosition`; returns pages that filled up.
    public mutating func append(_ packet: some Collection<UInt8>, granulePosition: Int64) -> [OggPage] {
        var pages: [OggPage] = []
        var remaining = packet.count
        var index = packet.startIndex
        while true {
            let take = min(remaining, 255)
            segments.append(UInt8(take))
            body.append(contentsOf: packet[index..<packet.index(index, offsetBy: take)])
            index = packet.index(index, offsetBy: take)
            remaining -= take
            let packetEnds = take < 255
            if packetEnds { granule = granulePosition }
            if segments.count == 255 {
                pages.append(cut(endOfStream: false))
                if !packetEnds { continued = true }
            }
            if packetEnds { break }
        }
        return pages
    }

    /// The pending segments as a page (nil when there are none), e.g. every second, or with EOS last.
    public mutating func flush(endOfStream: Bool = false) -> OggPage? {
        guard hasPendingData || endOfStream else { return nil }
        return cut(endOfStream: endOfStream)
    }

    private mutating func cut(endOfStream: Bool) -> OggPage {
        var flags: OggPage.Flags = []
        if !started { flags.insert(.beginningOfStream) }
        if continued { flags.insert(.continued) }
        if endOfStream { flags.insert(.endOfStream) }
        let page = OggPage(flags: flags, granulePosition: granule, serial: serial, sequence: sequence, segments: segments, body: body)
        started = true
        continued = false
        sequence += 1
        segments.removeAll(keepingCapacity: true)
        body.removeAll(keepingCapacity: true)
        granule = -1
        return page
    }
}
