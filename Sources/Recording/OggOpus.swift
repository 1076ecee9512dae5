/// Ogg Opus (RFC 7845): the ID and comment headers, packet durations from the TOC byte
/// (RFC 6716 §3.1), and a writer that turns Opus packets into pages with the right granules.

/// The samples at 48 kHz that an Opus packet decodes to; nil for a malformed packet.
public func opusPacketSamples(_ packet: some Collection<UInt8>) -> Int? {
    guard let toc = packet.first else { return nil }
    let config = Int(toc >> 3)
    let frameSamples: Int
    switch config {
    case 0...11: frameSamples = [480, 960, 1920, 2880][config % 4]  // SILK: 10, 20, 40, 60 ms
    case 12...15: frameSamples = [480, 960][config % 2]  // hybrid: 10, 20 ms
    default: frameSamples = [120, 240, 480, 960][config % 4]  // CELT: 2.5, 5, 10, 20 ms
    }
    let frames: Int
    switch toc & 0x03 {
    case 0: frames = 1
    case 1, 2: frames = 2
    default:
        guard packet.count >= 2 else { return nil }
        frames = Int(packet[packet.index(after: packet.startIndex)] & 0x3F)
        guard frames > 0 else { return nil }
    }
    let total = frames * frameSamples
    return total <= 5760 ? total : nil  // at most 120 ms
}

public enum OggOpusHeaders {
    /// OpusHead: version 1, channel count, pre-skip, the input rate (informational), gain 0, mapping 0.
    public static func head(channels: UInt8 = 2, preSkip: UInt16 = 312, inputSampleRate: UInt32 = 48_000) -> [UInt8] {
        var out = Array("OpusHead".utf8)
        out.append(1)
        out.append(channels)
        appendLittleEndian(UInt64(preSkip), bytes: 2, to: &out)
        appendLittleEndian(UInt64(inputSampleRate), bytes: 4, to: &out)
        appendLittleEndian(0, bytes: 2, to: &out)
        out.append(0)
        return out
    }

    /// OpusTags: the vendor string and `KEY=value` comments.
    public static func tags(vendor: String = "Parley", comments: [String] = []) -> [UInt8] {
        var out = Array("OpusTags".utf8)
        appendLittleEndian(UInt64(vendor.utf8.count), bytes: 4, to: &out)
        out += Array(vendor.utf8)
        appendLittleEndian(UInt64(comments.count), bytes: 4, to: &out)
        for comment in comments {
            appendLittleEndian(UInt64(comment.utf8.count), bytes: 4, to: &out)
            out += Array(comment.utf8)
        }
        return out
    }
}

/// Writes one Opus stream as Ogg pages. Granule positions count 48 kHz samples from the stream's
/// start including pre-skip, so gaps (losses, DTX, mute) are filled by the caller with packets
/// (concealment or silence) or skipped by advancing the granule with `skip(samples:)`.
public struct OggOpusWriter: Sendable {
    public let preSkip: UInt16
    private var pager: OggStreamPager
    /// Granule of the last packet written (samples including pre-skip).
    public private(set) var granulePosition: Int64
    public private(set) var packetCount = 0

    public init(serial: UInt32, channels: UInt8 = 2, preSkip: UInt16 = 312, comments: [String] = []) {
        self.preSkip = preSkip
        pager = OggStreamPager(serial: serial)
        granulePosition = Int64(preSkip)
        pendingHeaders = [OggOpusHeaders.head(channels: channels, preSkip: preSkip), OggOpusHeaders.tags(comments: comments)]
    }

    private var pendingHeaders: [[UInt8]]

    /// The two header pages (each header alone on its page, as RFC 7845 §3 requires).
    public mutating func headerPages() -> [OggPage] {
        var pages: [OggPage] = []
        for header in pendingHeaders {
            pages += pager.append(header, granulePosition: 0)
            if let page = pager.flush() { pages.append(page) }
        }
        pendingHeaders.removeAll()
        return pages
    }

    /// Adds one Opus packet; returns any pages that filled up.
    public mutating func append(_ packet: some Collection<UInt8>) -> [OggPage] {
        let samples = opusPacketSamples(packet) ?? 960
        granulePosition += Int64(samples)
        packetCount += 1
        return pager.append(packet, granulePosition: granulePosition)
    }

    /// The duration written so far, in 48 kHz samples (pre-skip excluded).
    public var samplesWritten: Int64 { granulePosition - Int64(preSkip) }

    /// Pending packets as a page, so what is written survives a crash.
    public mutating func flush() -> OggPage? { pager.flush() }

    /// The last page, flagged end of stream.
    public mutating func finish() -> OggPage? { pager.flush(endOfStream: true) }
}
