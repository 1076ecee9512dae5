@testable import StreamAllocation

/// Chromium's VP8 simulcast of a 960x540 camera: q 240x135 (~150 kbit/s), h 480x270
/// (~500 kbit/s), f 960x540 (~1.6 Mbit/s), each with three temporal layers (40/60/100 %).
func camera(active: [Bool] = [true, true, true], full: [Int] = [150_000, 500_000, 1_600_000]) -> [PublishedLayer] {
    let sizes = [(240, 135), (480, 270), (960, 540)]
    return sizes.indices.map { index in
        PublishedLayer(
            width: sizes[index].0, height: sizes[index].1, isActive: active[index],
            temporalBitrates: [full[index] * 4 / 10, full[index] * 6 / 10, full[index]])
    }
}

let q = LayerSelection(spatial: 0, temporal: 2)
let h = LayerSelection(spatial: 1, temporal: 2)
let f = LayerSelection(spatial: 2, temporal: 2)

/// Microseconds.
let second: Int64 = 1_000_000
let tick: Int64 = 100_000

/// Drives one allocator in simulated time: an update every `tick` from `start` (inclusive) to
/// `end` (exclusive), with the estimate a trace gives; returns each update's allocation.
struct Trace {
    var allocator = StreamAllocator()
    var tracks: [SubscribedTrack]
    private(set) var log: [(at: Int64, estimate: Int, allocation: Allocation)] = []

    init(tracks: [SubscribedTrack]) { self.tracks = tracks }

    mutating func run(from start: Int64, to end: Int64, estimate: (Int64) -> Int) {
        var now = start
        while now < end {
            let bitrate = estimate(now)
            log.append((now, bitrate, allocator.update(estimate: bitrate, tracks: tracks, now: now)))
            now += tick
        }
    }

    var last: Allocation { log.last!.allocation }

    /// The layer of `id` at each update.
    func layers(of id: String) -> [(at: Int64, layer: LayerSelection?)] {
        log.map { ($0.at, $0.allocation[id]?.layer) }
    }

    /// How many times `id`'s decision changed over the updates at or after `start`.
    func changes(of id: String, from start: Int64 = 0) -> Int {
        let decisions = log.filter { $0.at >= start }.map { $0.allocation[id]?.decision }
        return zip(decisions, decisions.dropFirst()).filter { $0 != $1 }.count
    }

    /// The first update at or after `start` at which `id` forwards `layer`.
    func first(_ id: String, at layer: LayerSelection?, from start: Int64 = 0) -> Int64? {
        log.first { $0.at >= start && $0.allocation[id]?.layer == layer }?.at
    }
}

/// An estimate around `base`, off by up to `spread` (0.1: ±10 %) either way, the same every run.
func noisy(_ base: Int, spread: Double, seed: UInt64 = 1) -> (Int64) -> Int {
    var state = seed
    let samples = (0..<2_000).map { _ in
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407  // Knuth's MMIX LCG
        return Double(base) * (1 + spread * (Double((state >> 33) % 2_001) / 1_000 - 1))
    }
    return { now in Int(samples[Int(now / tick) % samples.count]) }
}
