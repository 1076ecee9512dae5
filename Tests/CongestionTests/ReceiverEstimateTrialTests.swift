import Congestion
import Testing

/// A REMB-only subscriber (aiortc, a GStreamer player) behind a link of some capacity, in 100 ms
/// steps: its receive-side estimate follows libwebrtc's rules (at most 1.5 × incoming + 10 kb/s,
/// up 8 % a second, 0.85 × incoming on overuse); the SFU sends 40 kb/s of audio and a 100 kb/s
/// video when the allocation fits it with a 15 % margin, else pauses the video.
struct ReceiverEstimateTrialTests {
    struct Run {
        var videoOnFraction: Double
        var firstVideoAt: Double?
        var trial: ReceiverEstimateTrial
    }

    static func simulate(capacity: Int, seconds: Int, trial: inout ReceiverEstimateTrial, withTrial: Bool = true) -> Run {
        let audio = 40_000
        let video = 100_000
        let needed = audio + video * 115 / 100
        var remb = 77_000  // the clamp of audio alone: the video was paused
        var videoOn = false
        var onSteps = 0
        var firstVideoAt: Double?
        let steps = seconds * 10
        for step in 0..<steps {
            let now = Int64(step) * 100_000
            let sending = audio + (videoOn ? video : 0)
            let incoming = min(sending, capacity)
            if sending > capacity {
                remb = incoming * 85 / 100
            } else {
                remb = min(remb + remb * 8 / 1000, incoming * 3 / 2 + 10_000)
            }
            if withTrial { trial.update(receiverEstimate: remb, sending: sending, upgradeGoal: videoOn ? nil : needed, now: now) }
            let available = withTrial ? trial.available(receiverEstimate: remb) : remb
            videoOn = available >= (videoOn ? audio + video : needed)
            if videoOn {
                onSteps += 1
                if firstVideoAt == nil { firstVideoAt = Double(step) / 10 }
            }
        }
        return Run(videoOnFraction: Double(onSteps) / Double(steps), firstVideoAt: firstVideoAt, trial: trial)
    }

    @Test func withoutATrialAPausedREMBSubscriberNeverGetsItsVideoBack() {
        var trial = ReceiverEstimateTrial()
        let run = Self.simulate(capacity: 5_000_000, seconds: 60, trial: &trial, withTrial: false)
        #expect(run.firstVideoAt == nil)
    }

    @Test func onAWideLinkTheVideoComesBackAtOnceAndStays() {
        var trial = ReceiverEstimateTrial()
        let run = Self.simulate(capacity: 5_000_000, seconds: 60, trial: &trial)
        #expect(run.firstVideoAt.map { $0 < 1 } ?? false, "video back at \(run.firstVideoAt ?? -1) s")
        #expect(run.videoOnFraction > 0.98)
        #expect(run.trial.failures == 0 && run.trial.goal == nil, "the receiver's own estimate carries it")
    }

    @Test func onALinkTooNarrowForTheVideoTrialsBackOffAndTheAudioIsMostlyLeftAlone() {
        var trial = ReceiverEstimateTrial()
        let run = Self.simulate(capacity: 100_000, seconds: 120, trial: &trial)
        #expect(run.trial.failures >= 3)
        // Trials of about 4 s, 5, 10, 20, 40 and 60 s apart.
        #expect(run.videoOnFraction < 0.3, "video on \(run.videoOnFraction * 100) % of the time")
        #expect(run.trial.trials <= 6)
    }

    @Test func nothingIsTriedWhileTheReceiverIsCongestedOrNothingIsWanted() {
        var trial = ReceiverEstimateTrial()
        trial.update(receiverEstimate: 90_000, sending: 100_000, upgradeGoal: 200_000, now: 0)
        #expect(trial.goal == nil, "a REMB below what is sent is congestion")
        trial.update(receiverEstimate: 150_000, sending: 100_000, upgradeGoal: nil, now: 1)
        #expect(trial.goal == nil)
        trial.update(receiverEstimate: 150_000, sending: 100_000, upgradeGoal: 120_000, now: 2)
        #expect(trial.goal == nil, "the REMB already allows the upgrade")
        trial.update(receiverEstimate: 150_000, sending: 100_000, upgradeGoal: 300_000, now: 3)
        #expect(trial.goal == 300_000 && trial.available(receiverEstimate: 150_000) == 315_000)
    }

    @Test func aTrialFollowsAMovingNeedALittleButTakesTheNextStepOnlyOnceThisOneIsCarried() {
        var trial = ReceiverEstimateTrial()
        trial.update(receiverEstimate: 150_000, sending: 100_000, upgradeGoal: 200_000, now: 0)
        trial.update(receiverEstimate: 160_000, sending: 100_000, upgradeGoal: 240_000, now: 100_000)
        #expect(trial.goal == 240_000, "the layer's bitrate moved: the trial follows")
        // The allocator took the step and wants the next layer: not before the receiver shows it.
        trial.update(receiverEstimate: 170_000, sending: 240_000, upgradeGoal: 600_000, now: 200_000)
        #expect(trial.goal == 240_000)
        trial.update(receiverEstimate: 250_000, sending: 240_000, upgradeGoal: 600_000, now: 300_000)
        #expect(trial.goal == nil, "carried: this trial ends")
        trial.update(receiverEstimate: 300_000, sending: 240_000, upgradeGoal: 600_000, now: 400_000)
        #expect(trial.goal == 600_000, "and the next step is a trial of its own")
    }
}
