/// What one subscriber gets at one update. Bitrates are bits per second.
public struct Allocation: Sendable, Equatable {
    /// One entry per video track, in the order the tracks were given.
    public var video: [VideoAllocation]
    /// Reserved for the wanted audio tracks before any video is placed.
    public var audioBitrate: Int
    /// The sum of the chosen video layers' bitrates.
    public var videoBitrate: Int
    /// The estimate the next upgrade would need, when the estimate is what blocks it (nil when
    /// every track is at its limit, or an upgrade is only waiting out the hold): the SFU may
    /// probe up to it. Margin and audio included.
    public var probeGoal: Int?

    public init(video: [VideoAllocation] = [], audioBitrate: Int = 0, videoBitrate: Int = 0, probeGoal: Int? = nil) {
        self.video = video
        self.audioBitrate = audioBitrate
        self.videoBitrate = videoBitrate
        self.probeGoal = probeGoal
    }

    public subscript(id: String) -> VideoAllocation? {
        video.first { $0.id == id }
    }
}

public struct VideoAllocation: Sendable, Equatable {
    public enum Decision: Sendable, Equatable {
        /// Forward this layer: the down-track switches to it at the next keyframe (spatial) or
        /// frame (temporal).
        case forward(LayerSelection)
        /// Forward nothing.
        case paused(PauseReason)
    }

    public var id: String
    public var decision: Decision
    /// The chosen layer's bitrate as counted (0 when paused).
    public var bitrate: Int
    /// For dynacast: the highest spatial layer this subscriber needs the publisher to send,
    /// which is the chosen layer's or, below the limit, the next one up (an upgrade must not wait
    /// on a layer the publisher turned off because nobody was receiving it). 0 when paused
    /// (resuming needs the lowest layer); nil when the track is not wanted.
    public var neededSpatialLayer: Int?

    public init(id: String, decision: Decision, bitrate: Int, neededSpatialLayer: Int?) {
        self.id = id
        self.decision = decision
        self.bitrate = bitrate
        self.neededSpatialLayer = neededSpatialLayer
    }

    /// The layer forwarded, nil when paused.
    public var layer: LayerSelection? {
        if case .forward(let layer) = decision { return layer }
        return nil
    }
}

public enum PauseReason: Sendable, Equatable {
    /// Even the lowest layer does not fit the estimate (or has not yet fit it with the margin
    /// long enough to resume).
    case bandwidth
    /// The subscriber does not want the track.
    case notWanted
    /// The publisher sends no layer within the subscriber's limit.
    case noActiveLayer
}
