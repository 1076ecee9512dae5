/// Probing, in the manner of GCC's probe controller and probe bitrate estimator: short bursts
/// sent faster than the estimate (padding on top of media), whose delivery rate, read from
/// transport-wide feedback, says whether the link can carry more. Without probes an estimate
/// that fell only climbs back at the AIMD controller's 8 % a second.

/// A burst to send at `bitrate` (media and padding together) for `duration`: at least `bytes`,
/// over at least `minPackets` packets, every one stamped with `id`.
public struct ProbeCluster: Sendable, Equatable {
    public var id: Int
    public var bitrate: Int
    public var duration: Int64
    public var minPackets: Int

    public init(id: Int, bitrate: Int, duration: Int64, minPackets: Int) {
        self.id = id
        self.bitrate = bitrate
        self.duration = duration
        self.minPackets = minPackets
    }

    /// What the cluster sends in all.
    public var bytes: Int { Int(Double(bitrate) * Double(duration) / 8_000_000) }
}

/// What feedback told of one probe cluster.
public struct ProbeResult: Sendable, Equatable {
    public var clusterID: Int
    /// The rate the cluster was meant to be sent at.
    public var target: Int
    /// The rate the link delivered it at (capped by the rates it was sent at) less a margin:
    /// what the estimate may be lifted to.
    public var bitrate: Int
    /// Delivered well below what was sent: the link's capacity, not a lower bound on it.
    public var saturated: Bool
    /// Whether the estimate was lifted toward it (not while the delay detector saw overuse).
    public var applied: Bool
}

/// Spreads the active cluster's bytes over the sender's ticks: each call says how many bytes
/// of padding to send now so that what the cluster has sent keeps up with its rate (a tick's
/// worth ahead, as the sender sends in bursts). The caller reports every packet it sends
/// stamped with the cluster, media and padding alike, so media counts toward the cluster.
public struct ProbePacer: Sendable {
    /// How often the sender calls `paddingBytes(now:)`: each call covers until the next.
    public let tickInterval: Int64
    /// The cluster to stamp packets sent now with; nil when none is being sent.
    public private(set) var activeCluster: ProbeCluster?
    private var started: Int64 = 0
    private var sentBytes = 0
    private var sentPackets = 0

    public init(tickInterval: Int64 = 20_000) { self.tickInterval = tickInterval }

    public mutating func start(_ cluster: ProbeCluster, at now: Int64) {
        activeCluster = cluster
        started = now
        sentBytes = 0
        sentPackets = 0
    }

    /// Bytes of padding due now for the active cluster (0 when none): send at least that many,
    /// in whole packets, each reported with `packetSent(size:)`.
    public mutating func paddingBytes(now: Int64) -> Int {
        guard let cluster = activeCluster else { return 0 }
        // A sender that cannot keep up (it caps padding per tick) stretches the cluster, but not
        // for ever: the estimator measures what was sent.
        if now - started > 2 * cluster.duration + 4 * tickInterval {
            activeCluster = nil
            return 0
        }
        let elapsed = Double(now - started + tickInterval)
        let due = min(cluster.bytes, Int(Double(cluster.bitrate) * elapsed / 8_000_000))
        return max(due - sentBytes, 0)
    }

    /// A packet sent stamped with the active cluster; the cluster ends with the packet that
    /// completes both its bytes and its packet count.
    public mutating func packetSent(size: Int) {
        guard let cluster = activeCluster else { return }
        sentBytes += size
        sentPackets += 1
        if sentBytes >= cluster.bytes, sentPackets >= cluster.minPackets { activeCluster = nil }
    }
}

/// Decides when to probe and how fast: at start (3×, then 6× the initial rate), whenever the
/// allocator wants more than the estimate (twice the estimate, capped a little above the want), again on
/// every probe the link carried (twice its result), and every few seconds while the estimate
/// stays below the want; never while the estimate falls or soon after it fell. One probe at a
/// time: the next waits for the result of the last. A probe the link could not carry, one
/// that timed out, or a sequence that ends still short of the want lengthens the wait before
/// the next periodic one (up to 5 s): a link just under the want is not filled every 3 s.
public struct ProbeController: Sendable {
    public struct Configuration: Sendable, Equatable {
        /// Multiples of the initial estimate probed at start, one after another while the link
        /// carries them.
        public var initialProbes: [Double]
        /// Each further probe is this multiple of the estimate (or of the last result).
        public var growth: Double
        /// A result of at least this fraction of its target: the link may carry more, probe on.
        public var probeFurtherFraction: Double
        /// While the estimate is below the want, probe this often; each probe the link could
        /// not carry doubles the wait, up to `maxPeriodicInterval` (a link that is full stays
        /// full most of the time, and each probe of it queues).
        public var periodicInterval: Int64
        public var maxPeriodicInterval: Int64
        /// No probe this soon after the estimate fell (the link is congested, not faster).
        public var backOffAfterDecrease: Int64
        /// At least this long between probes that a raised want starts.
        public var minimumInterval: Int64
        /// A want counts as raised (probe soon) when it grows by more than this fraction: the
        /// want follows publishers' measured bitrates, which move a little every second.
        public var wantRaiseFraction: Double
        /// Give up waiting for a probe's result after this long (too much of it was lost).
        public var resultTimeout: Int64
        public var clusterDuration: Int64
        public var minPackets: Int
        /// The packet size assumed when sizing a cluster to `minPackets`, unless the sender says
        /// what it will send (`nextCluster(now:packetSize:)`).
        public var packetSize: Int
        public var maxProbeBitrate: Int
        /// Probes go up to this multiple of the want, not just to it: a probe lifts the estimate
        /// to 95 % of what it delivered, so a probe of the want alone would leave the estimate
        /// short of it (and a paused track paused) until the slow additive increase made up the
        /// rest, by which time a publisher ramping up has raised the want again.
        public var wantOvershoot: Double

        public init(
            initialProbes: [Double] = [3, 6], growth: Double = 2, probeFurtherFraction: Double = 0.7,
            periodicInterval: Int64 = 3_000_000, maxPeriodicInterval: Int64 = 5_000_000, backOffAfterDecrease: Int64 = 1_500_000,
            minimumInterval: Int64 = 1_000_000, wantRaiseFraction: Double = 0.1, resultTimeout: Int64 = 1_000_000, clusterDuration: Int64 = 20_000, minPackets: Int = 5,
            packetSize: Int = 1_200, maxProbeBitrate: Int = 20_000_000, wantOvershoot: Double = 1.25
        ) {
            self.initialProbes = initialProbes
            self.growth = growth
            self.probeFurtherFraction = probeFurtherFraction
            self.periodicInterval = periodicInterval
            self.maxPeriodicInterval = maxPeriodicInterval
            self.backOffAfterDecrease = backOffAfterDecrease
            self.minimumInterval = minimumInterval
            self.wantRaiseFraction = wantRaiseFraction
            self.resultTimeout = resultTimeout
            self.clusterDuration = clusterDuration
            self.minPackets = minPackets
            self.packetSize = packetSize
            self.maxProbeBitrate = maxProbeBitrate
            self.wantOvershoot = wantOvershoot
        }
    }

    public let configuration: Configuration
    private var estimate: Int
    private var wanted: Int?
    /// Targets to probe next, each once the last probe's result is in (the start's, or a
    /// further one after a result the link carried).
    private var queued: [Int] = []
    private var started = false
    /// The probe whose result decides what comes next.
    private var awaited: (clusterID: Int, since: Int64)?
    private var lastProbe: Int64?
    private var lastDecrease: Int64?
    private var periodicWait: Int64
    /// The allocator wants more than when last probed: probe soon rather than periodically.
    private var wantRaised = false
    private var nextID = 1

    public init(_ configuration: Configuration = Configuration(), initialBitrate: Int) {
        self.configuration = configuration
        estimate = initialBitrate
        periodicWait = configuration.periodicInterval
    }

    /// The most the allocator would use (its layers' total); probes go a little above it, no further.
    public mutating func want(bitrate: Int) {
        if Double(bitrate) > (1 + configuration.wantRaiseFraction) * Double(wanted ?? 0) { wantRaised = true }
        wanted = bitrate
    }

    /// After each feedback: the estimate and any probe result in it.
    public mutating func estimateUpdated(_ update: SendSideEstimator.Update, now: Int64) {
        if update.usage == .overusing || Double(update.estimate) < 0.95 * Double(estimate) {
            lastDecrease = now
            queued.removeAll()
        }
        estimate = update.estimate
        guard let result = update.probe, result.clusterID == awaited?.clusterID else { return }
        awaited = nil
        let carried = result.applied && Double(result.bitrate) >= configuration.probeFurtherFraction * Double(result.target)
        guard carried else {
            queued.removeAll()
            backOff()
            return
        }
        // Further, unless that is where this one already went (the want, or the cap), or it
        // measured the link's capacity.
        let further = min(Int(configuration.growth * Double(max(result.bitrate, estimate))), ceiling)
        if queued.isEmpty, !result.saturated, further > result.target { queued.append(further) }
        // A link that carries nearly the want but not quite: probing it every few seconds would
        // fill it every few seconds for nothing, so the wait grows as for a probe not carried.
        if queued.isEmpty, let wanted, estimate < wanted {
            backOff()
        } else {
            periodicWait = configuration.periodicInterval
        }
    }

    private mutating func backOff() { periodicWait = min(2 * periodicWait, configuration.maxPeriodicInterval) }

    /// The cluster to start now, if any: call on each tick while the pacer has none active.
    /// `packetSize` is the size of the packets the sender will probe with, when it knows
    /// (padding is much smaller than media): a cluster lasts long enough for its minimum of them.
    public mutating func nextCluster(now: Int64, packetSize: Int? = nil) -> ProbeCluster? {
        if !started {
            started = true
            queued = configuration.initialProbes.map { Int($0 * Double(estimate)) }
        }
        if let awaited {
            guard now - awaited.since >= configuration.resultTimeout else { return nil }
            // Too little of it arrived to measure: as good as a probe the link could not carry.
            self.awaited = nil
            queued.removeAll()
            backOff()
        }
        while !queued.isEmpty {
            let target = min(queued.removeFirst(), ceiling)
            if Double(target) > 1.1 * Double(estimate) { return makeCluster(bitrate: target, packetSize: packetSize, now: now) }
        }
        guard let wanted, estimate < wanted else {
            wantRaised = false
            return nil
        }
        if let lastDecrease, now - lastDecrease < configuration.backOffAfterDecrease { return nil }
        let sinceLast = lastProbe.map { now - $0 } ?? .max
        guard sinceLast >= (wantRaised ? configuration.minimumInterval : periodicWait) else { return nil }
        let target = min(Int(configuration.growth * Double(estimate)), ceiling)
        guard Double(target) > 1.1 * Double(estimate) else { return nil }
        return makeCluster(bitrate: target, packetSize: packetSize, now: now)
    }

    private var ceiling: Int {
        min(wanted.map { Int(Double($0) * configuration.wantOvershoot) } ?? configuration.maxProbeBitrate, configuration.maxProbeBitrate)
    }

    private mutating func makeCluster(bitrate: Int, packetSize: Int?, now: Int64) -> ProbeCluster {
        let id = nextID
        nextID += 1
        lastProbe = now
        awaited = (id, now)
        wantRaised = false
        // Long enough for its minimum of packets at the assumed size.
        let size = packetSize ?? configuration.packetSize
        let packetsTime = Int64(Double(configuration.minPackets * size * 8) / Double(bitrate) * 1_000_000)
        return ProbeCluster(
            id: id, bitrate: bitrate, duration: max(configuration.clusterDuration, packetsTime), minPackets: configuration.minPackets)
    }
}

/// Per probe cluster, what was sent and what feedback reported arriving; once enough of a
/// cluster has arrived (its minimum of packets, 80 % of its bytes), its delivery rate. A small
/// ring of slots: a cluster's packets carry its slot, and its first sequence number tells them
/// from an older cluster's that had the slot before.
struct ProbeMeasurements: Sendable {
    static let slotCount = 8
    static let minimumReceivedFraction = 0.8
    /// Delivered below this fraction of the send rate: the link is saturated.
    static let unsaturatedRatio = 0.9
    /// The estimate is lifted to this fraction of the delivery rate.
    static let utilization = 0.95

    static func liftedRate(_ delivered: Int) -> Int { Int(utilization * Double(delivered)) }

    private struct Slot {
        var cluster = ProbeCluster(id: 0, bitrate: 0, duration: 0, minPackets: 0)
        var firstSequence: Int64 = .max
        var firstSend: Int64 = 0
        var lastSend: Int64 = 0
        /// Bytes sent before the last send time: over the send span, the send rate even when
        /// the sender sends bursts (the last burst is outside the span).
        var bytesBeforeLastSend = 0
        var sentBytes = 0
        var receivedPackets = 0
        var receivedBytes = 0
        var firstArrival: Int64 = .max
        var firstArrivalSize = 0
        var lastArrival: Int64 = .min
        var done = true

        var isMeasurable: Bool {
            let packets = (ProbeMeasurements.minimumReceivedFraction * Double(cluster.minPackets)).rounded(.up)
            return Double(receivedPackets) >= packets && Double(receivedBytes) >= ProbeMeasurements.minimumReceivedFraction * Double(cluster.bytes)
        }
    }

    private var slots = [Slot](repeating: Slot(), count: slotCount)

    /// The slot (1-based, 0 for none) to remember with a packet of `cluster`.
    mutating func packetSent(_ cluster: ProbeCluster, sequence: Int64, size: Int, at sendTime: Int64) -> UInt8 {
        let index = cluster.id & (Self.slotCount - 1)
        if slots[index].cluster.id != cluster.id || slots[index].firstSequence > sequence {
            slots[index] = Slot(cluster: cluster, firstSequence: sequence, firstSend: sendTime, lastSend: sendTime, done: false)
        }
        if sendTime > slots[index].lastSend {
            slots[index].bytesBeforeLastSend = slots[index].sentBytes
            slots[index].lastSend = sendTime
        }
        slots[index].sentBytes += size
        return UInt8(index + 1)
    }

    mutating func packetArrived(slot: UInt8, sequence: Int64, size: Int, at arrival: Int64) {
        let index = Int(slot) - 1
        guard !slots[index].done, sequence >= slots[index].firstSequence else { return }
        slots[index].receivedPackets += 1
        slots[index].receivedBytes += size
        if arrival < slots[index].firstArrival {
            slots[index].firstArrival = arrival
            slots[index].firstArrivalSize = size
        }
        slots[index].lastArrival = max(slots[index].lastArrival, arrival)
    }

    /// A cluster that became measurable with the packets reported so far, oldest first; each
    /// is measured once.
    /// The delivery rate is the receive rate capped by the send rate (and the target).
    mutating func takeResult() -> (cluster: ProbeCluster, delivered: Int, saturated: Bool)? {
        var oldest: Int?
        for index in slots.indices where !slots[index].done && slots[index].isMeasurable {
            if oldest.map({ slots[index].cluster.id < slots[$0].cluster.id }) ?? true { oldest = index }
        }
        guard let index = oldest else { return nil }
        slots[index].done = true
        let slot = slots[index]
        // A burst sent at one instant (the sender's tick) has no send rate: the target stands in.
        var sendRate = Double(slot.cluster.bitrate)
        let sendSpan = slot.lastSend - slot.firstSend
        if sendSpan > 0 { sendRate = min(sendRate, Double(slot.bytesBeforeLastSend * 8) * 1_000_000 / Double(sendSpan)) }
        // Arrivals closer than a feedback tick say only that the link is faster than sent.
        var receiveRate = sendRate
        let receiveSpan = slot.lastArrival - slot.firstArrival
        if receiveSpan > TWCCFeedback.deltaTickMicroseconds {
            receiveRate = Double((slot.receivedBytes - slot.firstArrivalSize) * 8) * 1_000_000 / Double(receiveSpan)
        }
        return (slot.cluster, Int(min(receiveRate, sendRate)), receiveRate < Self.unsaturatedRatio * sendRate)
    }
}
