import Foundation
import NIOConcurrencyHelpers
import Opus
import ParleyClient
import ParleyProtocol
import RTP

/// What `startSyntheticMedia` sends: the tone, and the camera (one sender per simulcast layer).
public struct SyntheticMedia: Sendable {
    public var tone: ToneSender
    /// Lowest layer first; empty without video.
    public var cameras: [VideoSender]
    public var camera: VideoSender? { cameras.first }
}

/// One layer of the synthetic simulcast camera.
public struct SimulcastLayerPlan: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var bitrate: Int

    /// Quarter, half and full size of 1280x720, at bitrates a browser would pick for them.
    public static let standard = [
        SimulcastLayerPlan(width: 320, height: 180, bitrate: 150_000), SimulcastLayerPlan(width: 640, height: 360, bitrate: 500_000),
        SimulcastLayerPlan(width: 1280, height: 720, bitrate: 1_500_000),
    ]

    /// The standard sizes with every bitrate scaled so the top layer sends `topBitrate` (a
    /// benchmark compares simulcast with one stream at the same bitrate per subscriber).
    public static func standard(topBitrate: Int) -> [SimulcastLayerPlan] {
        let top = Double(standard.last!.bitrate)
        return standard.map { plan in
            var scaled = plan
            scaled.bitrate = max(30_000, Int((Double(plan.bitrate) * Double(topBitrate) / top).rounded()))
            return scaled
        }
    }
}

extension PublisherConnection {
    /// Starts the synthetic microphone (a tone at `frequency`) and, with a bitrate, camera, all
    /// paced by the transport's tick. On the loop, after `apply(answer:)`.
    @discardableResult
    public func startSyntheticMedia(
        frequency: Double, videoBitrate: Int? = nil, layers: [SimulcastLayerPlan] = SimulcastLayerPlan.standard
    ) throws -> SyntheticMedia {
        let media = try syntheticSenders(frequency: frequency, videoBitrate: videoBitrate, layers: layers)
        startSending([media.tone] + media.cameras)
        return media
    }

    /// A tone at `frequency` for the audio m-line and, with a bitrate, a synthetic camera for the
    /// video one: when the offer was simulcast, a camera per layer as `layers` sizes and paces it
    /// (the bitrate then only says there is video).
    func syntheticSenders(
        frequency: Double, videoBitrate: Int?, layers plans: [SimulcastLayerPlan] = SimulcastLayerPlan.standard
    ) throws -> SyntheticMedia {
        let tone = try ToneSender(connection: self, frequency: frequency)
        guard let videoBitrate else { return SyntheticMedia(tone: tone, cameras: []) }
        let layers = sources.filter { $0.kind == "video" && $0.layer != nil }
        guard !layers.isEmpty else { return SyntheticMedia(tone: tone, cameras: [try VideoSender(connection: self, bitrate: videoBitrate)]) }
        let cameras = try zip(layers, plans).map { source, plan in
            try VideoSender(connection: self, source: source, bitrate: plan.bitrate, width: plan.width, height: plan.height)
        }
        return SyntheticMedia(tone: tone, cameras: cameras)
    }
}

extension WHIPSession {
    /// Sends a tone at `frequency` (and with `videoBitrate` a synthetic VP8 camera) on the session.
    @discardableResult
    public func sendTone(frequency: Double, videoBitrate: Int? = nil) async throws -> SyntheticMedia {
        let publisher = self.publisher
        return try await publisher.loop.submit { try publisher.startSyntheticMedia(frequency: frequency, videoBitrate: videoBitrate) }.get()
    }
}

extension ParleyRoom {
    /// Publishes a microphone that plays a tone at `frequency` (and with `video`, a synthetic
    /// camera at 500 kbit/s, or with `simulcast` three layers of it: 320x180, 640x360 and
    /// 1280x720 at 150k, 500k and 1.5 Mbit/s, with RTX and transport-cc); returns the tracks the
    /// server made. While the room is reconnecting it waits for the connection first; a new
    /// session publishes the same again.
    @discardableResult
    public func publishTone(frequency: Double, video: Bool = false, simulcast: Bool = false) async throws -> [TrackInfo] {
        try await publish(video: video, simulcast: simulcast) { connection in
            let media = try connection.syntheticSenders(frequency: frequency, videoBitrate: video ? 500_000 : nil)
            return [media.tone] + media.cameras
        }
    }
}

/// A synthetic microphone: a sine at `frequency` encoded with libopus into 20 ms packets, sent
/// in real time on the publisher's tick, each with abs-send-time and abs-capture-time (the wall
/// clock at sending, which the SFU forwards untouched: receivers measure one-way delay).
public final class ToneSender: MediaSender, @unchecked Sendable {
    private let frames: [[UInt8]]
    private var nextFrame = 0
    private let source: PublisherConnection.Source
    private let transport: ClientTransport
    public let frequency: Double
    private var sequence = UInt16.random(in: 0...UInt16.max)
    private var timestamp = UInt32.random(in: 0...UInt32.max)
    private var nextSendAt: UInt64 = 0
    public private(set) var packetsSent = 0
    /// Each payload as it is sent (the load tester notes send times for servers that drop
    /// abs-capture-time).
    public var onSent: ((ArraySlice<UInt8>) -> Void)?

    public init(connection: PublisherConnection, frequency: Double) throws {
        guard let source = connection.sources.first(where: { $0.kind == "audio" }) else {
            throw SignalingClientError.connectFailed("the offer has no audio m-line")
        }
        frames = try EncodedTone.oneSecond(of: frequency)
        self.source = source
        transport = connection.transport
        self.frequency = frequency
    }

    /// Sends the packets that are due at `now` (call on the transport's loop, e.g. from its tick).
    public func sendDue(now: UInt64) {
        guard transport.isConnected else { return }
        if nextSendAt == 0 { nextSendAt = now }
        var burst = 0
        while now >= nextSendAt, burst < 10 {
            sendOne(now: now)
            nextSendAt += 20_000_000
            burst += 1
        }
        if now > nextSendAt + 200_000_000 { nextSendAt = now }  // fell far behind: do not catch up in a burst
    }

    private func sendOne(now: UInt64) {
        let payload = frames[nextFrame]
        nextFrame = (nextFrame + 1) % frames.count
        let bytes = SyntheticRTP.header(
            payloadType: source.payloadType, sequence: sequence, timestamp: timestamp, ssrc: source.ssrc, marker: false, now: now) + payload
        bytes.withUnsafeBytes { _ = transport.sendRTP($0) }
        onSent?(payload[...])
        sequence &+= 1
        timestamp &+= UInt32(OpusEncoder.frameSamples)
        packetsSent += 1
    }
}

/// One second of a tone, encoded with libopus once per frequency and shared by every sender of
/// it, so a load test's publishers do not spend their CPU in the encoder. A whole number of Hz
/// fits whole cycles into the second, so the loop is seamless.
enum EncodedTone {
    private static let cache = NIOLockedValueBox<[Double: [[UInt8]]]>([:])

    static func oneSecond(of frequency: Double) throws -> [[UInt8]] {
        if let known = cache.withLockedValue({ $0[frequency] }) { return known }
        let encoder = try OpusEncoder()
        var phase = 0.0
        var frames: [[UInt8]] = []
        var pcm = [Float](repeating: 0, count: OpusEncoder.frameSamples * 2)
        for _ in 0..<(48_000 / OpusEncoder.frameSamples) {
            for index in 0..<OpusEncoder.frameSamples {
                let sample = Float(0.3 * sin(phase))
                pcm[2 * index] = sample
                pcm[2 * index + 1] = sample
                phase += 2 * Double.pi * frequency / 48_000
            }
            frames.append(encoder.encode(pcm[...]))
        }
        cache.withLockedValue { $0[frequency] = frames }
        return frames
    }
}

/// RTP headers of the synthetic senders: abs-send-time and abs-capture-time (the wall clock at
/// sending, forwarded untouched by the SFU, so receivers measure one-way delay).
enum SyntheticRTP {
    static func header(payloadType: UInt8, sequence: UInt16, timestamp: UInt32, ssrc: UInt32, marker: Bool, now: UInt64) -> [UInt8] {
        var header: [UInt8] = [0x90, payloadType | (marker ? 0x80 : 0), UInt8(sequence >> 8), UInt8(sequence & 0xFF)]
        header += [UInt8(timestamp >> 24), UInt8((timestamp >> 16) & 0xFF), UInt8((timestamp >> 8) & 0xFF), UInt8(timestamp & 0xFF)]
        header += [UInt8(ssrc >> 24), UInt8((ssrc >> 16) & 0xFF), UInt8((ssrc >> 8) & 0xFF), UInt8(ssrc & 0xFF)]
        // Only the value modulo 64 s survives, so a host up for hours does not overflow it.
        let absSendTime = AbsSendTime(nanoseconds: Int64(truncatingIfNeeded: now)).rawValue
        let capture = NTPTimestamp(unixNanoseconds: Int64(Date().timeIntervalSince1970 * 1e9)).rawValue
        header += [0xBE, 0xDE, 0x00, 0x04, (PublisherConnection.absSendTimeID << 4) | 2]
        header += [UInt8(absSendTime >> 16), UInt8((absSendTime >> 8) & 0xFF), UInt8(absSendTime & 0xFF)]
        header.append((PublisherConnection.absCaptureTimeID << 4) | 7)
        header += (0..<8).map { UInt8(truncatingIfNeeded: capture >> (56 - 8 * UInt64($0))) }
        header += [0, 0, 0]  // padding to the 4-word extension length
        return header
    }
}

/// A synthetic camera: real VP8 frames (`SyntheticVP8Camera`: a moving square, each frame padded
/// to its share of `bitrate`) at `fps`, packetized per RFC 7741 with a picture id. A PLI or FIR from
/// the server makes the next frame a keyframe. A simulcast layer's camera sends nothing while the
/// server has the layer paused (`publisher.layers`), and starts again with a keyframe.
public final class VideoSender: MediaSender, @unchecked Sendable {
    private let source: PublisherConnection.Source
    private let transport: ClientTransport
    /// Weak: the connection's transport holds this sender (its tick).
    private weak var connection: PublisherConnection?
    public let bitrate: Int
    public let fps: Int
    private var camera: SyntheticVP8Camera
    private var sequence = UInt16.random(in: 0...UInt16.max)
    private var timestamp = UInt32.random(in: 0...UInt32.max)
    private var pictureID = UInt16.random(in: 0...0x7FFF)
    private var nextFrameAt: UInt64 = 0
    private var keyframeWanted = true
    private var frames = 0
    public private(set) var keyframesSent = 0
    public private(set) var packetsSent = 0
    /// Frames not sent because the layer was paused.
    public private(set) var framesSkippedWhilePaused = 0
    public var width: Int { camera.width }
    public var height: Int { camera.height }
    static let maxPayload = 1100

    /// Sends on `source` (by default the offer's first video source) pictures of `width` x `height`.
    public init(
        connection: PublisherConnection, source: PublisherConnection.Source? = nil, bitrate: Int = 500_000, fps: Int = 15,
        width: Int = 320, height: Int = 240
    ) throws {
        guard let source = source ?? connection.sources.first(where: { $0.kind == "video" }) else {
            throw SignalingClientError.connectFailed("the offer has no video m-line")
        }
        self.source = source
        transport = connection.transport
        self.connection = connection
        self.bitrate = bitrate
        self.fps = fps
        camera = SyntheticVP8Camera(width: width, height: height, bitrate: bitrate, fps: fps)
        let ssrc = source.ssrc
        let previous = transport.onRTCP
        transport.onRTCP = { [weak self] compound, now in
            previous?(compound, now)
            var iterator = RTCPCompoundIterator(compound)
            while let packet = iterator.next() {
                if let pli = RTCPPictureLossIndication(packet), pli.mediaSSRC == ssrc { self?.keyframeWanted = true }
                if let fir = RTCPFullIntraRequest(packet), fir.entries.contains(where: { $0.ssrc == ssrc }) { self?.keyframeWanted = true }
            }
        }
    }

    public func sendDue(now: UInt64) {
        guard transport.isConnected else { return }
        let interval = 1_000_000_000 / UInt64(fps)
        if nextFrameAt == 0 { nextFrameAt = now }
        guard now >= nextFrameAt else { return }
        nextFrameAt = max(nextFrameAt + interval, now - interval)
        if let layer = source.layer, connection?.pausedLayers.contains(layer) == true {
            // The next frame sent cannot refer to frames the server never got.
            keyframeWanted = true
            framesSkippedWhilePaused += 1
            timestamp &+= 90_000 / UInt32(fps)
            return
        }
        let frame = camera.nextFrame(keyframe: keyframeWanted || frames % (fps * 10) == 0)
        keyframeWanted = false
        if frame.isKeyframe { keyframesSent += 1 }
        let size = frame.bytes.count
        var offset = 0
        while offset < size {
            let chunk = min(Self.maxPayload, size - offset)
            let last = offset + chunk == size
            // Payload descriptor: X, S on the first packet, a 15-bit picture id.
            let descriptor: [UInt8] = [offset == 0 ? 0x90 : 0x80, 0x80, UInt8(0x80 | (pictureID >> 8)), UInt8(pictureID & 0xFF)]
            let bytes = SyntheticRTP.header(
                payloadType: source.payloadType, sequence: sequence, timestamp: timestamp, ssrc: source.ssrc, marker: last, now: now)
                + descriptor + frame.bytes[offset..<(offset + chunk)]
            bytes.withUnsafeBytes { _ = transport.sendRTP($0) }
            sequence &+= 1
            packetsSent += 1
            offset += chunk
        }
        pictureID = (pictureID + 1) & 0x7FFF
        timestamp &+= 90_000 / UInt32(fps)
        frames += 1
    }
}
