@testable import Congestion
import Testing

/// A bottleneck link in simulated time: a FIFO drained at `capacity` bits per second (which a
/// trace may change), a buffer that drops what would wait longer than `maxQueueDelay`, random
/// loss, and a fixed propagation delay. Microseconds throughout.
struct SimulatedLink {
    var capacity: (Int64) -> Double
    var propagation: Int64 = 20_000
    var maxQueueDelay: Int64 = 500_000
    var lossRate = 0.0
    var random = SplitMix64(seed: 7)
    private var busyUntil: Int64 = 0
    private(set) var queueDelays: [(at: Int64, delay: Int64)] = []
    private(set) var dropped: [Int64] = []

    init(capacity: @escaping (Int64) -> Double) { self.capacity = capacity }

    /// When a packet sent at `time` arrives, or nil when it is dropped.
    mutating func send(size: Int, at time: Int64) -> Int64? {
        let start = max(time, busyUntil)
        let wait = start - time
        if wait > maxQueueDelay {
            dropped.append(time)
            return nil
        }
        let transmission = Int64(Double(size * 8) / capacity(time) * 1_000_000)
        busyUntil = start + transmission
        queueDelays.append((time, wait))
        if lossRate > 0, Double(random.next() % 1_000_000) / 1_000_000 < lossRate {
            dropped.append(time)
            return nil
        }
        return busyUntil + propagation
    }
}

struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A sender paced at the estimate (1,200-byte packets every 5 ms tick as the budget allows), a
/// receiver that sends feedback every 100 ms through a `TWCCRecorder`, the bytes parsed again on
/// the way back (half a round trip later), and the estimator between them. With a prober, the
/// sender does what the SFU does: on a 20 ms tick it starts the cluster the controller asks
/// for and sends the padding the pacer asks for (packets of up to 1,200 bytes) through the
/// same link, and stamps media sent meanwhile with the cluster too.
struct Trace {
    var link: SimulatedLink
    var estimator: SendSideEstimator
    var recorder = TWCCRecorder(senderSSRC: 1, mediaSSRC: 2)
    var prober: ProbeController?
    var pacer = ProbePacer(tickInterval: 20_000)
    private(set) var paddingBits: [(at: Int64, bits: Int)] = []
    /// Each probe result, with the estimate before and after its feedback.
    private(set) var probes: [(at: Int64, result: ProbeResult, before: Int, after: Int)] = []
    private var inFlight: [(arrival: Int64, sequence: UInt16)] = []
    private var feedbackInFlight: [(due: Int64, bytes: [UInt8])] = []
    private var budget = 0.0
    private(set) var estimates: [(at: Int64, bitrate: Int)] = []
    private(set) var sentBits: [(at: Int64, bits: Int)] = []

    /// `probingFor`: probe as an allocator that wants that much would have it (nil: no probing).
    init(link: SimulatedLink, initialBitrate: Int, probingFor wanted: Int? = nil) {
        self.link = link
        estimator = SendSideEstimator(.init(initialBitrate: initialBitrate, minBitrate: 50_000, maxBitrate: 5_000_000))
        if let wanted {
            prober = ProbeController(initialBitrate: initialBitrate)
            prober?.want(bitrate: wanted)
        }
    }

    private mutating func send(size: Int, at now: Int64) {
        let cluster = pacer.activeCluster
        let sequence = estimator.packetSent(size: size, at: now, probeCluster: cluster)
        if cluster != nil { pacer.packetSent(size: size) }
        if let arrival = link.send(size: size, at: now) { inFlight.append((arrival, sequence)) }
    }

    private mutating func sendPadding(at now: Int64) {
        guard var prober else { return }
        if pacer.activeCluster == nil, let cluster = prober.nextCluster(now: now) { pacer.start(cluster, at: now) }
        self.prober = prober
        var padding = pacer.paddingBytes(now: now)
        while padding > 0, pacer.activeCluster != nil {
            let size = min(padding, 1200)
            send(size: size, at: now)
            paddingBits.append((now, size * 8))
            padding -= size
        }
    }

    mutating func run(seconds: Int) {
        let start = estimates.last?.at ?? 0
        let tick: Int64 = 5_000
        var now = start
        while now < start + Int64(seconds) * 1_000_000 {
            now += tick
            budget = min(budget + Double(estimator.estimate) * Double(tick) / 1_000_000, 1200 * 8 * 4)
            while budget >= 1200 * 8 {
                budget -= 1200 * 8
                send(size: 1200, at: now)
                sentBits.append((now, 1200 * 8))
            }
            if now % 20_000 == 0 { sendPadding(at: now) }
            inFlight.sort { $0.arrival < $1.arrival }
            while let first = inFlight.first, first.arrival <= now {
                recorder.packetArrived(sequenceNumber: first.sequence, arrivalMicroseconds: first.arrival)
                inFlight.removeFirst()
            }
            if now % 100_000 == 0 {
                for feedback in recorder.makeFeedback() { feedbackInFlight.append((now + link.propagation, feedback.serialized())) }
            }
            while let first = feedbackInFlight.first, first.due <= now {
                feedbackInFlight.removeFirst()
                let parsed = first.bytes.withUnsafeBytes { try? TWCCFeedback(parsing: $0) }
                guard let parsed else { continue }
                let before = estimator.estimate
                let update = estimator.feedbackReceived(parsed, now: now)
                prober?.estimateUpdated(update, now: now)
                if let result = update.probe { probes.append((now, result, before, update.estimate)) }
            }
            if now % 100_000 == 0 { estimates.append((now, estimator.estimate)) }
        }
    }

    func meanEstimate(from: Double, to: Double) -> Double {
        let window = estimates.filter { Double($0.at) >= from * 1e6 && Double($0.at) < to * 1e6 }
        return Double(window.reduce(0) { $0 + $1.bitrate }) / Double(max(1, window.count))
    }

    func estimate(at seconds: Double) -> Int {
        estimates.last { Double($0.at) <= seconds * 1e6 }?.bitrate ?? 0
    }

    func firstTime(after seconds: Double, where condition: (Int) -> Bool) -> Double? {
        estimates.first { Double($0.at) > seconds * 1e6 && condition($0.bitrate) }.map { Double($0.at) / 1e6 }
    }
}

/// The send-side estimator on traces of the links browsers meet: it must find the bottleneck,
/// follow it down fast and back up, and neither collapse under random loss nor fill a queue.
@Suite struct EstimatorTraceTests {
    @Test func aFourHundredKilobitLinkIsFoundFromAbove() {
        var trace = Trace(link: SimulatedLink { _ in 400_000 }, initialBitrate: 1_000_000)
        trace.run(seconds: 30)
        let settled = trace.meanEstimate(from: 10, to: 30)
        #expect(settled > 0.6 * 400_000 && settled < 1.1 * 400_000, "settled at \(settled)")
        #expect(trace.estimate(at: 3) < 500_000, "after 3 s: \(trace.estimate(at: 3))")
        let lateDelays = trace.link.queueDelays.filter { $0.at > 15_000_000 }.map(\.delay).sorted()
        #expect(lateDelays[lateDelays.count * 95 / 100] < 250_000, "queue p95 \(lateDelays[lateDelays.count * 95 / 100]) µs")
    }

    @Test func aLinkThatFallsTo300KilobitsAndComesBackTo3Megabits() {
        var trace = Trace(link: SimulatedLink { time in time < 20_000_000 || time >= 40_000_000 ? 3_000_000 : 300_000 }, initialBitrate: 1_000_000)
        trace.run(seconds: 70)
        #expect(trace.meanEstimate(from: 12, to: 20) > 1_800_000, "on 3 Mbit/s: \(trace.meanEstimate(from: 12, to: 20))")
        let down = trace.firstTime(after: 20) { $0 < 400_000 } ?? .infinity
        #expect(down - 20 < 3, "below 400 kbit/s at \(down) s")
        let held = trace.meanEstimate(from: 25, to: 40)
        #expect(held > 0.6 * 300_000 && held < 1.15 * 300_000, "on 300 kbit/s: \(held)")
        let up = trace.firstTime(after: 40) { $0 > 1_500_000 } ?? .infinity
        #expect(up - 40 < 25, "above 1.5 Mbit/s at \(up) s")
    }

    /// With probing too (an allocator wanting 2.5 Mbit/s).
    @Test(arguments: [nil, 2_500_000] as [Int?])
    func fivePercentRandomLossNeitherCollapsesNorInflatesTheEstimate(probingFor wanted: Int?) {
        var link = SimulatedLink { _ in 2_000_000 }
        link.lossRate = 0.05
        var trace = Trace(link: link, initialBitrate: 800_000, probingFor: wanted)
        trace.run(seconds: 40)
        let lowest = trace.estimates.filter { $0.at > 1_000_000 }.map(\.bitrate).min() ?? 0
        #expect(lowest >= 500_000, "fell to \(lowest)")
        #expect((trace.estimates.map(\.bitrate).max() ?? 0) <= 2_200_000)
    }

    /// With probing too (an allocator wanting 1.5 Mbit/s).
    @Test(arguments: [nil, 1_500_000] as [Int?])
    func aTwoHundredMillisecondQueueIsNotKeptFull(probingFor wanted: Int?) {
        var link = SimulatedLink { _ in 1_000_000 }
        link.maxQueueDelay = 200_000
        var trace = Trace(link: link, initialBitrate: 2_000_000, probingFor: wanted)
        trace.run(seconds: 30)
        let settled = trace.meanEstimate(from: 10, to: 30)
        #expect(settled > 0.6 * 1_000_000 && settled < 1.1 * 1_000_000, "settled at \(settled)")
        let late = trace.link.queueDelays.filter { $0.at > 10_000_000 }
        let drops = trace.link.dropped.filter { $0 > 10_000_000 }.count
        #expect(Double(drops) / Double(late.count + drops) < 0.02, "\(drops) of \(late.count + drops) dropped after 10 s")
        let sorted = late.map(\.delay).sorted()
        #expect(sorted[sorted.count / 2] < 100_000, "queue median \(sorted[sorted.count / 2]) µs")
    }
}
