/// Chooses, for one subscriber, which layer of each video track to forward so that everything
/// fits the subscriber's bandwidth estimate. One per subscriber; the SFU calls `update` whenever
/// the estimate, a track, its layers or its measured bitrates change, or on a timer (a few times a
/// second), and applies the video decisions that differ from the last ones.
///
/// Semantics:
/// - Audio is reserved first and never paused. Video gets the rest.
/// - Placement: every video track gets its lowest step in priority order (screen share, active
///   speaker, other; ties by id), then tracks are raised one step at a time, a class before the
///   next, round-robin within a class. A track never goes above its `LayerLimit`, and never
///   onto a layer the publisher does not send. The steps (`LayerLadder`) drop the lowest layer's
///   temporal layers before pausing; higher spatial layers are taken at the full frame rate.
/// - Down at once: when what is forwarded no longer fits the estimate, the placement is redone
///   within it, capped at what each track has now.
/// - Up with hysteresis: an upgrade (a resume included) is made only when the lowest estimate
///   seen over `upgradeHold` fits the upgraded placement with `upgradeMargin` to spare, and not
///   within `upgradeHoldAfterDowngrade` of a downgrade. A noisy estimate therefore does not move
///   the layers up and down.
/// - A track the allocator has not placed before (new, newly wanted, its layers back after
///   none were sent, or its limit raised) is placed at once, as high as fits with the margin.
/// - Deterministic: the same calls with the same inputs give the same allocations, whatever the
///   order of the tracks.
///
/// Pure: no clock and no I/O. Times are microseconds on the caller's monotonic clock (as in
/// `Congestion`'s estimator, whose estimate feeds this); bitrates are bits per second.
public struct StreamAllocator: Sendable {
    public struct Configuration: Sendable, Equatable {
        /// An upgrade needs the estimate to exceed the upgraded placement by this fraction.
        public var upgradeMargin: Double
        /// How long the estimate must have allowed an upgrade before it is made (µs).
        public var upgradeHold: Int64
        /// No upgrade sooner than this after a downgrade (µs): the estimate that just fell is
        /// not trusted at once.
        public var upgradeHoldAfterDowngrade: Int64
        /// Counted for an audio track whose bitrate is not measured yet (Opus with its headers).
        public var defaultAudioBitrate: Int

        public init(
            upgradeMargin: Double = 0.15, upgradeHold: Int64 = 1_500_000, upgradeHoldAfterDowngrade: Int64 = 3_000_000,
            defaultAudioBitrate: Int = 48_000
        ) {
            self.upgradeMargin = upgradeMargin
            self.upgradeHold = upgradeHold
            self.upgradeHoldAfterDowngrade = upgradeHoldAfterDowngrade
            self.defaultAudioBitrate = defaultAudioBitrate
        }
    }

    /// What the allocator remembers of a video track it placed.
    private struct Placed: Sendable {
        /// nil: paused for bandwidth (it resumes only through an upgrade).
        var layer: LayerSelection?
        var limitLayer: Int
    }

    /// A wanted video track with a layer to send, during one update.
    private struct Candidate {
        var inputIndex: Int
        var id: String
        var priority: TrackPriority
        var ladder: LayerLadder
        /// The step it has now, moved down onto this update's ladder; nil when paused.
        var current: Int?
        /// Not placed before: placed at once (with the margin) rather than through an upgrade.
        var isFresh: Bool

        func cost(_ step: Int?) -> Int { step.map { ladder.steps[$0].bitrate } ?? 0 }
        var top: Int { ladder.steps.count - 1 }
    }

    public let configuration: Configuration
    private var placed: [String: Placed] = [:]
    /// An upgrade the estimate has allowed since `since`; `lowestEstimate` is the least estimate
    /// seen since, which is what the upgrade is sized by.
    private var pendingUpgrade: (since: Int64, lowestEstimate: Int)?
    private var lastDowngrade: Int64?
    public private(set) var allocation = Allocation()

    public init(_ configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// Places every track within `estimate` (bits per second) at time `now` (µs) and returns the
    /// allocation (also kept in `allocation`). `tracks` is every track the subscriber has.
    @discardableResult
    public mutating func update(estimate: Int, tracks: [SubscribedTrack], now: Int64) -> Allocation {
        var audio = 0
        for track in tracks where track.isWanted {
            if case .audio(let bitrate) = track.media {
                audio += bitrate > 0 ? bitrate : configuration.defaultAudioBitrate
            }
        }
        let available = estimate - audio

        var candidates: [Candidate] = []
        var unplaced: [Int: VideoAllocation] = [:]
        // Tracks gone, unwanted or without layers are forgotten: back, they are placed afresh.
        let previous = placed
        placed = [:]
        for (index, track) in tracks.enumerated() {
            guard case .video(let layers, let limit) = track.media else { continue }
            guard track.isWanted else {
                unplaced[index] = VideoAllocation(id: track.id, decision: .paused(.notWanted), bitrate: 0, neededSpatialLayer: nil)
                continue
            }
            let ladder = LayerLadder(layers: layers, limit: limit)
            guard !ladder.steps.isEmpty else {
                unplaced[index] = VideoAllocation(id: track.id, decision: .paused(.noActiveLayer), bitrate: 0, neededSpatialLayer: 0)
                continue
            }
            var candidate = Candidate(inputIndex: index, id: track.id, priority: track.priority, ladder: ladder, current: nil, isFresh: true)
            if let before = previous[track.id], before.limitLayer >= ladder.limitLayer {
                if let layer = before.layer {
                    candidate.current = ladder.index(atOrBelow: layer)
                    // Every layer it could have is above the one it had: place it afresh.
                    candidate.isFresh = candidate.current == nil
                } else {
                    candidate.isFresh = false
                }
            }
            candidates.append(candidate)
        }
        candidates.sort { ($0.priority.rawValue, $0.id) < ($1.priority.rawValue, $1.id) }

        // Keep what fits, down at once where it does not; fresh tracks go as high as fits with the margin.
        let margin = 1 + configuration.upgradeMargin
        var chosen = Self.distribute(
            budget: Double(available), candidates: candidates, caps: candidates.map { $0.isFresh ? $0.top : $0.current },
            scale: candidates.map { $0.isFresh ? margin : 1 })
        let downgraded = candidates.indices.contains { !candidates[$0].isFresh && Self.rank(chosen[$0]) < Self.rank(candidates[$0].current) }
        if downgraded {
            lastDowngrade = now
            pendingUpgrade = nil
        } else {
            chosen = upgrade(from: chosen, candidates: candidates, estimate: estimate, audio: audio, now: now)
        }

        var video = [VideoAllocation?](repeating: nil, count: tracks.count)
        for (index, allocation) in unplaced { video[index] = allocation }
        for (candidate, step) in zip(candidates, chosen) {
            placed[candidate.id] = Placed(layer: step.map { candidate.ladder.steps[$0].layer }, limitLayer: candidate.ladder.limitLayer)
            video[candidate.inputIndex] = Self.allocation(of: candidate, at: step)
        }
        let videoBitrate = zip(candidates, chosen).reduce(0) { $0 + $1.0.cost($1.1) }
        allocation = Allocation(
            video: video.compactMap { $0 }, audioBitrate: audio, videoBitrate: videoBitrate,
            probeGoal: pendingUpgrade == nil ? probeGoal(candidates: candidates, chosen: chosen, audio: audio, estimate: estimate) : nil)
        return allocation
    }

    /// The placement after an upgrade, when one is due; else `kept`. Tracks `pendingUpgrade`.
    private mutating func upgrade(from kept: [Int?], candidates: [Candidate], estimate: Int, audio: Int, now: Int64) -> [Int?] {
        let margin = 1 + configuration.upgradeMargin
        func placement(within estimate: Int) -> [Int?]? {
            let upgraded = Self.distribute(
                budget: Double(estimate - audio) / margin, candidates: candidates, caps: candidates.map { $0.top },
                scale: candidates.map { _ in 1 })
            return Self.isBetter(upgraded, than: kept) ? upgraded : nil
        }
        var upgraded: [Int?]?
        if let pending = pendingUpgrade, let sized = placement(within: min(pending.lowestEstimate, estimate)) {
            pendingUpgrade = (pending.since, min(pending.lowestEstimate, estimate))
            upgraded = sized
        } else if let sized = placement(within: estimate) {
            pendingUpgrade = (now, estimate)
            upgraded = sized
        } else {
            pendingUpgrade = nil
        }
        guard let upgraded, let pending = pendingUpgrade, now - pending.since >= configuration.upgradeHold,
            lastDowngrade.map({ now - $0 >= configuration.upgradeHoldAfterDowngrade }) ?? true
        else { return kept }
        pendingUpgrade = nil
        return upgraded
    }

    /// Places `candidates` (in priority order) within `budget`: the lowest step for each in turn,
    /// then one step at a time, round-robin within a priority class, a class before the next.
    /// Never above `caps` (nil: stays paused); a candidate's costs count `scale` times over.
    private static func distribute(budget: Double, candidates: [Candidate], caps: [Int?], scale: [Double]) -> [Int?] {
        var chosen = [Int?](repeating: nil, count: candidates.count)
        var spent = 0.0
        func cost(_ index: Int, _ step: Int?) -> Double { Double(candidates[index].cost(step)) * scale[index] }
        for index in candidates.indices where caps[index] != nil && spent + cost(index, 0) <= budget {
            chosen[index] = 0
            spent += cost(index, 0)
        }
        for priority in TrackPriority.allCases {
            let members = candidates.indices.filter { candidates[$0].priority == priority }
            var raised = true
            while raised {
                raised = false
                for index in members {
                    guard let step = chosen[index], let cap = caps[index], step < cap else { continue }
                    let more = cost(index, step + 1) - cost(index, step)
                    if spent + more <= budget {
                        chosen[index] = step + 1
                        spent += more
                        raised = true
                    }
                }
            }
        }
        return chosen
    }

    /// -1 for paused, so that steps compare.
    private static func rank(_ step: Int?) -> Int { step ?? -1 }

    /// Better in priority order: the first track (highest priority) that differs is higher.
    private static func isBetter(_ placement: [Int?], than other: [Int?]) -> Bool {
        for (mine, theirs) in zip(placement, other) where mine != theirs {
            return rank(mine) > rank(theirs)
        }
        return false
    }

    /// The estimate the next upgrade needs: the first paused track's lowest step, else the first
    /// track's next step, in priority order (the order upgrades are made in).
    private func probeGoal(candidates: [Candidate], chosen: [Int?], audio: Int, estimate: Int) -> Int? {
        let total = zip(candidates, chosen).reduce(0) { $0 + $1.0.cost($1.1) }
        let resume = candidates.indices.first { chosen[$0] == nil }
        let raise = candidates.indices.first { index in chosen[index].map { step in step < candidates[index].top } ?? false }
        guard let index = resume ?? raise else { return nil }
        let step = chosen[index].map { $0 + 1 } ?? 0
        let needed = Double(total - candidates[index].cost(chosen[index]) + candidates[index].cost(step))
        let goal = Int((needed * (1 + configuration.upgradeMargin)).rounded(.up)) + audio
        // At or under the estimate, the upgrade waits on the hold, not on bandwidth.
        return goal > estimate ? goal : nil
    }

    private static func allocation(of candidate: Candidate, at step: Int?) -> VideoAllocation {
        guard let step else {
            return VideoAllocation(id: candidate.id, decision: .paused(.bandwidth), bitrate: 0, neededSpatialLayer: 0)
        }
        let layer = candidate.ladder.steps[step].layer
        let nextSent = candidate.ladder.steps.first { $0.layer.spatial > layer.spatial }?.layer.spatial
        return VideoAllocation(
            id: candidate.id, decision: .forward(layer), bitrate: candidate.ladder.steps[step].bitrate,
            neededSpatialLayer: nextSent ?? min(layer.spatial + 1, candidate.ladder.limitLayer))
    }
}
