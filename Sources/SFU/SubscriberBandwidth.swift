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
    var receiverEstimate: UInt64?
    public private(set) var probeBytesSent: UInt64 = 0

    init(configuration: SendSideEstimator.Configuration) {
        estimator = SendSideEstimator(configuration)
    }

    /// Records a packet about to leave; returns the transport-wide sequence number to stamp.
    @inline(__always)
    func packetSent(size: Int, now: UInt64) -> UInt16 {
        estimator.packetSent(size: size, at: Int64(now / 1000))
    }

    /// Takes one transport-cc feedback packet (RTPFB FMT 15); false when it does not parse.
    func feedbackReceived(_ packet: RTCPPacket, now: UInt64) -> Bool {
        let feedback: TWCCFeedback
        do {
            feedback = try TWCCFeedback(parsing: UnsafeRawBufferPointer(rebasing: packet.bytes[packet.range]))
        } catch {
            malformedFeedback += 1
            return false
        }
        feedbackReceived += 1
        hasFeedback = true
        lastUpdate = estimator.feedbackReceived(feedback, now: Int64(now / 1000))
        return true
    }

    /// Bits per second the allocator may spend: the TWCC estimate once feedback arrives, else the
    /// subscriber's REMB, else `fallback` (a subscriber that tells nothing is not held back).
    func available(fallback: UInt64) -> UInt64 {
        if hasFeedback { return UInt64(max(estimator.estimate, 0)) }
        if let receiverEstimate { return receiverEstimate }
        return fallback
    }
}
