/// One track a subscriber receives, as the allocator sees it at one update: what the subscriber
/// asked for and what the publisher sends. Bitrates are bits per second.
public struct SubscribedTrack: Sendable, Equatable {
    public enum Media: Sendable, Equatable {
        /// Audio is never paused: its bitrate (0 when not yet measured) is reserved first.
        case audio(bitrate: Int)
        /// The publisher's spatial layers, lowest first (index = spatial layer id), and the
        /// subscriber's limit on them.
        case video(layers: [PublishedLayer], limit: LayerLimit)
    }

    /// The SFU's track id (a publication's track sid); ties within a priority class are broken by
    /// it, so the allocation does not depend on the order tracks are listed in.
    public var id: String
    public var priority: TrackPriority
    /// False when the subscriber unsubscribed, disabled the track or its tile is hidden: it gets
    /// nothing and its state is forgotten.
    public var isWanted: Bool
    public var media: Media

    public init(id: String, priority: TrackPriority = .other, isWanted: Bool = true, media: Media) {
        self.id = id
        self.priority = priority
        self.isWanted = isWanted
        self.media = media
    }

    public static func audio(id: String, bitrate: Int = 0, isWanted: Bool = true) -> SubscribedTrack {
        SubscribedTrack(id: id, isWanted: isWanted, media: .audio(bitrate: bitrate))
    }

    public static func video(
        id: String, priority: TrackPriority = .other, limit: LayerLimit = .quality(.high), layers: [PublishedLayer],
        isWanted: Bool = true
    ) -> SubscribedTrack {
        SubscribedTrack(id: id, priority: priority, isWanted: isWanted, media: .video(layers: layers, limit: limit))
    }
}

/// Which tracks are served first, both for the lowest layers and for upgrades.
public enum TrackPriority: Int, Sendable, Equatable, CaseIterable {
    case screenShare
    case activeSpeaker
    case other
}

/// The subscriber's ceiling on a video track: it never gets a spatial layer above it, whatever
/// the bandwidth.
public enum LayerLimit: Sendable, Equatable {
    /// low, medium, high: spatial layer 0, 1, 2 (or the top layer the publisher has).
    case quality(VideoQuality)
    /// The size the video is shown at (device pixels): the smallest layer that covers it, or the
    /// top layer when none does or the dimensions are not known.
    case tile(width: Int, height: Int)
}

public enum VideoQuality: Int, Sendable, Equatable, CaseIterable {
    case low, medium, high
}

/// One spatial (simulcast) layer as the publisher sends it.
public struct PublishedLayer: Sendable, Equatable {
    public var width: Int?
    public var height: Int?
    /// False when the publisher does not send it (its encoder dropped it, or dynacast turned it
    /// off): the allocator never picks it.
    public var isActive: Bool
    /// Measured bitrate per temporal layer, cumulative: [T0, T0+T1, T0+T1+T2]; one entry for a
    /// stream without temporal layers (H.264). A 0 is "not measured yet": the allocator assumes
    /// a default for the resolution (see `LayerLadder`).
    public var temporalBitrates: [Int]

    public init(width: Int? = nil, height: Int? = nil, isActive: Bool = true, temporalBitrates: [Int]) {
        self.width = width
        self.height = height
        self.isActive = isActive
        self.temporalBitrates = temporalBitrates.isEmpty ? [0] : temporalBitrates
    }
}
