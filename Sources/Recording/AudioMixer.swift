#if canImport(Glibc)
import Glibc
#endif
import Opus

/// The room's mix: every audio track decoded, placed on the recording's timeline, summed with a
/// soft limiter instead of hard clipping, and encoded again as one Ogg Opus stream. Runs off the
/// media loop (on the recording's queue); `MixFeed` on the loop puts each track's packets in
/// order and on the timeline.
public final class AudioMixer {
    private final class Input {
        let decoder: OpusDecoder
        var nextPosition: Int64?
        init(decoder: OpusDecoder) { self.decoder = decoder }
    }

    private var inputs: [String: Input] = [:]
    /// Interleaved stereo from `bufferStart` (samples per channel since the recording started).
    private var buffer: [Float] = []
    private var bufferStart: Int64 = 0
    private var writer: OggOpusWriter
    private let encoder: OpusEncoder
    private var scratch: [Float] = []
    /// The longest gap concealed with Opus PLC; a longer one is silence.
    static let maxConcealedSamples: Int64 = 4800
    public private(set) var framesEncoded = 0

    public init(serial: UInt32) throws {
        encoder = try OpusEncoder()
        writer = OggOpusWriter(serial: serial, channels: 2, preSkip: 312)
        for page in writer.headerPages() { pendingOutput += page.bytes }
    }

    private var pendingOutput: [UInt8] = []

    public var durationMs: Double { Double(writer.samplesWritten) / 48 }

    /// Adds one packet of `track` at `position` on the timeline.
    public func add(track: String, packet: [UInt8], position: Int64) throws {
        let input: Input
        if let existing = inputs[track] {
            input = existing
        } else {
            input = Input(decoder: try OpusDecoder())
            inputs[track] = input
        }
        scratch.removeAll(keepingCapacity: true)
        if let next = input.nextPosition, position > next, position - next <= Self.maxConcealedSamples {
            input.decoder.conceal(Int((position - next) / 120 * 120), into: &scratch)
            place(scratch, at: next)
            scratch.removeAll(keepingCapacity: true)
        }
        let count = input.decoder.decode(packet, into: &scratch)
        guard count > 0 else { return }
        place(scratch, at: position)
        input.nextPosition = position + Int64(count)
    }

    /// A track left: its decoder goes (a returning track starts afresh).
    public func remove(track: String) { inputs[track] = nil }

    private func place(_ samples: [Float], at position: Int64) {
        var skip = 0
        if position < bufferStart { skip = Int(bufferStart - position) * 2 }  // too late: already encoded
        guard skip < samples.count else { return }
        let offset = Int(max(position, bufferStart) - bufferStart) * 2
        let needed = offset + samples.count - skip
        if buffer.count < needed { buffer += repeatElement(0, count: needed - buffer.count) }
        for index in skip..<samples.count { buffer[offset + index - skip] += samples[index] }
    }

    /// Encodes the timeline up to `horizon` (samples per channel); returns Ogg bytes.
    public func mix(upTo horizon: Int64) -> [UInt8] {
        let frame = Int64(OpusEncoder.frameSamples)
        var encodedFrames = 0
        while bufferStart + frame <= horizon {
            let start = encodedFrames * OpusEncoder.frameSamples * 2
            var pcm = [Float](repeating: 0, count: OpusEncoder.frameSamples * 2)
            if start < buffer.count {
                let available = min(pcm.count, buffer.count - start)
                for index in 0..<available { pcm[index] = Self.limit(buffer[start + index]) }
            }
            for page in writer.append(encoder.encode(pcm[...])) { pendingOutput += page.bytes }
            bufferStart += frame
            encodedFrames += 1
            framesEncoded += 1
        }
        buffer.removeFirst(min(buffer.count, encodedFrames * OpusEncoder.frameSamples * 2))
        if let page = writer.flush() { pendingOutput += page.bytes }
        defer { pendingOutput.removeAll(keepingCapacity: true) }
        return pendingOutput
    }

    /// Everything up to `end`, then the end-of-stream page.
    public func finish(upTo end: Int64) -> [UInt8] {
        var out = mix(upTo: end)
        if let page = writer.finish() { out += page.bytes }
        return out
    }

    /// Below 0.8 the signal passes; above, it bends smoothly towards 1 instead of clipping.
    static func limit(_ sample: Float) -> Float {
        let magnitude = abs(sample)
        guard magnitude > 0.8 else { return sample }
        let bent = 0.8 + 0.2 * Float(tanh(Double((magnitude - 0.8) / 0.2)))
        return sample < 0 ? -bent : bent
    }
}

/// One audio track's packets in order and on the mix timeline, on the media loop.
public struct MixFeed: Sendable {
    private var jitter = JitterBuffer<RecordedPacket>(maxWaitNanoseconds: 150_000_000)
    private let startedAt: UInt64
    private var ssrc: UInt32?
    private var last: (timestamp: UInt32, position: Int64)?
    private var pendingBase: Int64?

    /// `startedAt`: the recording's start on the monotonic clock.
    public init(startedAt: UInt64) { self.startedAt = startedAt }

    public mutating func receive(_ packet: RecordedPacket) {
        if ssrc != packet.ssrc {
            // A new stream (first packet, or the publisher restarted): placed by its arrival.
            ssrc = packet.ssrc
            jitter.reset()
            last = nil
            pendingBase = Int64((packet.arrival &- startedAt) / 1_000_000) * 48
        }
        jitter.insert(sequence: packet.sequence, timestamp: packet.timestamp, packet: packet, arrival: packet.arrival)
    }

    /// Packets released at `now`, with their positions.
    public mutating func take(now: UInt64) -> [(payload: [UInt8], position: Int64)] { place(jitter.pop(now: now)) }

    public mutating func drain() -> [(payload: [UInt8], position: Int64)] { place(jitter.drain()) }

    private mutating func place(_ outputs: [JitterBuffer<RecordedPacket>.Output]) -> [(payload: [UInt8], position: Int64)] {
        var placed: [(payload: [UInt8], position: Int64)] = []
        for case .packet(let entry) in outputs {
            let position: Int64
            if let last {
                position = last.position + Int64(Int32(bitPattern: entry.timestamp &- last.timestamp))
            } else {
                position = pendingBase ?? 0
            }
            last = (entry.timestamp, position)
            placed.append((entry.packet.payload, position))
        }
        return placed
    }
}
