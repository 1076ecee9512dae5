#if canImport(Glibc)
import Glibc
#endif
import RTP

/// One published track: what the publisher negotiated, its incoming stream state (statistics,
/// NACK tracking, the packet history that answers subscribers' NACKs, audio levels) and the
/// down-tracks it feeds. Lives on the room's worker.
public final class Publication {
    public let trackSid: String
    public let participantSid: String
    public let kind: MediaKind
    public let mid: String
    /// The publisher's SSRC: from its SDP, or learned from the first packet carrying this mid.
    public internal(set) var ssrc: UInt32?
    public let codecs: [RTPCodec]
    public let extensions: RTPExtensionIDs
    /// Whether the publisher negotiated NACK, PLI and FIR (rtcp-fb) for this m-line.
    public let feedback: Feedback
    public internal(set) var muted = false
    public internal(set) var downTracks: [DownTrack] = []

    var statistics: ReceiveStatistics?
    var nacks = NackTracker(maxRetries: 3)
    let history: PacketHistory?
    /// Gaps in it are NACKed upstream (video that offered NACK, with a history to answer from).
    var isNacked: Bool { feedback.nack && history != nil }
    var lastKeyframeRequest: UInt64 = 0
    var keyframeRequestSequence: UInt8 = 0
    var packetsReceived: UInt64 = 0
    var bytesReceived: UInt64 = 0
    // Audio level over the current speakers interval (RFC 6464 -dBov, lower is louder).
    var levelSum: UInt64 = 0
    var levelCount: UInt64 = 0
    var voicePackets: UInt64 = 0

    public struct Feedback: Sendable, Equatable {
        public var nack: Bool
        public var pli: Bool
        public var fir: Bool
        public var remb: Bool

        public init(nack: Bool = false, pli: Bool = false, fir: Bool = false, remb: Bool = false) {
            self.nack = nack
            self.pli = pli
            self.fir = fir
            self.remb = remb
        }
    }

    init(
        trackSid: String, participantSid: String, kind: MediaKind, mid: String, ssrc: UInt32?, codecs: [RTPCodec],
        extensions: RTPExtensionIDs, feedback: Feedback, historySize: Int
    ) {
        self.trackSid = trackSid
        self.participantSid = participantSid
        self.kind = kind
        self.mid = mid
        self.ssrc = ssrc
        self.codecs = codecs
        self.extensions = extensions
        self.feedback = feedback
        // Audio is not retransmitted (a late Opus frame is worse than a concealed one).
        self.history = kind == .video ? PacketHistory(capacity: historySize, slotSize: 1500) : nil
        if let ssrc { statistics = ReceiveStatistics(ssrc: ssrc) }
    }

    public var clockRate: UInt32 { codecs.first?.clockRate ?? (kind == .audio ? 48_000 : 90_000) }

    func codec(payloadType: UInt8) -> RTPCodec? { codecs.first { $0.payloadType == payloadType } }

    /// Bookkeeping for one arriving packet.
    func noteReceived(_ header: RTPHeader, packet: UnsafeRawBufferPointer, now: UInt64) {
        packetsReceived += 1
        bytesReceived += UInt64(packet.count)
        if statistics?.ssrc != header.ssrc { statistics = ReceiveStatistics(ssrc: header.ssrc) }
        let arrival = UInt32(truncatingIfNeeded: now / 1000 * UInt64(clockRate) / 1_000_000)
        statistics?.packetReceived(sequenceNumber: header.sequenceNumber, rtpTimestamp: header.timestamp, arrival: arrival)
        if isNacked { nacks.packetReceived(sequenceNumber: header.sequenceNumber) }
        history?.store(packet, sequenceNumber: header.sequenceNumber)
        if extensions.audioLevel != 0, let range = header.extensionElement(id: extensions.audioLevel, in: packet),
            let level = AudioLevel(extensionData: UnsafeRawBufferPointer(rebasing: packet[range]))
        {
            levelSum += UInt64(level.level)
            levelCount += 1
            if level.voiceActivity { voicePackets += 1 }
        }
    }

    /// The interval's loudness as 0…1 (linear amplitude from the mean -dBov), then a new interval.
    func takeLevel() -> Double {
        defer { (levelSum, levelCount, voicePackets) = (0, 0, 0) }
        guard levelCount > 0 else { return 0 }
        let meanDBov = Double(levelSum) / Double(levelCount)
        return max(0, min(1, pow(10, -meanDBov / 20)))
    }
}
