@testable import Congestion
import Testing

/// Probing on the simulated links of `EstimatorTraceTests`, the sender sending the padding the
/// pacer asks for through the same queue: a link that comes back is found in seconds rather
/// than tens of them, and a link that is full is neither kept full nor over-estimated. (Random
/// loss and a short buffer, with probing, are among `EstimatorTraceTests`.)
@Suite struct ProbeTraceTests {
    static func fallsAndComesBack(_ time: Int64) -> Double { time < 20_000_000 || time >= 40_000_000 ? 3_000_000 : 300_000 }

    @Test(arguments: [2_500_000, 4_000_000])
    func aLinkBackFrom300KilobitsTo3MegabitsIsFoundWithinEightSeconds(wanted: Int) {
        var trace = Trace(link: SimulatedLink(capacity: Self.fallsAndComesBack), initialBitrate: 1_000_000, probingFor: wanted)
        trace.run(seconds: 60)
        let down = trace.firstTime(after: 20) { $0 < 400_000 } ?? .infinity
        #expect(down - 20 < 3, "below 400 kbit/s at \(down) s")
        let held = trace.meanEstimate(from: 25, to: 40)
        #expect(held > 0.6 * 300_000 && held < 1.15 * 300_000, "on 300 kbit/s: \(held)")
        // Without probing: 22.5 s.
        let up = trace.firstTime(after: 40) { $0 > 1_500_000 } ?? .infinity
        #expect(up - 40 < 8, "above 1.5 Mbit/s at \(up) s")
        // And it stays up, below the link.
        let after = trace.estimates.filter { Double($0.at) > (up + 1) * 1e6 }.map(\.bitrate)
        #expect((after.min() ?? 0) > 1_500_000 && (after.max() ?? .max) < 3_300_000, "then \(after.min() ?? 0)-\(after.max() ?? 0)")
    }

    @Test func aFourHundredKilobitLinkIsNeitherKeptFullNorOverEstimated() {
        var plain = Trace(link: SimulatedLink { _ in 400_000 }, initialBitrate: 1_000_000)
        plain.run(seconds: 30)
        var trace = Trace(link: SimulatedLink { _ in 400_000 }, initialBitrate: 1_000_000, probingFor: 2_500_000)
        trace.run(seconds: 30)
        #expect(trace.probes.count >= 5, "\(trace.probes.count) probes")
        let settled = trace.meanEstimate(from: 10, to: 30)
        #expect(settled > 0.95 * plain.meanEstimate(from: 10, to: 30) && settled < 1.1 * 400_000, "settled at \(settled)")
        let high = trace.estimates.filter { $0.at > 5_000_000 && $0.bitrate > 480_000 }
        #expect(high.count <= trace.estimates.count / 50, "above 1.2x the link in \(high.count) of \(trace.estimates.count)")
        let late = trace.link.queueDelays.filter { $0.at > 15_000_000 }.map(\.delay).sorted()
        #expect(late[late.count * 95 / 100] < 150_000, "queue p95 \(late[late.count * 95 / 100]) µs")
        // Probes the link could not carry measured it, and lifted nothing above it.
        for probe in trace.probes {
            #expect(probe.result.saturated && probe.result.bitrate <= 400_000, "\(probe.result)")
            #expect(probe.after <= max(probe.before, 400_000), "\(probe.before) -> \(probe.after) on \(probe.result)")
        }
    }

    @Test func startingOnAThreeMegabitLinkReachesTwoMegabitsWithinThreeSeconds() {
        var trace = Trace(link: SimulatedLink { _ in 3_000_000 }, initialBitrate: 1_000_000, probingFor: 4_000_000)
        trace.run(seconds: 20)
        // Without probing: 9.6 s.
        let up = trace.firstTime(after: 0) { $0 >= 2_000_000 } ?? .infinity
        #expect(up < 3, "2 Mbit/s at \(up) s")
        let settled = trace.meanEstimate(from: 5, to: 20)
        #expect(settled > 2_000_000 && settled < 3_300_000, "settled at \(settled)")
    }
}

/// The pieces on their own: the pacer's arithmetic, the controller's decisions, and a cluster
/// measured from one feedback.
@Suite struct ProbeTests {
    @Test func thePacerSpreadsAClusterOverTicksAndCountsMedia() {
        var pacer = ProbePacer(tickInterval: 20_000)
        #expect(pacer.paddingBytes(now: 0) == 0)
        pacer.start(ProbeCluster(id: 1, bitrate: 3_000_000, duration: 40_000, minPackets: 5), at: 1_000_000)
        #expect(pacer.paddingBytes(now: 1_000_000) == 7_500)  // a tick's worth ahead
        for _ in 0..<5 { pacer.packetSent(size: 1_200) }
        pacer.packetSent(size: 1_000)  // media sent meanwhile counts too
        #expect(pacer.paddingBytes(now: 1_020_000) == 15_000 - 7_000)
        for _ in 0..<7 { pacer.packetSent(size: 1_200) }
        #expect(pacer.activeCluster == nil && pacer.paddingBytes(now: 1_040_000) == 0)
    }

    static func update(estimate: Int, usage: DelayBasedEstimator.Usage = .normal, probe: ProbeResult? = nil) -> SendSideEstimator.Update {
        SendSideEstimator.Update(
            estimate: estimate, delayBased: estimate, lossBased: estimate, ackedBitrate: nil, lossFraction: 0, usage: usage, probe: probe)
    }

    @Test func theControllerProbesAtStartThenFurtherWhileTheLinkCarriesIt() throws {
        var controller = ProbeController(initialBitrate: 1_000_000)
        controller.want(bitrate: 8_000_000)
        let nextFirst = controller.nextCluster(now: 0)
        let first = try #require(nextFirst)
        #expect(first.bitrate == 3_000_000 && first.minPackets == 5 && first.bytes >= 5 * 1_200)
        #expect(controller.nextCluster(now: 20_000) == nil, "one at a time")
        let carried = ProbeResult(clusterID: first.id, target: first.bitrate, bitrate: 2_850_000, saturated: false, applied: true)
        controller.estimateUpdated(Self.update(estimate: 2_850_000, probe: carried), now: 300_000)
        let nextSecond = controller.nextCluster(now: 300_000)
        let second = try #require(nextSecond)
        #expect(second.bitrate == 6_000_000)
        let full = ProbeResult(clusterID: second.id, target: second.bitrate, bitrate: 3_800_000, saturated: true, applied: true)
        controller.estimateUpdated(Self.update(estimate: 3_800_000, probe: full), now: 600_000)
        // The link is full: the next probe waits for the periodic one, twice as long as usual.
        #expect(controller.nextCluster(now: 3_700_000) == nil)
        let nextPeriodic = controller.nextCluster(now: 6_700_000)
        let periodic = try #require(nextPeriodic)
        #expect(periodic.bitrate == 7_600_000)
    }

    @Test func theControllerDoesNotProbeAFallingEstimateAndCapsALittleAboveTheWant() throws {
        var controller = ProbeController(ProbeController.Configuration(initialProbes: []), initialBitrate: 500_000)
        controller.want(bitrate: 800_000)
        controller.estimateUpdated(Self.update(estimate: 400_000, usage: .overusing), now: 1_000_000)
        #expect(controller.nextCluster(now: 2_000_000) == nil, "backing off after the drop")
        let nextCluster = controller.nextCluster(now: 2_600_000)
        let cluster = try #require(nextCluster)
        #expect(cluster.bitrate == 800_000)
        // At 1,200-byte packets, five of them take longer than the cluster's 20 ms.
        #expect(cluster.duration == 60_000)
        // Just short of the want: probed again, a little above it.
        controller.estimateUpdated(Self.update(estimate: 790_000), now: 3_000_000)
        // (The first probe's result never came: timed out, the wait grew to 5 s.)
        #expect(controller.nextCluster(now: 7_000_000) == nil)
        let nextAbove = controller.nextCluster(now: 7_700_000)
        let above = try #require(nextAbove)
        #expect(above.bitrate == 1_000_000)
        controller.estimateUpdated(Self.update(estimate: 950_000), now: 7_900_000)
        #expect(controller.nextCluster(now: 20_000_000) == nil, "the want is met")
    }

    @Test func smallRisesOfTheWantDoNotHurryProbesAndALinkJustUnderTheWantIsProbedLessOften() throws {
        var controller = ProbeController(ProbeController.Configuration(initialProbes: []), initialBitrate: 500_000)
        controller.want(bitrate: 1_000_000)
        let nextFirst = controller.nextCluster(now: 0)
        let first = try #require(nextFirst)
        #expect(first.bitrate == 1_000_000)
        // The link delivers 95 % of the want: carried, but the estimate stays under the want.
        let short = ProbeResult(clusterID: first.id, target: first.bitrate, bitrate: 950_000, saturated: true, applied: true)
        controller.estimateUpdated(Self.update(estimate: 950_000, probe: short), now: 100_000)
        // The want creeps up 5 % (publishers' bitrates move): not a reason to probe within 1 s.
        controller.want(bitrate: 1_050_000)
        #expect(controller.nextCluster(now: 1_200_000) == nil)
        // The sequence ended short of the want: the wait grew from 3 s to the most, 5 s.
        #expect(controller.nextCluster(now: 3_100_000) == nil)
        let nextSecond = controller.nextCluster(now: 5_100_000)
        let second = try #require(nextSecond)
        #expect(second.bitrate == 1_312_500, "1.25x the want")
        // No result (lost on the full link): timed out, the next waits the 5 s again.
        #expect(controller.nextCluster(now: 6_200_000) == nil)
        #expect(controller.nextCluster(now: 10_000_000) == nil)
        let nextThird = controller.nextCluster(now: 10_200_000)
        #expect(nextThird != nil)
        // A real rise of the want is probed after the minimum interval.
        controller.want(bitrate: 1_400_000)
        let nextRaised = controller.nextCluster(now: 11_300_000)
        let raised = try #require(nextRaised)
        #expect(raised.bitrate == 1_750_000)
    }

    @Test func aClusterOfPaddingIsSizedToPaddingPackets() throws {
        var controller = ProbeController(ProbeController.Configuration(initialProbes: []), initialBitrate: 100_000)
        controller.want(bitrate: 400_000)
        let nextCluster = controller.nextCluster(now: 0, packetSize: 275)
        let cluster = try #require(nextCluster)
        // Five padding packets at 200 kbit/s take 55 ms (five media packets would take 240 ms).
        #expect(cluster.bitrate == 200_000 && cluster.duration == 55_000 && cluster.bytes == 1_375)
    }

    /// Sends `count` packets of `cluster` at one instant (the sender's tick), then feedback with
    /// arrivals `spacing` apart; returns the update.
    static func burst(
        _ estimator: inout SendSideEstimator, cluster: ProbeCluster?, count: Int, spacing: Int64
    ) throws -> SendSideEstimator.Update {
        var recorder = TWCCRecorder(senderSSRC: 1, mediaSSRC: 2)
        for index in 0..<count {
            let sequence = estimator.packetSent(size: 1_200, at: 1_000_000, probeCluster: cluster)
            recorder.packetArrived(sequenceNumber: sequence, arrivalMicroseconds: 1_030_000 + Int64(index) * spacing)
        }
        let feedback = try #require(recorder.makeFeedback().first)
        return estimator.feedbackReceived(feedback, now: 1_100_000)
    }

    @Test func aBurstTheLinkCarriesLiftsTheEstimateToItsTarget() throws {
        var estimator = SendSideEstimator(.init(initialBitrate: 500_000))
        let cluster = ProbeCluster(id: 7, bitrate: 2_000_000, duration: 20_000, minPackets: 5)
        // 1,200 bytes every 1 ms: a 9.6 Mbit/s link, faster than the probe.
        let update = try Self.burst(&estimator, cluster: cluster, count: 5, spacing: 1_000)
        #expect(update.probe == ProbeResult(clusterID: 7, target: 2_000_000, bitrate: 1_900_000, saturated: false, applied: true))
        #expect(update.estimate == 1_900_000)
    }

    @Test func aBurstTheLinkCannotCarryLowersNothingAndRaisesNothing() throws {
        var probed = SendSideEstimator(.init(initialBitrate: 1_000_000))
        var plain = probed
        let cluster = ProbeCluster(id: 3, bitrate: 4_000_000, duration: 20_000, minPackets: 5)
        // 1,200 bytes every 24 ms: a 400 kbit/s link.
        let update = try Self.burst(&probed, cluster: cluster, count: 10, spacing: 24_000)
        let result = try #require(update.probe)
        #expect(result.saturated && result.bitrate == 380_000)
        #expect(update.estimate == (try Self.burst(&plain, cluster: nil, count: 10, spacing: 24_000)).estimate)
    }
}
