/// What a playback-only subscriber (a WHEP player) receives in the few m-lines its offer has:
/// one participant it follows (pinned, or the active speaker) in the first m-line of each kind,
/// other participants' tracks in any further ones.
///
/// Switching follows speech with hysteresis: the followed participant keeps the picture while it
/// is still speaking, and while nobody else is; so a room where two talk at once does not flap.
public enum PlaybackSelection {
    /// A track the room has, in the order its participants joined.
    public struct Track: Sendable, Equatable {
        public var participant: String
        public var track: String
        public var kind: String

        public init(participant: String, track: String, kind: String) {
            self.participant = participant
            self.track = track
            self.kind = kind
        }
    }

    /// The participant to follow now. `pinned` (asked for by the player) wins, present or not (the
    /// player waits for it). Else the current one while it speaks; else the loudest speaker that
    /// publishes; else the current one while it publishes; else the first publisher with video,
    /// then any publisher.
    public static func followed(current: String?, pinned: String?, speakers: [String], tracks: [Track]) -> String? {
        if let pinned { return pinned }
        let publishers = Set(tracks.map(\.participant))
        if let current, speakers.contains(current), publishers.contains(current) { return current }
        if let speaker = speakers.first(where: publishers.contains) { return speaker }
        if let current, publishers.contains(current) { return current }
        return tracks.first { $0.kind == "video" }?.participant ?? tracks.first?.participant
    }

    /// The tracks wanted for `count` m-lines of `kind`, best first: the followed participant's,
    /// then the speakers' (loudest first), then everyone else's in join order.
    public static func wanted(kind: String, count: Int, followed: String?, speakers: [String], tracks: [Track]) -> [String] {
        let ofKind = tracks.filter { $0.kind == kind }
        func rank(_ track: Track) -> Int {
            if track.participant == followed { return 0 }
            if let position = speakers.firstIndex(of: track.participant) { return 1 + position }
            return 1 + speakers.count
        }
        // A stable sort keeps join order within a rank.
        let ranked = ofKind.enumerated().sorted { (rank($0.element), $0.offset) < (rank($1.element), $1.offset) }
        return Array(ranked.prefix(max(count, 0)).map(\.element.track))
    }

    /// Assigns `wanted` (best first) to m-lines that hold `current`: the first m-line always takes
    /// the best track (it shows whom the player follows); the others keep a track that is still
    /// wanted, so a change elsewhere does not move it; free ones take what is left, in order.
    public static func assign(current: [String?], wanted: [String]) -> [String?] {
        guard !current.isEmpty else { return [] }
        var result = [String?](repeating: nil, count: current.count)
        var left = wanted
        if let best = left.first {
            result[0] = best
            left.removeFirst()
        }
        for index in current.indices.dropFirst() {
            if let track = current[index], let position = left.firstIndex(of: track) {
                result[index] = track
                left.remove(at: position)
            }
        }
        for index in result.indices.dropFirst() where result[index] == nil && !left.isEmpty {
            result[index] = left.removeFirst()
        }
        return result
    }
}
