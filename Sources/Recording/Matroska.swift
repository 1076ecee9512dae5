/// Matroska and WebM (EBML) writing for recordings: a header written once, then self-contained
/// clusters, so a file cut short by a crash still plays up to its last cluster; `finish` patches
/// the segment size, the duration and a seek head to the cues written at the end. Pure: it
/// produces bytes and says where earlier bytes must be overwritten.
public enum EBML {
    public static func id(_ value: UInt32) -> [UInt8] {
        if value >= 0x0100_0000 { return [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)] }
        if value >= 0x1_0000 { return [UInt8(value >> 16), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)] }
        if value >= 0x100 { return [UInt8(value >> 8), UInt8(value & 0xFF)] }
        return [UInt8(value)]
    }

    /// A size as an EBML variable-length integer in the fewest bytes (or exactly `width`).
    public static func size(_ value: UInt64, width: Int? = nil) -> [UInt8] {
        var length = width ?? 1
        if width == nil { while length < 8, value >= (UInt64(1) << (7 * UInt64(length))) - 1 { length += 1 } }
        var out = [UInt8](repeating: 0, count: length)
        for index in 0..<length { out[length - 1 - index] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(index))) }
        out[0] |= UInt8(0x80 >> (length - 1))
        return out
    }

    /// The "unknown size" marker of a live segment.
    public static let unknownSize: [UInt8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]

    public static func element(_ id: UInt32, _ body: [UInt8]) -> [UInt8] { Self.id(id) + size(UInt64(body.count)) + body }

    public static func uint(_ id: UInt32, _ value: UInt64) -> [UInt8] {
        var bytes: [UInt8] = []
        var rest = value
        repeat {
            bytes.insert(UInt8(rest & 0xFF), at: 0)
            rest >>= 8
        } while rest > 0
        return element(id, bytes)
    }

    public static func float(_ id: UInt32, _ value: Double) -> [UInt8] {
        let bits = value.bitPattern
        return element(id, (0..<8).map { UInt8(truncatingIfNeeded: bits >> (56 - 8 * UInt64($0))) })
    }

    public static func string(_ id: UInt32, _ value: String) -> [UInt8] { element(id, Array(value.utf8)) }
}

/// IDs used here (Matroska specification).
enum MatroskaID {
    static let ebml: UInt32 = 0x1A45_DFA3, ebmlVersion: UInt32 = 0x4286, ebmlReadVersion: UInt32 = 0x42F7
    static let ebmlMaxIDLength: UInt32 = 0x42F2, ebmlMaxSizeLength: UInt32 = 0x42F3, docType: UInt32 = 0x4282
    static let docTypeVersion: UInt32 = 0x4287, docTypeReadVersion: UInt32 = 0x4285
    static let segment: UInt32 = 0x1853_8067, seekHead: UInt32 = 0x114D_9B74, seek: UInt32 = 0x4DBB, seekID: UInt32 = 0x53AB
    static let seekPosition: UInt32 = 0x53AC, void: UInt32 = 0xEC
    static let info: UInt32 = 0x1549_A966, timecodeScale: UInt32 = 0x2A_D7B1, muxingApp: UInt32 = 0x4D80, writingApp: UInt32 = 0x5741
    static let duration: UInt32 = 0x4489
    static let tracks: UInt32 = 0x1654_AE6B, trackEntry: UInt32 = 0xAE, trackNumber: UInt32 = 0xD7, trackUID: UInt32 = 0x73C5
    static let trackType: UInt32 = 0x83, codecID: UInt32 = 0x86, codecPrivate: UInt32 = 0x63A2, codecDelay: UInt32 = 0x56AA
    static let seekPreRoll: UInt32 = 0x56BB, video: UInt32 = 0xE0, pixelWidth: UInt32 = 0xB0, pixelHeight: UInt32 = 0xBA
    static let audio: UInt32 = 0xE1, samplingFrequency: UInt32 = 0xB5, channels: UInt32 = 0x9F
    static let cluster: UInt32 = 0x1F43_B675, timecode: UInt32 = 0xE7, simpleBlock: UInt32 = 0xA3
    static let cues: UInt32 = 0x1C53_BB6B, cuePoint: UInt32 = 0xBB, cueTime: UInt32 = 0xB3, cueTrackPositions: UInt32 = 0xB7
    static let cueTrack: UInt32 = 0xF7, cueClusterPosition: UInt32 = 0xF1
}

/// One video (or audio) track written as Matroska clusters, times in milliseconds.
public struct MatroskaWriter: Sendable {
    public enum Codec: Sendable, Equatable {
        case vp8
        /// H.264 with its avcC record (from the first SPS and PPS).
        case h264(avcC: [UInt8])
        case opus(head: [UInt8])

        var id: String {
            switch self {
            case .vp8: "V_VP8"
            case .h264: "V_MPEG4/ISO/AVC"
            case .opus: "A_OPUS"
            }
        }

        var isVideo: Bool { if case .opus = self { false } else { true } }
    }

    /// A place in bytes already written that `finish` overwrites.
    public struct Patch: Sendable, Equatable {
        public let offset: Int
        public let bytes: [UInt8]
    }

    public let codec: Codec
    public let docType: String
    private(set) var written = 0
    private var segmentDataStart = 0
    private var durationOffset = 0
    private var seekHeadOffset = 0
    private var segmentSizeOffset = 0
    private var clusterStart: Int64?
    private var clusterBody: [UInt8] = []
    private var cues: [(time: Int64, position: Int)] = []
    public private(set) var lastTimestamp: Int64 = 0
    public private(set) var frames = 0
    static let seekHeadReserve = 64

    public init(codec: Codec) {
        self.codec = codec
        docType = codec == .vp8 || { if case .opus = codec { true } else { false } }() ? "webm" : "matroska"
    }

    /// The EBML header, segment start, seek head room, info and tracks.
    public mutating func header(width: Int = 0, height: Int = 0) -> [UInt8] {
        var out = EBML.element(MatroskaID.ebml,
            EBML.uint(MatroskaID.ebmlVersion, 1) + EBML.uint(MatroskaID.ebmlReadVersion, 1) + EBML.uint(MatroskaID.ebmlMaxIDLength, 4)
                + EBML.uint(MatroskaID.ebmlMaxSizeLength, 8) + EBML.string(MatroskaID.docType, docType)
                + EBML.uint(MatroskaID.docTypeVersion, 4) + EBML.uint(MatroskaID.docTypeReadVersion, 2))
        out += EBML.id(MatroskaID.segment)
        segmentSizeOffset = out.count
        out += EBML.unknownSize
        segmentDataStart = out.count
        // Room for the seek head, filled at finish; a Void element until then.
        seekHeadOffset = out.count
        out += Self.void(length: Self.seekHeadReserve)
        var info = EBML.uint(MatroskaID.timecodeScale, 1_000_000) + EBML.string(MatroskaID.muxingApp, "Parley")
            + EBML.string(MatroskaID.writingApp, "Parley")
        let durationInInfo = info.count
        info += EBML.float(MatroskaID.duration, 0)
        let infoElement = EBML.element(MatroskaID.info, info)
        durationOffset = out.count + (infoElement.count - info.count) + durationInInfo + 3  // past the id and size
        out += infoElement
        var entry = EBML.uint(MatroskaID.trackNumber, 1) + EBML.uint(MatroskaID.trackUID, 1)
            + EBML.uint(MatroskaID.trackType, codec.isVideo ? 1 : 2) + EBML.string(MatroskaID.codecID, codec.id)
        switch codec {
        case .vp8: break
        case .h264(let avcC): entry += EBML.element(MatroskaID.codecPrivate, avcC)
        case .opus(let head):
            entry += EBML.element(MatroskaID.codecPrivate, head) + EBML.uint(MatroskaID.codecDelay, 6_500_000)
                + EBML.uint(MatroskaID.seekPreRoll, 80_000_000)
        }
        if codec.isVideo {
            entry += EBML.element(MatroskaID.video, EBML.uint(MatroskaID.pixelWidth, UInt64(max(width, 1)))
                + EBML.uint(MatroskaID.pixelHeight, UInt64(max(height, 1))))
        } else {
            entry += EBML.element(MatroskaID.audio, EBML.float(MatroskaID.samplingFrequency, 48_000) + EBML.uint(MatroskaID.channels, 2))
        }
        out += EBML.element(MatroskaID.tracks, EBML.element(MatroskaID.trackEntry, entry))
        written = out.count
        return out
    }

    /// Adds a frame at `timestamp` ms; returns a finished cluster's bytes when this frame opens a
    /// new one (at a keyframe after a second, or when the relative time would overflow).
    public mutating func append(frame: [UInt8], timestamp: Int64, keyframe: Bool) -> [UInt8] {
        var out: [UInt8] = []
        if let start = clusterStart, timestamp - start > 30_000 || (keyframe && timestamp - start >= 1000) || timestamp < start {
            out = closeCluster()
        }
        if clusterStart == nil {
            clusterStart = timestamp
            // `written` already counts the cluster just closed: this one starts there.
            if keyframe || !codec.isVideo { cues.append((timestamp, written - segmentDataStart)) }
        }
        let relative = Int16(clamping: timestamp - clusterStart!)
        var block: [UInt8] = [0x81, UInt8(truncatingIfNeeded: UInt16(bitPattern: relative) >> 8), UInt8(truncatingIfNeeded: UInt16(bitPattern: relative))]
        block.append(keyframe ? 0x80 : 0x00)
        block += frame
        clusterBody += EBML.element(MatroskaID.simpleBlock, block)
        lastTimestamp = max(lastTimestamp, timestamp)
        frames += 1
        return out
    }

    /// The open cluster's bytes, to flush it early (every second or so for crash safety).
    public mutating func closeCluster() -> [UInt8] {
        guard let start = clusterStart else { return [] }
        let bytes = EBML.element(MatroskaID.cluster, EBML.uint(MatroskaID.timecode, UInt64(max(0, start))) + clusterBody)
        clusterStart = nil
        clusterBody.removeAll(keepingCapacity: true)
        written += bytes.count
        return bytes
    }

    /// The last cluster and the cues to append, and the patches for the segment size, the
    /// duration (`durationMs`) and the seek head.
    public mutating func finish(durationMs: Double) -> (tail: [UInt8], patches: [Patch]) {
        var tail = closeCluster()
        let cuesPosition = written - segmentDataStart
        var points: [UInt8] = []
        for cue in cues {
            points += EBML.element(MatroskaID.cuePoint, EBML.uint(MatroskaID.cueTime, UInt64(max(0, cue.time)))
                + EBML.element(MatroskaID.cueTrackPositions, EBML.uint(MatroskaID.cueTrack, 1)
                    + EBML.uint(MatroskaID.cueClusterPosition, UInt64(cue.position))))
        }
        let cuesElement = EBML.element(MatroskaID.cues, points)
        tail += cuesElement
        written += cuesElement.count
        let seek = EBML.element(MatroskaID.seek, EBML.element(MatroskaID.seekID, EBML.id(MatroskaID.cues))
            + EBML.uint(MatroskaID.seekPosition, UInt64(cuesPosition)))
        var seekHead = EBML.element(MatroskaID.seekHead, seek)
        seekHead += Self.void(length: Self.seekHeadReserve - seekHead.count)
        let durationBits = durationMs.bitPattern
        return (tail, [
            Patch(offset: segmentSizeOffset, bytes: EBML.size(UInt64(written - segmentDataStart), width: 8)),
            Patch(offset: durationOffset, bytes: (0..<8).map { UInt8(truncatingIfNeeded: durationBits >> (56 - 8 * UInt64($0))) }),
            Patch(offset: seekHeadOffset, bytes: seekHead),
        ])
    }

    /// A Void element of exactly `length` bytes (id, 8-byte size, zeros).
    static func void(length: Int) -> [UInt8] {
        precondition(length >= 9, "a Void element of this form takes at least 9 bytes")
        return EBML.id(MatroskaID.void) + EBML.size(UInt64(length - 9), width: 8) + [UInt8](repeating: 0, count: length - 9)
    }
}
