#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A subscriber's bandwidth, estimated by the sender (the SFU) from transport-wide feedback: every
/// packet sent gets a transport-wide sequence number and is remembered with its send time and
/// size; each feedback says which arrived when. The delay-based estimator (queues growing) and the
/// loss-based one (packets lost) each propose a rate; the estimate is the lower, within
/// [minBitrate, maxBitrate]. Packets sent as part of a probe cluster are measured as a group:
/// a cluster the link delivered lifts the estimate at once (see `ProbeController`). Times are
/// microseconds on the caller's clock, passed in.
public struct SendSideEstimator: Sendable {
    public struct Configuration: Sendable, Equatable {
        public var initialBitrate: Int
        public var minBitrate: Int
        public var maxBitrate: Int

        public init(initialBitrate: Int = 1_000_000, minBitrate: Int = 100_000, maxBitrate: Int = 20_000_000) {
            self.initialBitrate = initialBitrate
            self.minBitrate = minBitrate
            self.maxBitrate = maxBitrate
        }
    }

    /// What one feedback told: for tests, metrics and the allocator's decisions.
    public struct Update: Sendable, Equatable {
        public var estimate: Int
        public var delayBased: Int
        public var lossBased: Int
        public var ackedBitrate: Int?
        public var lossFraction: Double
        public var usage: DelayBasedEstimator.Usage
        /// A probe cluster this feedback completed enough of to measure (the newest if several).
        public var probe: ProbeResult?
    }

    /// Sent packets remembered for feedback: a power of two, indexed by sequence number.
    static let historySize = 1 << 13

    private struct Sent {
        var sequence: Int64 = -1
        var sendTime: Int64 = 0
        var size: Int32 = 0
        /// `ProbeMeasurements`' slot for a probe cluster's packet (1-based), 0 for others.
        var probeSlot: UInt8 = 0
        var reported = false
    }

    public let configuration: Configuration
    private var history: [Sent]
    private var nextSequence: Int64 = 1
    private var delay: DelayBasedEstimator
    private var loss: LossBasedEstimator
    private var acked = AckedBitrate()
    private var probes = ProbeMeasurements()
    /// The last probe's delivery rate: for as long as the acked window lags behind it, the
    /// better measure of throughput.
    private var lastProbeDelivery: (bitrate: Int, at: Int64)?
    public private(set) var estimate: Int
    /// Feedback entries for sequence numbers never sent, or sent too long ago to be remembered.
    public private(set) var unknownReports = 0

    public init(_ configuration: Configuration = Configuration()) {
        self.configuration = configuration
        history = Array(repeating: Sent(), count: Self.historySize)
        delay = DelayBasedEstimator(
            initialBitrate: configuration.initialBitrate, minBitrate: configuration.minBitrate, maxBitrate: configuration.maxBitrate)
        loss = LossBasedEstimator(initialBitrate: configuration.initialBitrate)
        estimate = configuration.initialBitrate
    }

    /// Records a packet about to be sent and returns the transport-wide sequence number to stamp
    /// on it.
    public mutating func packetSent(size: Int, at sendTime: Int64) -> UInt16 {
        packetSent(size: size, at: sendTime, probeCluster: nil)
    }

    /// Records a packet about to be sent, as part of `probeCluster` when one is being sent (media
    /// and padding alike), and returns the transport-wide sequence number to stamp on it.
    public mutating func packetSent(size: Int, at sendTime: Int64, probeCluster: ProbeCluster?) -> UInt16 {
        let sequence = nextSequence
        nextSequence += 1
        let probeSlot = probeCluster.map { probes.packetSent($0, sequence: sequence, size: size, at: sendTime) } ?? 0
        history[Int(sequence & Int64(Self.historySize - 1))] = Sent(
            sequence: sequence, sendTime: sendTime, size: Int32(clamping: size), probeSlot: probeSlot, reported: false)
        return UInt16(truncatingIfNeeded: sequence)
    }

    /// Takes one feedback packet (received at `now`) and returns the new estimate with its parts.
    @discardableResult
    public mutating func feedbackReceived(_ feedback: TWCCFeedback, now: Int64) -> Update {
        let newest = nextSequence - 1
        let base = TWCCRecorder.unwrap(feedback.baseSequenceNumber, near: newest)
        var arrived: [(sendTime: Int64, arrival: Int64, size: Int)] = []
        var lost = 0
        var total = 0
        for (index, status) in feedback.packets.enumerated() {
            let sequence = base + Int64(index)
            let slot = Int(sequence & Int64(Self.historySize - 1))
            guard sequence > 0, sequence <= newest, history[slot].sequence == sequence else {
                unknownReports += 1
                continue
            }
            if let arrival = status.arrivalMicroseconds {
                arrived.append((history[slot].sendTime, arrival, Int(history[slot].size)))
                if history[slot].probeSlot != 0 {
                    probes.packetArrived(slot: history[slot].probeSlot, sequence: sequence, size: Int(history[slot].size), at: arrival)
                }
                if !history[slot].reported { total += 1 }
                history[slot].reported = true
            } else if !history[slot].reported {
                // A packet reported lost may still be reported as arrived by a later feedback.
                lost += 1
                total += 1
            }
        }
        arrived.sort { $0.arrival < $1.arrival }
        for packet in arrived {
            acked.packetArrived(size: packet.size, at: packet.arrival)
            delay.packetArrived(sendTime: packet.sendTime, arrivalTime: packet.arrival)
        }
        // Probes these packets completed: the newest is reported; the fastest delivery is a
        // throughput sample fresher than the acked window's (a cut under overuse, now or while
        // the window still lags, starts from it) and, without overuse, what the estimate is
        // lifted toward.
        let probeApplies = delay.usage != .overusing
        var probe: ProbeResult?
        var fastestProbe: (delivered: Int, saturated: Bool)?
        while let measured = probes.takeResult() {
            if measured.delivered > fastestProbe?.delivered ?? 0 { fastestProbe = (measured.delivered, measured.saturated) }
            probe = ProbeResult(
                clusterID: measured.cluster.id, target: measured.cluster.bitrate, bitrate: ProbeMeasurements.liftedRate(measured.delivered),
                saturated: measured.saturated, applied: probeApplies)
        }
        if let fastestProbe { lastProbeDelivery = (fastestProbe.delivered, now) }
        if let last = lastProbeDelivery, now - last.at > AckedBitrate.window { lastProbeDelivery = nil }
        let ackedBitrate = acked.bitrate
        let throughput = lastProbeDelivery.map { max($0.bitrate, ackedBitrate ?? 0) } ?? ackedBitrate
        var delayBased = delay.updateRate(ackedBitrate: throughput, now: now)
        let lossFraction = loss.packetsReported(lost: lost, total: total, now: now)
        if probeApplies, let fastestProbe {
            let lifted = ProbeMeasurements.liftedRate(fastestProbe.delivered)
            delayBased = delay.probed(bitrate: lifted, saturated: fastestProbe.saturated)
            loss.probed(bitrate: lifted)
        }
        let lossBased = loss.cap(at: delayBased)
        estimate = min(max(min(delayBased, lossBased), configuration.minBitrate), configuration.maxBitrate)
        return Update(
            estimate: estimate, delayBased: delayBased, lossBased: lossBased, ackedBitrate: ackedBitrate, lossFraction: lossFraction,
            usage: delay.usage, probe: probe)
    }
}

/// The loss-based proposal: under 2 % loss it grows 8 % a second, over 10 % it drops by half the
/// loss fraction (at most every 300 ms), in between it holds. Random loss of a few percent thus
/// neither grows nor collapses the rate; the delay-based half caps it.
public struct LossBasedEstimator: Sendable {
    static let lowLoss = 0.02
    static let highLoss = 0.10
    /// Losses are judged over at least this many packets (or this long), not per feedback.
    static let minimumPackets = 40
    static let maximumSpan: Int64 = 1_000_000
    static let minimumDecreaseInterval: Int64 = 300_000

    public private(set) var bitrate: Double
    private var lost = 0
    private var total = 0
    private var spanStart: Int64?
    private var lastUpdate: Int64?
    private var lastDecrease: Int64?
    public private(set) var lastLossFraction = 0.0

    public init(initialBitrate: Int) { bitrate = Double(initialBitrate) }

    /// Counts a feedback's packets and, once enough are counted, moves the rate; returns the loss
    /// fraction last judged.
    mutating func packetsReported(lost: Int, total: Int, now: Int64) -> Double {
        self.lost += lost
        self.total += total
        let start = spanStart ?? now
        spanStart = start
        guard self.total >= Self.minimumPackets || (now - start >= Self.maximumSpan && self.total > 0) else { return lastLossFraction }
        let fraction = Double(self.lost) / Double(self.total)
        lastLossFraction = fraction
        self.lost = 0
        self.total = 0
        spanStart = now
        let elapsed = Double(min(now - (lastUpdate ?? now), 1_000_000)) / 1_000_000
        lastUpdate = now
        if fraction < Self.lowLoss {
            bitrate = bitrate * pow(1.08, elapsed) + 1_000 * elapsed
        } else if fraction > Self.highLoss, lastDecrease.map({ now - $0 >= Self.minimumDecreaseInterval }) ?? true {
            bitrate *= 1 - 0.5 * fraction
            lastDecrease = now
        }
        return fraction
    }

    /// A probe delivered at `bitrate`: the loss-based half does not hold the estimate below it.
    mutating func probed(bitrate: Int) { self.bitrate = max(self.bitrate, Double(bitrate)) }

    /// The proposal, never above the delay-based one (so growth resumes from where delay allows).
    mutating func cap(at delayBased: Int) -> Int {
        bitrate = min(bitrate, Double(delayBased))
        return Int(bitrate)
    }
}

/// The rate at which packets arrived at the receiver over the last half second.
struct AckedBitrate: Sendable {
    static let window: Int64 = 500_000
    private var packets: [(arrival: Int64, size: Int)] = []
    private var head = 0
    private var bytes = 0

    mutating func packetArrived(size: Int, at arrival: Int64) {
        packets.append((arrival, size))
        bytes += size
        let newest = packets[packets.count - 1].arrival
        while head < packets.count, newest - packets[head].arrival > Self.window {
            bytes -= packets[head].size
            head += 1
        }
        if head > 1024 {
            packets.removeFirst(head)
            head = 0
        }
    }

    /// Bits per second over the window (or what of it has passed); nil until 150 ms have.
    var bitrate: Int? {
        guard head < packets.count else { return nil }
        let span = packets[packets.count - 1].arrival - packets[head].arrival
        guard span >= 150_000 else { return nil }
        return Int(Double(bytes * 8) * 1_000_000 / Double(span))
    }
}
