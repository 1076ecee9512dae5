/// Lets a subscriber that reports only REMB get video back after a pause.
///
/// A receive-side estimator never reports much above what it receives: libwebrtc's and aiortc's
/// clamp their estimate at 1.5 times the incoming rate plus 10 kb/s. Once an SFU paused a REMB
/// subscriber's video, what it receives is audio alone, so its REMB can never show room for the
/// video again. A REMB at that clamp (well above what is sent) means "not congested", not "no
/// more room": the trial then hands the allocator the goal of its next upgrade, and keeps it
/// while the receiver shows no congestion. A receiver's estimate climbs slowly (8 % a second)
/// towards a new incoming rate; one that stops climbing while still below what is sent is
/// congested (overuse holds it or brings it down), which ends the trial, and the next one waits
/// a backoff that doubles with each failure.
///
/// Pure: times in microseconds on the caller's clock, bitrates in bits per second.
public struct ReceiverEstimateTrial: Sendable {
    public struct Configuration: Sendable, Equatable {
        /// A REMB at least this multiple of the sending rate shows a receiver held by its clamp.
        public var uncongestedRatio: Double
        /// Below this multiple of the sending rate, a receiver whose estimate stalls is congested.
        public var congestedRatio: Double
        /// A climbing estimate grows by at least this fraction over each `stallWindow`.
        public var minimumClimb: Double
        public var stallWindow: Int64
        public var initialBackoff: Int64
        public var maxBackoff: Int64
        /// While a trial runs, its goal follows the need up by at most this fraction (a layer's
        /// measured bitrate moving); a bigger need is the next step, tried once this one is carried.
        public var maximumGoalDrift: Double

        public init(
            uncongestedRatio: Double = 1.2, congestedRatio: Double = 0.9, minimumClimb: Double = 0.05, stallWindow: Int64 = 2_000_000,
            initialBackoff: Int64 = 5_000_000, maxBackoff: Int64 = 60_000_000, maximumGoalDrift: Double = 0.25
        ) {
            self.maximumGoalDrift = maximumGoalDrift
            self.uncongestedRatio = uncongestedRatio
            self.congestedRatio = congestedRatio
            self.minimumClimb = minimumClimb
            self.stallWindow = stallWindow
            self.initialBackoff = initialBackoff
            self.maxBackoff = maxBackoff
        }
    }

    public let configuration: Configuration
    /// The goal being tried, nil between trials.
    public private(set) var goal: Int?
    /// The goal the current trial started with: the bound of its drift.
    private var startGoal = 0
    /// The estimate at the start of the current stall window, and when that began.
    private var checkpoint: (estimate: Int, at: Int64) = (0, 0)
    private var nextTrialAt: Int64 = .min
    private var backoff: Int64
    public private(set) var trials = 0
    public private(set) var failures = 0

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        backoff = configuration.initialBackoff
    }

    /// Takes the latest REMB, the rate of what it measures (the video) sent to the subscriber
    /// over the last window, and the
    /// estimate the allocator's next upgrade needs (nil: none wanted).
    public mutating func update(receiverEstimate: Int, sending: Int, upgradeGoal: Int?, now: Int64) {
        if var goal {
            // The need moves as measured bitrates do: the trial follows it a little. Escalating
            // to the next step before the receiver carries this one would hand the allocator
            // rates nobody has shown the link takes.
            if let upgradeGoal, upgradeGoal > goal, Double(upgradeGoal) <= Double(startGoal) * (1 + configuration.maximumGoalDrift) {
                goal = upgradeGoal
                self.goal = goal
            }
            if receiverEstimate >= goal {
                // The receiver's own estimate carries the new rate: the trial worked.
                self.goal = nil
                backoff = configuration.initialBackoff
            } else if now - checkpoint.at >= configuration.stallWindow {
                let climbing = Double(receiverEstimate) >= Double(checkpoint.estimate) * (1 + configuration.minimumClimb)
                if !climbing, Double(receiverEstimate) < Double(sending) * configuration.congestedRatio {
                    self.goal = nil
                    failures += 1
                    nextTrialAt = now + backoff
                    backoff = min(backoff * 2, configuration.maxBackoff)
                } else {
                    checkpoint = (receiverEstimate, now)
                }
            }
            return
        }
        guard let upgradeGoal, upgradeGoal > receiverEstimate, now >= nextTrialAt,
            Double(receiverEstimate) >= Double(sending) * configuration.uncongestedRatio
        else { return }
        goal = upgradeGoal
        startGoal = upgradeGoal
        checkpoint = (receiverEstimate, now)
        trials += 1
    }

    /// What the allocator may spend: the REMB, or while a trial runs its goal with
    /// 5 % to spare, so that measurement noise does not undo the upgrade being made.
    public func available(receiverEstimate: Int) -> Int {
        max(receiverEstimate, goal.map { $0 + $0 / 20 } ?? 0)
    }
}
