/// Reassembles video frames from RTP payloads: VP8 (RFC 7741) and H.264 (RFC 6184). Pure; a
/// frame is complete at the RTP marker bit, and a frame with a hole is dropped (the recorder then
/// waits for the next keyframe, which it asks for with a PLI).

public struct VideoFrame: Sendable, Equatable {
    public var data: [UInt8]
    public var timestamp: UInt32
    public var keyframe: Bool
    /// Picture size, when the frame says (VP8 keyframes).
    public var width = 0
    public var height = 0
}

public struct VP8Depacketizer: Sendable {
    private var frame: [UInt8] = []
    private var timestamp: UInt32?
    private var broken = false

    public init() {}

    /// Skips the payload descriptor; nil when it is malformed.
    static func descriptorLength(_ payload: ArraySlice<UInt8>) -> (length: Int, startOfPartition: Bool)? {
        guard let first = payload.first else { return nil }
        var length = 1
        let base = payload.startIndex
        if first & 0x80 != 0 {
            guard payload.count > length else { return nil }
            let extensions = payload[base + 1]
            length += 1
            if extensions & 0x80 != 0 {  // PictureID
                guard payload.count > length else { return nil }
                length += payload[base + length] & 0x80 != 0 ? 2 : 1
            }
            if extensions & 0x40 != 0 { length += 1 }  // TL0PICIDX
            if extensions & 0x30 != 0 { length += 1 }  // TID/KEYIDX
        }
        guard payload.count > length else { return nil }
        return (length, first & 0x10 != 0 && first & 0x07 == 0)
    }

    /// Adds one packet's payload; returns the frame it completes.
    public mutating func push(payload: ArraySlice<UInt8>, timestamp: UInt32, marker: Bool, afterLoss: Bool) -> VideoFrame? {
        guard let (length, start) = Self.descriptorLength(payload) else {
            broken = true
            return nil
        }
        if start || self.timestamp != timestamp {
            frame.removeAll(keepingCapacity: true)
            self.timestamp = timestamp
            broken = !start
        } else if afterLoss {
            broken = true
        }
        frame += payload.dropFirst(length)
        guard marker else { return nil }
        defer {
            frame.removeAll(keepingCapacity: true)
            self.timestamp = nil
        }
        guard !broken, frame.count >= 3 else { return nil }
        let keyframe = frame[0] & 0x01 == 0
        var result = VideoFrame(data: frame, timestamp: timestamp, keyframe: keyframe)
        if keyframe, frame.count >= 10, frame[3] == 0x9D, frame[4] == 0x01, frame[5] == 0x2A {
            result.width = Int(UInt16(frame[6]) | UInt16(frame[7]) << 8) & 0x3FFF
            result.height = Int(UInt16(frame[8]) | UInt16(frame[9]) << 8) & 0x3FFF
        }
        return result
    }
}

public struct H264Depacketizer: Sendable {
    private var nals: [[UInt8]] = []
    private var fragment: [UInt8]?
    private var timestamp: UInt32?
    private var broken = false
    /// The latest SPS and PPS, for the avcC record.
    public private(set) var sps: [UInt8]?
    public private(set) var pps: [UInt8]?

    public init() {}

    /// Adds one packet's payload; returns the access unit it completes, as 4-byte length-prefixed NAL units.
    public mutating func push(payload: ArraySlice<UInt8>, timestamp: UInt32, marker: Bool, afterLoss: Bool) -> VideoFrame? {
        if self.timestamp != timestamp {
            nals.removeAll()
            fragment = nil
            broken = false
            self.timestamp = timestamp
        }
        if afterLoss { broken = true }
        guard let header = payload.first else { return nil }
        let base = payload.startIndex
        switch header & 0x1F {
        case 1...23:
            add(Array(payload))
        case 24:  // STAP-A
            var offset = base + 1
            while offset + 2 <= payload.endIndex {
                let size = Int(payload[offset]) << 8 | Int(payload[offset + 1])
                offset += 2
                guard size > 0, offset + size <= payload.endIndex else { broken = true; break }
                add(Array(payload[offset..<offset + size]))
                offset += size
            }
        case 28:  // FU-A
            guard payload.count >= 2 else { broken = true; break }
            let fu = payload[base + 1]
            if fu & 0x80 != 0 {
                fragment = [(header & 0xE0) | (fu & 0x1F)] + payload.dropFirst(2)
            } else if fragment != nil {
                fragment! += payload.dropFirst(2)
            } else {
                broken = true
            }
            if fu & 0x40 != 0, let whole = fragment {
                add(whole)
                fragment = nil
            }
        default:
            broken = true
        }
        guard marker else { return nil }
        defer {
            nals.removeAll()
            fragment = nil
            self.timestamp = nil
        }
        guard !broken, !nals.isEmpty else { return nil }
        var data: [UInt8] = []
        var keyframe = false
        for nal in nals {
            if nal[0] & 0x1F == 5 { keyframe = true }
            data += [UInt8(nal.count >> 24), UInt8((nal.count >> 16) & 0xFF), UInt8((nal.count >> 8) & 0xFF), UInt8(nal.count & 0xFF)] + nal
        }
        return VideoFrame(data: data, timestamp: timestamp, keyframe: keyframe)
    }

    private mutating func add(_ nal: [UInt8]) {
        guard let first = nal.first else { return }
        switch first & 0x1F {
        case 7: sps = nal
        case 8: pps = nal
        default: break
        }
        nals.append(nal)
    }

    /// The AVCDecoderConfigurationRecord (ISO 14496-15) for Matroska's CodecPrivate.
    public var avcC: [UInt8]? {
        guard let sps, let pps, sps.count >= 4 else { return nil }
        return [1, sps[1], sps[2], sps[3], 0xFF, 0xE1, UInt8(sps.count >> 8), UInt8(sps.count & 0xFF)] + sps
            + [1, UInt8(pps.count >> 8), UInt8(pps.count & 0xFF)] + pps
    }
}
