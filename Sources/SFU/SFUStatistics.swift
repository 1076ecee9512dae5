/// The SFU's counters on one media worker: RTCP feedback it handled, packets it forwarded or
/// dropped, and the forwarding delay. Plain integers on the worker's thread; `/metrics` reads a
/// snapshot taken on the loop.
public struct SFUStatistics: Sendable, Equatable {
    /// Upper bounds of the forwarding delay buckets, in microseconds.
    public static let delayBucketsMicroseconds: [UInt64] = [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000]

    public var nacksReceived: UInt64 = 0
    public var nacksSent: UInt64 = 0
    public var plisReceived: UInt64 = 0
    /// RTCP receiver reports from subscribers (each tells their loss and jitter).
    public var receiverReportsReceived: UInt64 = 0
    public var plisSent: UInt64 = 0
    public var firsSent: UInt64 = 0
    public var retransmissions: UInt64 = 0
    public var retransmissionMisses: UInt64 = 0
    public var rembSent: UInt64 = 0
    public var forwardedPackets: UInt64 = 0
    public var droppedMalformedRTP: UInt64 = 0
    public var droppedMalformedRTCP: UInt64 = 0
    public var droppedUnknownSSRC: UInt64 = 0
    /// RTX packets whose payload type repairs no negotiated codec, or whose layer has no SSRC yet.
    public var droppedUnknownRetransmission: UInt64 = 0
    /// VP8 packets whose payload descriptor is cut short (not forwarded by layer logic).
    public var droppedMalformedVP8: UInt64 = 0
    public var droppedMalformedTransportFeedback: UInt64 = 0
    /// Padding-only packets from publishers (their own probing): counted, not forwarded.
    public var paddingReceived: UInt64 = 0
    /// Publishers' retransmissions that arrived on RTX and were unwrapped.
    public var repairsReceived: UInt64 = 0
    public var transportFeedbackReceived: UInt64 = 0
    public var transportFeedbackSent: UInt64 = 0
    /// Subscriber tracks paused because not even their lowest layer fit.
    public var tracksPaused: UInt64 = 0
    /// Simulcast layer switches of subscribers' tracks (at keyframes).
    public var layerSwitches: UInt64 = 0
    /// Retransmissions that went out on a subscriber's RTX stream (part of `retransmissions`).
    public var retransmissionsOnRTX: UInt64 = 0
    /// Bytes sent to subscribers only to probe their bandwidth.
    public var probeBytesSent: UInt64 = 0
    /// Counts per bucket of `delayBucketsMicroseconds`, then one for larger delays.
    public var delayBuckets = [UInt64](repeating: 0, count: delayBucketsMicroseconds.count + 1)
    public var delaySumNanoseconds: UInt64 = 0
    public var delayCount: UInt64 = 0

    public init() {}

    /// Records how long one packet took from its arrival to its last copy being sent.
    public mutating func recordForwardingDelay(nanoseconds: UInt64) {
        let micros = nanoseconds / 1000
        var index = 0
        while index < Self.delayBucketsMicroseconds.count, micros > Self.delayBucketsMicroseconds[index] { index += 1 }
        delayBuckets[index] += 1
        delaySumNanoseconds &+= nanoseconds
        delayCount += 1
    }

    public mutating func add(_ other: SFUStatistics) {
        nacksReceived += other.nacksReceived
        nacksSent += other.nacksSent
        plisReceived += other.plisReceived
        receiverReportsReceived += other.receiverReportsReceived
        plisSent += other.plisSent
        firsSent += other.firsSent
        retransmissions += other.retransmissions
        retransmissionMisses += other.retransmissionMisses
        rembSent += other.rembSent
        forwardedPackets += other.forwardedPackets
        droppedMalformedRTP += other.droppedMalformedRTP
        droppedMalformedRTCP += other.droppedMalformedRTCP
        droppedUnknownSSRC += other.droppedUnknownSSRC
        droppedUnknownRetransmission += other.droppedUnknownRetransmission
        droppedMalformedVP8 += other.droppedMalformedVP8
        droppedMalformedTransportFeedback += other.droppedMalformedTransportFeedback
        paddingReceived += other.paddingReceived
        repairsReceived += other.repairsReceived
        transportFeedbackReceived += other.transportFeedbackReceived
        transportFeedbackSent += other.transportFeedbackSent
        tracksPaused += other.tracksPaused
        layerSwitches += other.layerSwitches
        retransmissionsOnRTX += other.retransmissionsOnRTX
        probeBytesSent += other.probeBytesSent
        for index in delayBuckets.indices { delayBuckets[index] += other.delayBuckets[index] }
        delaySumNanoseconds &+= other.delaySumNanoseconds
        delayCount += other.delayCount
    }
}


/// What the worker's subscribers get right now: how many video subscriptions are on each layer,
/// and their estimated downlinks (a histogram: a label per subscriber would not be bounded).
public struct DownlinkFigures: Sendable, Equatable {
    /// Upper bounds of the estimate buckets, bits per second.
    public static let estimateBuckets = [250_000, 500_000, 1_000_000, 2_000_000, 4_000_000, 8_000_000]

    /// Video subscriptions by the spatial layer sent (0, 1, 2); `paused` for bandwidth.
    public var subscriptionsByLayer = [0, 0, 0]
    public var pausedSubscriptions = 0
    /// Subscribers with transport-wide feedback, per bucket of `estimateBuckets`, then one above.
    public var estimates = [Int](repeating: 0, count: estimateBuckets.count + 1)
    public var estimateSum = 0
    public var estimateCount = 0

    public init() {}

    public mutating func add(_ other: DownlinkFigures) {
        for index in subscriptionsByLayer.indices { subscriptionsByLayer[index] += other.subscriptionsByLayer[index] }
        pausedSubscriptions += other.pausedSubscriptions
        for index in estimates.indices { estimates[index] += other.estimates[index] }
        estimateSum += other.estimateSum
        estimateCount += other.estimateCount
    }

    mutating func record(estimate: Int) {
        let index = Self.estimateBuckets.firstIndex { estimate <= $0 } ?? Self.estimateBuckets.count
        estimates[index] += 1
        estimateSum += estimate
        estimateCount += 1
    }
}

/// The counters every room on one media worker adds to. Shared by those rooms and touched only on
/// that worker's loop, so the packet path bumps plain integers, with no lock.
public final class SFUWorkerStatistics: @unchecked Sendable {
    public var counts = SFUStatistics()
    private var rooms: [ObjectIdentifier: WeakRoom] = [:]

    private struct WeakRoom {
        weak var room: SFURoom?
    }

    public init() {}

    func register(_ room: SFURoom) { rooms[ObjectIdentifier(room)] = WeakRoom(room: room) }
    func unregister(_ room: SFURoom) { rooms[ObjectIdentifier(room)] = nil }

    /// The worker's subscriptions and estimates now; on the worker's loop.
    public func downlink() -> DownlinkFigures {
        var figures = DownlinkFigures()
        for entry in rooms.values {
            guard let room = entry.room else { continue }
            for participant in room.participants.values {
                if participant.bandwidth.hasFeedback { figures.record(estimate: participant.bandwidth.estimator.estimate) }
                for downTrack in participant.downTracks where downTrack.publication.kind == .video {
                    if downTrack.isPausedForBandwidth {
                        figures.pausedSubscriptions += 1
                    } else if downTrack.currentLayer >= 0 {
                        figures.subscriptionsByLayer[min(downTrack.currentLayer, 2)] += 1
                    }
                }
            }
        }
        return figures
    }
}
