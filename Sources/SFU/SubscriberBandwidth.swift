import Congestion
import RTP

/// What the SFU knows of one subscriber's downlink: the send-side estimate from its transport-wide
/// feedback (every packet sent to it carries a transport-wide sequence number) or, for a
/// subscriber without transport-cc, its REMB. Lives on the room's worker, beside the subscriber's
/// transport; down-tracks stamp through it.
public final class SubscriberBandwidth {
    var estimator: SendSideEstimator
    /// Whether any feedback arrived: until then the estimate is only the starting guess.
    public private(set) var hasFeedback = false
    public private(set) var feedbackReceived: UInt64 = 0
    public private(set) var malformedFeedback: UInt64 = 0
    public private(set) var lastUpdate: SendSideEstimator.Update?
    /// The subscriber's REMB (max over its tracks' reports), for subscribers without transport-cc.
    public internal(set) var receiverEstimate: UInt64?
    public internal(set) var probeBytesSent: UInt64 = 0
    /// The estimate the next layer upgrade needs, when only the estimate stands in its way: what
    /// probing tries to reach.
    public internal(set) var probeGoal: Int?

    /// Video bytes sent to the subscriber (retransmissions included), and their rate over the
    /// last whole second: with REMB alone, whether its receiver is held by what it receives.
    /// Video only, as REMB is video feedback: receivers estimate from the video's abs-send-time
    /// (aiortc's REMB stays where it was while only audio arrives).
    var videoOctetsSent: UInt64 = 0
    private var octetsAtWindowStart: UInt64 = 0
    public private(set) var videoSendingRate = 0
    /// For a REMB subscriber: the upgrade being tried while its receiver shows no congestion.
    public private(set) var receiverTrial = ReceiverEstimateTrial()

    /// The size of the packets probes go out as: nil for copies of media (the prober's default),
    /// a padding packet's while none of the subscriber's video is forwarded. Set by allocation.
    var probePacketSize: Int?

    /// When and how fast to probe above the estimate, and the bytes of the probe under way.
    var prober: ProbeController
    var pacer = ProbePacer()

    init(configuration: SendSideEstimator.Configuration) {
        estimator = SendSideEstimator(configuration)
        prober = ProbeController(initialBitrate: configuration.initialBitrate)
    }

    /// Records a packet about to leave; returns the transport-wide sequence number to stamp.
    /// While a probe runs, media counts toward it too.
    @inline(__always)
    func packetSent(size: Int, now: UInt64) -> UInt16 {
        let cluster = pacer.activeCluster
        let sequence = estimator.packetSent(size: size, at: Int64(now / 1000), probeCluster: cluster)
        if cluster != nil { pacer.packetSent(size: size) }
        return sequence
    }

    /// The probe bytes due now (starting the next probe when one is due); 0 when none.
    func probeBytesDue(now: UInt64) -> Int {
        let micros = Int64(now / 1000)
        if pacer.activeCluster == nil, let cluster = prober.nextCluster(now: micros, packetSize: probePacketSize) { pacer.start(cluster, at: micros) }
        return pacer.paddingBytes(now: micros)
    }

    /// What the allocator would spend if it could: probing goes up to it, no further.
    func want(bitrate: Int) { prober.want(bitrate: bitrate) }

    /// Takes one transport-cc feedback packet (RTPFB FMT 15); false when it does not parse.
    func feedbackReceived(_ packet: RTCPPacket, now: UInt64) -> Bool {
        let feedback: TWCCFeedback
        do {
            feedback = try TWCCFeedback(parsing: packet.bytes)
        } catch {
            malformedFeedback += 1
            return false
        }
        feedbackReceived += 1
        hasFeedback = true
        let update = estimator.feedbackReceived(feedback, now: Int64(now / 1000))
        prober.estimateUpdated(update, now: Int64(now / 1000))
        lastUpdate = update
        return true
    }

    /// Closes a window of `elapsed` nanoseconds: the video sending rate over it.
    func closeWindow(elapsed: UInt64) {
        let octets = videoOctetsSent &- octetsAtWindowStart
        octetsAtWindowStart = videoOctetsSent
        if elapsed > 0 { videoSendingRate = Int(min(octets * 8 * 1_000_000_000 / elapsed, UInt64(Int.max))) }
    }

    /// Before each allocation: a REMB subscriber's trial follows its latest report.
    func updateReceiverTrial(now: UInt64) {
        guard !hasFeedback, let receiverEstimate else { return }
        receiverTrial.update(
            receiverEstimate: Int(clamping: receiverEstimate), sending: videoSendingRate, upgradeGoal: probeGoal, now: Int64(now / 1000))
    }

    /// Bits per second the allocator may spend: the TWCC estimate once feedback arrives, else the
    /// subscriber's REMB (or the upgrade on trial), else `fallback` (a subscriber that tells
    /// nothing is not held back).
    public func available(fallback: UInt64) -> UInt64 {
        if hasFeedback { return UInt64(max(estimator.estimate, 0)) }
        if let receiverEstimate { return UInt64(receiverTrial.available(receiverEstimate: Int(clamping: receiverEstimate))) }
        return fallback
    }
}
