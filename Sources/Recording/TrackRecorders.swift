/// Per-track recorders: RTP packets in (as they arrive), file bytes out. Pure: the caller passes
/// time and writes the bytes where it likes (off the media loop). Each keeps its track's timeline
/// whole: gaps (loss, DTX, mute) become silence or simply time, and a publisher that restarts
/// with a new SSRC continues where the wall clock says it should.

/// One RTP packet's fields a recorder needs, with its payload copied out of the receive buffer.
public struct RecordedPacket: Sendable {
    public var ssrc: UInt32
    public var sequence: UInt16
    public var timestamp: UInt32
    public var marker: Bool
    public var payload: [UInt8]
    /// Monotonic nanoseconds.
    public var arrival: UInt64

    public init(ssrc: UInt32, sequence: UInt16, timestamp: UInt32, marker: Bool, payload: [UInt8], arrival: UInt64) {
        self.ssrc = ssrc
        self.sequence = sequence
        self.timestamp = timestamp
        self.marker = marker
        self.payload = payload
        self.arrival = arrival
    }
}

/// Opus silence: TOC-only packets (a zero-length CELT frame decodes as silence/concealment) of
/// 20, 10, 5 and 2.5 ms.
enum OpusSilence {
    static let packets: [(samples: Int, packet: [UInt8])] = [(960, [0xF8]), (480, [0xF0]), (240, [0xE8]), (120, [0xE0])]

    /// Packets covering `samples` (rounded down to 2.5 ms).
    static func covering(_ samples: Int) -> [[UInt8]] {
        var left = samples
        var out: [[UInt8]] = []
        for (size, packet) in packets {
            while left >= size {
                out.append(packet)
                left -= size
            }
        }
        return out
    }
}

public struct OpusTrackRecorder: Sendable {
    private var jitter: JitterBuffer<RecordedPacket>
    private var writer: OggOpusWriter
    private var output: [UInt8] = []
    private var ssrc: UInt32?
    private var nextTimestamp: UInt32?
    private var lastArrival: UInt64?
    /// When the first packet arrived: where this track starts on the recording's timeline.
    public private(set) var firstArrival: UInt64?
    /// The longest gap filled at once; a longer one (the publisher was away) is filled up to it.
    public let maxGapSamples: Int

    public init(serial: UInt32, maxWaitNanoseconds: UInt64 = 150_000_000, maxGapSamples: Int = 48_000 * 3600) {
        jitter = JitterBuffer(maxWaitNanoseconds: maxWaitNanoseconds)
        writer = OggOpusWriter(serial: serial)
        self.maxGapSamples = maxGapSamples
        for page in writer.headerPages() { output += page.bytes }
    }

    public var samplesWritten: Int64 { writer.samplesWritten }
    public var durationMs: Double { Double(writer.samplesWritten) / 48 }
    public var lostPackets: Int { jitter.lostTotal }

    public mutating func receive(_ packet: RecordedPacket) {
        if firstArrival == nil { firstArrival = packet.arrival }
        if let ssrc, ssrc != packet.ssrc {
            // A new stream: finish the old one, then continue after the time that passed.
            release(jitter.drain())
            if let lastArrival, packet.arrival > lastArrival {
                fill(Int((packet.arrival - lastArrival) / 1_000_000) * 48 - 960)
            }
            nextTimestamp = nil
            jitter.reset()
        }
        ssrc = packet.ssrc
        lastArrival = packet.arrival
        jitter.insert(sequence: packet.sequence, timestamp: packet.timestamp, packet: packet, arrival: packet.arrival)
    }

    /// Writes what the jitter buffer releases at `now`.
    public mutating func poll(now: UInt64) { release(jitter.pop(now: now)) }

    /// The bytes ready for the file, with the pending packets cut into a page so they are on
    /// disk if the server dies (called every second or so).
    public mutating func takeOutput(now: UInt64) -> [UInt8] {
        poll(now: now)
        if let page = writer.flush() { output += page.bytes }
        defer { output.removeAll(keepingCapacity: true) }
        return output
    }

    /// The last bytes: everything held, then the end-of-stream page.
    public mutating func finish() -> [UInt8] {
        release(jitter.drain())
        if let page = writer.finish() { output += page.bytes }
        defer { output.removeAll() }
        return output
    }

    private mutating func release(_ outputs: [JitterBuffer<RecordedPacket>.Output]) {
        for case .packet(let entry) in outputs {
            let packet = entry.packet
            guard let samples = opusPacketSamples(packet.payload) else { continue }
            if let expected = nextTimestamp {
                let gap = Int(Int32(bitPattern: packet.timestamp &- expected))
                if gap < 0 { continue }  // overlaps what is written: a duplicate or a late copy
                if gap > 0 { fill(gap) }
            }
            append(packet.payload)
            nextTimestamp = packet.timestamp &+ UInt32(samples)
        }
    }

    private mutating func fill(_ samples: Int) {
        guard samples > 0 else { return }
        for packet in OpusSilence.covering(min(samples, maxGapSamples)) { append(packet) }
    }

    private mutating func append(_ packet: [UInt8]) {
        for page in writer.append(packet) { output += page.bytes }
    }
}

public struct VideoTrackRecorder: Sendable {
    public enum Codec: Sendable { case vp8, h264 }

    public let codec: Codec
    private var jitter: JitterBuffer<RecordedPacket>
    private var vp8 = VP8Depacketizer()
    private var h264 = H264Depacketizer()
    private var writer: MatroskaWriter?
    private var output: [UInt8] = []
    private var ssrc: UInt32?
    /// Milliseconds on this track's timeline where the current SSRC's first timestamp falls.
    private var baseMs: Int64 = 0
    private var baseTimestamp: UInt32?
    private var lastMs: Int64 = 0
    private var lastArrival: UInt64?
    private var afterLoss = false
    public private(set) var firstArrival: UInt64?
    /// True until a keyframe starts the file, and after a loss broke a frame: ask for a PLI.
    public private(set) var needsKeyframe = true
    public private(set) var framesWritten = 0

    public init(codec: Codec, maxWaitNanoseconds: UInt64 = 300_000_000) {
        self.codec = codec
        jitter = JitterBuffer(maxWaitNanoseconds: maxWaitNanoseconds)
    }

    public var durationMs: Double { Double(lastMs) + 33 }

    public mutating func receive(_ packet: RecordedPacket) {
        if firstArrival == nil { firstArrival = packet.arrival }
        if let ssrc, ssrc != packet.ssrc {
            release(jitter.drain())
            let elapsed = lastArrival.map { packet.arrival > $0 ? Int64((packet.arrival - $0) / 1_000_000) : 0 } ?? 0
            baseMs = lastMs + max(1, elapsed)
            baseTimestamp = nil
            jitter.reset()
            needsKeyframe = true
        }
        ssrc = packet.ssrc
        lastArrival = packet.arrival
        jitter.insert(sequence: packet.sequence, timestamp: packet.timestamp, packet: packet, arrival: packet.arrival)
    }

    public mutating func poll(now: UInt64) { release(jitter.pop(now: now)) }

    /// Bytes ready for the file; the open cluster is closed so it is on disk (every second or so).
    public mutating func takeOutput(now: UInt64) -> [UInt8] {
        poll(now: now)
        if writer != nil { output += writer!.closeCluster() }
        defer { output.removeAll(keepingCapacity: true) }
        return output
    }

    /// The last bytes, and the patches (segment size, duration, seek head) for bytes already
    /// written; nil writer output when no keyframe ever came.
    public mutating func finish() -> (tail: [UInt8], patches: [MatroskaWriter.Patch]) {
        release(jitter.drain())
        guard writer != nil else {
            defer { output.removeAll() }
            return (output, [])
        }
        let (tail, patches) = writer!.finish(durationMs: durationMs)
        defer { output.removeAll() }
        return (output + tail, patches)
    }

    private mutating func release(_ outputs: [JitterBuffer<RecordedPacket>.Output]) {
        for item in outputs {
            switch item {
            case .lost:
                afterLoss = true
                if framesWritten > 0 { needsKeyframe = true }
            case .packet(let entry):
                let packet = entry.packet
                let frame: VideoFrame?
                switch codec {
                case .vp8: frame = vp8.push(payload: packet.payload[...], timestamp: packet.timestamp, marker: packet.marker, afterLoss: afterLoss)
                case .h264: frame = h264.push(payload: packet.payload[...], timestamp: packet.timestamp, marker: packet.marker, afterLoss: afterLoss)
                }
                afterLoss = false
                if let frame { write(frame, arrival: packet.arrival) }
            }
        }
    }

    private mutating func write(_ frame: VideoFrame, arrival: UInt64) {
        if writer == nil {
            guard frame.keyframe else { return }
            switch codec {
            case .vp8:
                writer = MatroskaWriter(codec: .vp8)
            case .h264:
                guard let avcC = h264.avcC else { return }
                writer = MatroskaWriter(codec: .h264(avcC: avcC))
            }
            output += writer!.header(width: frame.width, height: frame.height)
            // The file's time starts where the track did, so a late first keyframe keeps its place.
            if let firstArrival, baseTimestamp == nil, arrival > firstArrival {
                baseMs += Int64((arrival - firstArrival) / 1_000_000)
            }
        }
        if needsKeyframe, !frame.keyframe, framesWritten > 0 {
            // Frames after a broken one reference it; they are skipped until the next keyframe.
            return
        }
        if frame.keyframe { needsKeyframe = false }
        if baseTimestamp == nil { baseTimestamp = frame.timestamp }
        let ms = baseMs + Int64(Int32(bitPattern: frame.timestamp &- baseTimestamp!)) / 90
        guard ms >= lastMs || framesWritten == 0 else { return }
        lastMs = ms
        output += writer!.append(frame: frame.data, timestamp: ms, keyframe: frame.keyframe)
        framesWritten += 1
    }

    /// A frame was lost beyond repair: wait for (and request) a keyframe.
    public mutating func noteBrokenFrame() { needsKeyframe = true }
}
