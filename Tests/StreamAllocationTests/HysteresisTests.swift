@testable import StreamAllocation
import Testing

/// Estimate traces over simulated time: down at once, up only after the hold, no oscillation.
struct HysteresisTests {
    @Test func aDropIsFollowedAtOnceAndARecoveryAfterTheHold() {
        var trace = Trace(tracks: [.video(id: "cam", layers: camera())])
        trace.run(from: 0, to: 20 * second) { now in
            switch now {
            case ..<(5 * second): 3_000_000
            case ..<(10 * second): 1_000_000
            default: 3_000_000
            }
        }
        #expect(trace.first("cam", at: f) == 0)
        // Down in the update that brought the lower estimate.
        #expect(trace.first("cam", at: h) == 5 * second)
        // Up 1.5 s after the estimate came back, and not before.
        #expect(trace.first("cam", at: f, from: 5 * second) == 11_500_000)
        #expect(trace.changes(of: "cam") == 2)
    }

    @Test func noUpgradeSoonAfterADowngrade() {
        var trace = Trace(tracks: [.video(id: "cam", layers: camera())])
        trace.run(from: 0, to: 12 * second) { now in
            switch now {
            case ..<(5 * second): 3_000_000
            case ..<(5_500_000): 1_000_000
            default: 3_000_000
            }
        }
        // The estimate is back at 5.5 s; the hold would end at 7 s, the downgrade's at 8 s.
        #expect(trace.first("cam", at: h) == 5 * second)
        #expect(trace.first("cam", at: f, from: 5 * second) == 8 * second)
    }

    @Test func aShortSpikeDoesNotUpgrade() {
        var trace = Trace(tracks: [.video(id: "cam", layers: camera())])
        trace.run(from: 0, to: 10 * second) { now in
            (3 * second..<(4 * second + 400_000)).contains(now) ? 3_000_000 : 1_000_000
        }
        #expect(trace.layers(of: "cam").allSatisfy { $0.layer == h })
        #expect(trace.log.filter { $0.at < 3 * second }.allSatisfy { $0.allocation.probeGoal == 1_840_000 })
        // While the spike lasts the upgrade waits on the hold, not on bandwidth: nothing to probe.
        #expect(trace.log.filter { $0.estimate == 3_000_000 }.allSatisfy { $0.allocation.probeGoal == nil })
    }

    @Test func aDipInTheHoldStartsItAgain() {
        var trace = Trace(tracks: [.video(id: "cam", layers: camera())])
        trace.run(from: 0, to: 10 * second) { now in
            switch now {
            case ..<(2 * second): 1_000_000
            case 3 * second: 1_500_000  // f does not fit 1.5 Mbit/s with the margin
            default: 3_000_000
            }
        }
        #expect(trace.first("cam", at: f) == 3 * second + tick + 1_500_000)
    }

    @Test func anUpgradeIsSizedByTheLowestEstimateOfTheHold() {
        let tracks: [SubscribedTrack] = (1...3).map { .video(id: "cam\($0)", layers: camera()) }
        var trace = Trace(tracks: tracks)
        // From q, q, T0+T1 to: 2.0 Mbit/s for most of the hold but 1.4 once: two h (1.15 Mbit/s with
        // the margin fits 1.4), not three (1.725).
        trace.run(from: 0, to: 4 * second) { now in
            switch now {
            case ..<(1 * second): 500_000
            case 1_500_000: 1_400_000
            default: 2_000_000
            }
        }
        let upgraded = trace.log.first { $0.allocation.videoBitrate > 450_000 }
        #expect(upgraded?.at == 2_500_000)
        #expect(upgraded.map { [$0.allocation["cam1"]?.layer, $0.allocation["cam2"]?.layer, $0.allocation["cam3"]?.layer] } == [h, h, q])
    }

    @Test func aNoisyEstimateAroundALayersNeedDoesNotOscillate() {
        // ±10 % around 1.75 Mbit/s: under f's 1.6 Mbit/s about one update in fourteen.
        let estimate = noisy(1_750_000, spread: 0.1)
        var trace = Trace(tracks: [.video(id: "cam", layers: camera())])
        trace.run(from: 0, to: 60 * second, estimate: estimate)
        let crossings = zip(trace.log, trace.log.dropFirst()).filter { ($0.estimate < 1_600_000) != ($1.estimate < 1_600_000) }.count
        #expect(crossings > 20)  // the trace does test something
        #expect(trace.changes(of: "cam") <= 1)
        #expect(trace.last["cam"]?.layer == h)
    }

    @Test func aNoisyEstimateWithRoomToSpareStaysAtTheTop() {
        var trace = Trace(tracks: [.video(id: "cam", layers: camera())])
        trace.run(from: 0, to: 60 * second, estimate: noisy(2_300_000, spread: 0.1, seed: 2))
        #expect(trace.layers(of: "cam").allSatisfy { $0.layer == f })
    }

    @Test func severalTracksUnderANoisyEstimateSettle() {
        let tracks: [SubscribedTrack] = [
            .video(id: "screen", priority: .screenShare, layers: camera()),
            .video(id: "cam1", layers: camera()),
            .video(id: "cam2", layers: camera()),
            .audio(id: "mic", bitrate: 40_000),
        ]
        var trace = Trace(tracks: tracks)
        trace.run(from: 0, to: 60 * second, estimate: noisy(2_500_000, spread: 0.1, seed: 3))
        let changes = ["screen", "cam1", "cam2"].map { trace.changes(of: $0, from: 5 * second) }
        #expect(changes.reduce(0, +) <= 2, "changes after 5 s: \(changes)")
        #expect(trace.last["screen"]?.layer == f)
        // Never over the estimate for longer than the update that found it.
        for entry in trace.log {
            #expect(entry.allocation.videoBitrate + entry.allocation.audioBitrate <= entry.estimate)
        }
    }

    @Test func aPausedTrackResumesOnlyWhenItsLowestLayerFitsWithTheMargin() {
        var trace = Trace(tracks: [.video(id: "cam", layers: camera())])
        trace.run(from: 0, to: 20 * second) { now in
            switch now {
            case ..<(3 * second): 50_000  // under T0's 60 kbit/s
            case ..<(8 * second): 65_000  // fits T0, but not with the margin (69 kbit/s)
            case ..<(12 * second): 80_000
            case ..<(12_500_000): 40_000
            default: 200_000
            }
        }
        let paused = VideoAllocation.Decision.paused(.bandwidth)
        #expect(trace.log.filter { $0.at < 9_500_000 }.allSatisfy { $0.allocation["cam"]?.decision == paused })
        #expect(trace.log.filter { $0.at < 8 * second }.allSatisfy { $0.allocation.probeGoal == 69_000 })
        #expect(trace.first("cam", at: LayerSelection(spatial: 0, temporal: 0)) == 9_500_000)
        // Paused again at once, back 3 s after that drop (the hold after a downgrade).
        #expect(trace.log.first { $0.at >= 12 * second }?.allocation["cam"]?.decision == paused)
        #expect(trace.first("cam", at: q, from: 12 * second) == 15 * second)
    }

    @Test func higherPrioritiesKeepTheirLayersWhileTheEstimateFalls() {
        let tracks: [SubscribedTrack] = [
            .video(id: "screen", priority: .screenShare, layers: camera()),
            .video(id: "speaker", priority: .activeSpeaker, layers: camera()),
            .video(id: "cam1", layers: camera()),
            .video(id: "cam2", layers: camera()),
        ]
        var trace = Trace(tracks: tracks)
        let steps = [5_000_000, 2_500_000, 1_200_000, 600_000, 300_000, 150_000, 5_000_000]
        trace.run(from: 0, to: Int64(steps.count) * 5 * second) { steps[Int($0 / (5 * second))] }

        func at(_ time: Int64) -> Allocation { trace.log.first { $0.at == time }!.allocation }
        #expect([at(0)["screen"]?.layer, at(0)["speaker"]?.layer, at(0)["cam1"]?.layer, at(0)["cam2"]?.layer] == [f, f, h, h])
        // 2.5 Mbit/s: the cameras drop to q first, the screen share keeps f.
        let fallen = at(5 * second)
        #expect([fallen["screen"]?.layer, fallen["speaker"]?.layer, fallen["cam1"]?.layer, fallen["cam2"]?.layer] == [f, h, q, q])
        // At every update, a higher class is never below a lower one, and every camera is
        // paused no sooner than the screen share.
        for entry in trace.log {
            let rank = { (id: String) in entry.allocation[id]?.layer.map { $0.spatial * 10 + $0.temporal } ?? -1 }
            #expect(rank("screen") >= rank("speaker") && rank("speaker") >= rank("cam1"), "at \(entry.at)")
            #expect(rank("cam1") == rank("cam2"), "at \(entry.at)")
        }
        // At 150 kbit/s something still flows: the screen share's T0, not nothing.
        #expect(at(25 * second)["screen"]?.layer != nil)
        #expect(trace.last["screen"]?.layer == f)
        #expect(trace.last["cam2"]?.layer == h)
    }

    @Test func aRaisedLimitIsFollowedAtOnceALoweredOneToo() {
        var allocator = StreamAllocator()
        let low = SubscribedTrack.video(id: "cam", limit: .quality(.low), layers: camera())
        let high = SubscribedTrack.video(id: "cam", limit: .quality(.high), layers: camera())
        #expect(allocator.update(estimate: 3_000_000, tracks: [low], now: 0)["cam"]?.layer == q)
        #expect(allocator.update(estimate: 3_000_000, tracks: [high], now: tick)["cam"]?.layer == f)
        #expect(allocator.update(estimate: 3_000_000, tracks: [low], now: 2 * tick)["cam"]?.layer == q)
        // Lowering the limit is not a downgrade for bandwidth: raising it again is immediate.
        #expect(allocator.update(estimate: 3_000_000, tracks: [high], now: 3 * tick)["cam"]?.layer == f)
    }

    @Test func theSameCallsGiveTheSameAllocations() {
        let tracks: [SubscribedTrack] = [
            .video(id: "screen", priority: .screenShare, layers: camera()),
            .video(id: "cam1", layers: camera()),
            .video(id: "cam2", priority: .activeSpeaker, layers: camera()),
        ]
        var listed = Trace(tracks: tracks)
        var reversed = Trace(tracks: tracks.reversed())
        listed.run(from: 0, to: 30 * second, estimate: noisy(1_800_000, spread: 0.4, seed: 9))
        reversed.run(from: 0, to: 30 * second, estimate: noisy(1_800_000, spread: 0.4, seed: 9))
        #expect(listed.log.count == reversed.log.count)
        for (one, other) in zip(listed.log, reversed.log) {
            for track in tracks { #expect(one.allocation[track.id] == other.allocation[track.id]) }
        }
    }
}
