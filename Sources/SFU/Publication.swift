#if canImport(Glibc)
import Glibc
#endif
import RTP

/// One published track: what the publisher negotiated, its layers as they arrive (one, or up to
/// three simulcast layers), its audio levels and the down-tracks it feeds. Lives on the room's
/// worker.
public final class Publication {
    public let trackSid: String
    public let participantSid: String
    public let kind: MediaKind
    public let mid: String
    public let codecs: [RTPCodec]
    public let extensions: RTPExtensionIDs
    /// Whether the publisher negotiated NACK, PLI and FIR (rtcp-fb) for this m-line.
    public let feedback: Feedback
    /// Spatial layers, lowest first: one for a plain track, one per rid for simulcast.
    public let layers: [PublishedLayer]
    /// RTX payload type → the payload type it repairs (RFC 4588 apt).
    let retransmissionPayloadTypes: PayloadTypeMap
    public internal(set) var muted = false
    /// A screen share goes first when a subscriber's bandwidth is shared out.
    public var isScreenShare = false
    public internal(set) var downTracks: [DownTrack] = []
    /// The layers some subscriber (or the recorder) needs, as last told to the publisher.
    public internal(set) var requestedLayers: Set<Int>
    var layersUnneededSince: UInt64?

    // Audio level over the current speakers interval (RFC 6464 -dBov, lower is louder).
    var levelSum: UInt64 = 0
    var levelCount: UInt64 = 0
    var voicePackets: UInt64 = 0

    public struct Feedback: Sendable, Equatable {
        public var nack: Bool
        public var pli: Bool
        public var fir: Bool
        public var remb: Bool
        public var transportCC: Bool

        public init(nack: Bool = false, pli: Bool = false, fir: Bool = false, remb: Bool = false, transportCC: Bool = false) {
            self.nack = nack
            self.pli = pli
            self.fir = fir
            self.remb = remb
            self.transportCC = transportCC
        }
    }

    /// A simulcast layer as the publisher's SDP announced it.
    public struct LayerDescription: Sendable, Equatable {
        public var rid: String?
        public var ssrc: UInt32?
        public var retransmissionSSRC: UInt32?

        public init(rid: String? = nil, ssrc: UInt32? = nil, retransmissionSSRC: UInt32? = nil) {
            self.rid = rid
            self.ssrc = ssrc
            self.retransmissionSSRC = retransmissionSSRC
        }
    }

    init(
        trackSid: String, participantSid: String, kind: MediaKind, mid: String, layers: [LayerDescription], codecs: [RTPCodec],
        extensions: RTPExtensionIDs, feedback: Feedback, retransmission: [UInt8: UInt8], historySize: Int
    ) {
        self.trackSid = trackSid
        self.participantSid = participantSid
        self.kind = kind
        self.mid = mid
        self.codecs = codecs
        self.extensions = extensions
        self.feedback = feedback
        var map = PayloadTypeMap()
        for (rtx, apt) in retransmission { map[rtx] = apt }
        retransmissionPayloadTypes = map
        let described = layers.isEmpty ? [LayerDescription()] : layers
        self.layers = described.enumerated().map { index, layer in
            PublishedLayer(index: index, description: layer, kind: kind, historySize: historySize)
        }
        requestedLayers = Set(self.layers.indices)
    }

    public var isSimulcast: Bool { layers.count > 1 }
    /// The first layer's SSRC (the only one of a plain track).
    public var ssrc: UInt32? { layers[0].ssrc }
    public var clockRate: UInt32 { codecs.first?.clockRate ?? (kind == .audio ? 48_000 : 90_000) }
    /// Gaps in it are NACKed upstream (video that offered NACK, with a history to answer from).
    var isNacked: Bool { feedback.nack && kind == .video }
    var isVP8: Bool { codecs.first?.name.lowercased() == "vp8" }

    func codec(payloadType: UInt8) -> RTPCodec? { codecs.first { $0.payloadType == payloadType } }

    func layer(rid: UnsafeRawBufferPointer) -> PublishedLayer? {
        layers.first { $0.rid.map { $0.utf8.elementsEqual(rid) } ?? false }
    }

    func noteAudioLevel(_ header: RTPHeader, packet: UnsafeRawBufferPointer) {
        guard extensions.audioLevel != 0, let range = header.extensionElement(id: extensions.audioLevel, in: packet),
            let level = AudioLevel(extensionData: UnsafeRawBufferPointer(rebasing: packet[range]))
        else { return }
        levelSum += UInt64(level.level)
        levelCount += 1
        if level.voiceActivity { voicePackets += 1 }
    }

    /// The interval's loudness as 0…1 (linear amplitude from the mean -dBov), then a new interval.
    func takeLevel() -> Double {
        defer { (levelSum, levelCount, voicePackets) = (0, 0, 0) }
        guard levelCount > 0 else { return 0 }
        let meanDBov = Double(levelSum) / Double(levelCount)
        return max(0, min(1, pow(10, -meanDBov / 20)))
    }
}

/// One incoming stream of a publication: its SSRC (announced or learned from the first packet
/// carrying its rid), its RTX SSRC, reception statistics, NACK tracking, the history that answers
/// subscribers' NACKs, and what it measures of itself (bitrate per temporal layer, size).
public final class PublishedLayer {
    public let index: Int
    public let rid: String?
    public internal(set) var ssrc: UInt32?
    public internal(set) var retransmissionSSRC: UInt32?
    var statistics: ReceiveStatistics?
    var nacks = NackTracker(maxRetries: 3)
    let history: PacketHistory?
    public internal(set) var packetsReceived: UInt64 = 0
    public internal(set) var bytesReceived: UInt64 = 0
    /// Retransmissions that arrived on the RTX stream and were unwrapped.
    public internal(set) var repairsReceived: UInt64 = 0
    /// Frame size from the last keyframe (VP8 says it in every keyframe).
    public internal(set) var width: Int?
    public internal(set) var height: Int?
    /// Bits per second over the last measuring window, cumulative per temporal layer (T0,
    /// T0+T1, T0+T1+T2); one entry when the codec has no temporal layers.
    public internal(set) var bitrates: [Int] = [0]
    var windowBytes = SIMD4<UInt64>(repeating: 0)
    var highestTemporalLayer = 0
    var lastPacketAt: UInt64 = 0
    var lastKeyframeAt: UInt64 = 0
    var lastKeyframeRequest: UInt64 = 0
    var keyframeRequestSequence: UInt8 = 0

    init(index: Int, description: Publication.LayerDescription, kind: MediaKind, historySize: Int) {
        self.index = index
        rid = description.rid
        ssrc = description.ssrc
        retransmissionSSRC = description.retransmissionSSRC
        // Audio is not retransmitted (a late Opus frame is worse than a concealed one).
        history = kind == .video ? PacketHistory(capacity: historySize, slotSize: 1500) : nil
        if let ssrc = description.ssrc { statistics = ReceiveStatistics(ssrc: ssrc) }
    }

    /// Whether the publisher sends it now: a packet within the last second.
    public func isActive(now: UInt64) -> Bool { lastPacketAt != 0 && now &- lastPacketAt < 1_000_000_000 }

    /// Bookkeeping for one arriving packet (of this layer's own stream, RTX unwrapped).
    func noteReceived(_ header: RTPHeader, packet: UnsafeRawBufferPointer, temporalLayer: Int, clockRate: UInt32, nacked: Bool, now: UInt64) {
        packetsReceived += 1
        bytesReceived += UInt64(packet.count)
        lastPacketAt = now
        windowBytes[min(temporalLayer, 3)] &+= UInt64(packet.count)
        if temporalLayer > highestTemporalLayer { highestTemporalLayer = min(temporalLayer, 2) }
        if statistics?.ssrc != header.ssrc { statistics = ReceiveStatistics(ssrc: header.ssrc) }
        let arrival = UInt32(truncatingIfNeeded: now / 1000 * UInt64(clockRate) / 1_000_000)
        statistics?.packetReceived(sequenceNumber: header.sequenceNumber, rtpTimestamp: header.timestamp, arrival: arrival)
        if nacked { nacks.packetReceived(sequenceNumber: header.sequenceNumber) }
        history?.store(packet, sequenceNumber: header.sequenceNumber)
    }

    /// Closes a measuring window of `elapsed` nanoseconds: bitrates per temporal layer.
    func closeWindow(elapsed: UInt64) {
        guard elapsed > 0 else { return }
        var cumulative: UInt64 = 0
        var rates: [Int] = []
        for layer in 0...highestTemporalLayer {
            cumulative += windowBytes[layer]
            rates.append(Int(cumulative * 8 * 1_000_000_000 / elapsed))
        }
        bitrates = rates
        windowBytes = .zero
    }
}
