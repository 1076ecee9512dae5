#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The delay-based half of a send-side estimator in the manner of GCC (draft-ietf-rmcat-gcc-02):
/// packets grouped by send time, the change of one-way delay between groups smoothed and fitted
/// to a trend, an adaptive threshold that tells overuse from underuse, and an AIMD controller
/// that turns those signals into a rate. Times are microseconds; no clock of its own.
public struct DelayBasedEstimator: Sendable {
    public enum Usage: Sendable, Equatable { case normal, overusing, underusing }

    /// Packets sent within this span of the group's first are one group (a frame's burst).
    static let groupSpan: Int64 = 5_000
    static let windowSize = 20
    static let smoothing = 0.9
    static let trendGain = 4.0
    static let initialThreshold = 12.5

    private struct Group {
        var firstSend: Int64
        var lastSend: Int64
        var lastArrival: Int64
    }

    private var current: Group?
    private var previous: Group?
    private var firstArrival: Int64?
    private var accumulatedDelay = 0.0
    private var smoothedDelay = 0.0
    private var samples: [(x: Double, y: Double)] = []
    private var deltaCount = 0
    private var previousTrend = 0.0
    private var threshold = Self.initialThreshold
    private var lastThresholdUpdate: Int64?
    private var overuseTime = -1.0
    private var overuseCount = 0
    public private(set) var usage = Usage.normal
    /// The trend as last compared with the threshold (ms, scaled), for tests and metrics.
    public private(set) var trend = 0.0

    public private(set) var rate: AIMDRateControl

    public init(initialBitrate: Int, minBitrate: Int, maxBitrate: Int) {
        rate = AIMDRateControl(initialBitrate: initialBitrate, minBitrate: minBitrate, maxBitrate: maxBitrate)
    }

    /// A packet the receiver got, in arrival order.
    public mutating func packetArrived(sendTime: Int64, arrivalTime: Int64) {
        guard var group = current else {
            current = Group(firstSend: sendTime, lastSend: sendTime, lastArrival: arrivalTime)
            return
        }
        if sendTime < group.firstSend { return }  // reordered from an older group
        if sendTime - group.firstSend <= Self.groupSpan {
            group.lastSend = max(group.lastSend, sendTime)
            group.lastArrival = max(group.lastArrival, arrivalTime)
            current = group
            return
        }
        // The current group is complete: compare it with the one before.
        if let previous {
            let sendDelta = Double(group.lastSend - previous.lastSend) / 1000
            let arrivalDelta = Double(group.lastArrival - previous.lastArrival) / 1000
            update(sendDeltaMs: sendDelta, arrivalDeltaMs: arrivalDelta, arrival: group.lastArrival)
        }
        previous = group
        current = Group(firstSend: sendTime, lastSend: sendTime, lastArrival: arrivalTime)
    }

    /// After a feedback's packets: the rate, moved by the usage signal and what was acked.
    public mutating func updateRate(ackedBitrate: Int?, now: Int64) -> Int {
        rate.update(usage: usage, ackedBitrate: ackedBitrate, now: now)
    }

    /// A probe the link delivered at `bitrate`: the rate rises to it at once (never falls).
    public mutating func probed(bitrate: Int, saturated: Bool) -> Int {
        rate.probed(bitrate: bitrate, saturated: saturated)
    }

    private mutating func update(sendDeltaMs: Double, arrivalDeltaMs: Double, arrival: Int64) {
        let first = firstArrival ?? arrival
        firstArrival = first
        deltaCount = min(deltaCount + 1, 1000)
        accumulatedDelay += arrivalDeltaMs - sendDeltaMs
        smoothedDelay = Self.smoothing * smoothedDelay + (1 - Self.smoothing) * accumulatedDelay
        samples.append((Double(arrival - first) / 1000, smoothedDelay))
        if samples.count > Self.windowSize { samples.removeFirst() }
        var slope = previousTrend
        if samples.count == Self.windowSize, let fitted = Self.slope(of: samples) { slope = fitted }
        let modified = Double(min(deltaCount, 60)) * slope * Self.trendGain
        detect(modified, sendDeltaMs: sendDeltaMs, now: arrival)
        previousTrend = slope
    }

    private mutating func detect(_ modified: Double, sendDeltaMs: Double, now: Int64) {
        defer {
            trend = modified
            adaptThreshold(modified, now: now)
        }
        guard deltaCount >= 2 else { return }
        if modified > threshold {
            overuseTime = overuseTime < 0 ? sendDeltaMs / 2 : overuseTime + sendDeltaMs
            overuseCount += 1
            if overuseTime > 10, overuseCount > 1, modified >= trend {
                overuseTime = 0
                overuseCount = 0
                usage = .overusing
            }
        } else if modified < -threshold {
            overuseTime = -1
            overuseCount = 0
            usage = .underusing
        } else {
            overuseTime = -1
            overuseCount = 0
            usage = .normal
        }
    }

    /// The threshold follows the trend slowly upward and faster downward, so a trend that a
    /// competing flow's queue raises does not read as overuse for ever.
    private mutating func adaptThreshold(_ modified: Double, now: Int64) {
        let last = lastThresholdUpdate ?? now
        lastThresholdUpdate = now
        let magnitude = abs(modified)
        guard magnitude <= threshold + 15 else { return }  // a spike: do not chase it
        let gain = magnitude < threshold ? 0.039 : 0.0087
        let elapsedMs = min(Double(now - last) / 1000, 100)
        threshold = min(600, max(6, threshold + gain * (magnitude - threshold) * elapsedMs))
    }

    /// Least-squares slope of y over x.
    static func slope(of points: [(x: Double, y: Double)]) -> Double? {
        let count = Double(points.count)
        let meanX = points.reduce(0) { $0 + $1.x } / count
        let meanY = points.reduce(0) { $0 + $1.y } / count
        var numerator = 0.0
        var denominator = 0.0
        for point in points {
            numerator += (point.x - meanX) * (point.y - meanY)
            denominator += (point.x - meanX) * (point.x - meanX)
        }
        return denominator == 0 ? nil : numerator / denominator
    }
}

/// Additive-increase, multiplicative-decrease: overuse cuts the rate to 85 % of what was acked;
/// a normal signal raises it, by 8 % a second while far from the link's last known capacity and
/// by about a packet per response time near it; underuse holds it. It never runs far ahead of
/// what the receiver acknowledges.
public struct AIMDRateControl: Sendable {
    public enum State: Sendable, Equatable { case hold, increase, decrease }

    static let beta = 0.85
    static let multiplicativeIncreasePerSecond = 1.08
    /// Near capacity the rate grows by about this many bits per second each second (a 1,200-byte
    /// packet per 200 ms response time).
    static let additiveIncreasePerSecond = 48_000.0
    static let minimumDecreaseInterval: Int64 = 200_000

    public let minBitrate: Int
    public let maxBitrate: Int
    public private(set) var bitrate: Int
    public private(set) var state = State.increase
    /// The acked rate at the last overuse: where the link's capacity was last seen.
    public private(set) var linkCapacity: Double?
    private var lastUpdate: Int64?
    private var lastDecrease: Int64?

    public init(initialBitrate: Int, minBitrate: Int, maxBitrate: Int) {
        self.minBitrate = minBitrate
        self.maxBitrate = maxBitrate
        bitrate = min(max(initialBitrate, minBitrate), maxBitrate)
    }

    public mutating func update(usage: DelayBasedEstimator.Usage, ackedBitrate: Int?, now: Int64) -> Int {
        let elapsed = Double(min(now - (lastUpdate ?? now), 1_000_000)) / 1_000_000
        lastUpdate = now
        switch usage {
        case .overusing: state = .decrease
        case .underusing: state = .hold
        case .normal: if state == .hold || state == .decrease { state = .increase }
        }
        var next = Double(bitrate)
        switch state {
        case .hold:
            break
        case .increase:
            if let acked = ackedBitrate, let capacity = linkCapacity, Double(acked) > capacity * 1.5 {
                linkCapacity = nil  // the link got faster: search multiplicatively again
            }
            if let capacity = linkCapacity, next > capacity * 0.9 {
                next += Self.additiveIncreasePerSecond * elapsed
            } else {
                next = max(next * pow(Self.multiplicativeIncreasePerSecond, elapsed), next + 1_000 * elapsed)
            }
        case .decrease:
            if lastDecrease.map({ now - $0 >= Self.minimumDecreaseInterval }) ?? true, let acked = ackedBitrate {
                next = min(next, Self.beta * Double(acked))
                linkCapacity = linkCapacity.map { 0.95 * $0 + 0.05 * Double(acked) } ?? Double(acked)
                lastDecrease = now
            }
            state = .hold
        }
        // Never grows far ahead of what arrives: an idle sender must not claim an untested rate.
        // The limit stops growth but does not cut: a rate a probe proved stands while the
        // sender does not yet use it.
        if let acked = ackedBitrate, state == .increase {
            next = min(next, max(1.5 * Double(acked) + 10_000, Double(bitrate)))
        }
        bitrate = Int(min(max(next, Double(minBitrate)), Double(maxBitrate)))
        return bitrate
    }

    /// A probe the link delivered at `bitrate`: the rate rises to it. A saturated probe measured
    /// the link's capacity; one it carried whole says only that the capacity is higher.
    mutating func probed(bitrate probed: Int, saturated: Bool) -> Int {
        if saturated {
            linkCapacity = Double(probed)
        } else if let capacity = linkCapacity, Double(probed) > capacity {
            linkCapacity = nil
        }
        bitrate = min(max(bitrate, probed), maxBitrate)
        return bitrate
    }
}
