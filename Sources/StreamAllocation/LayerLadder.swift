/// A spatial and a temporal layer of one video track (0 = lowest of each).
public struct LayerSelection: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var spatial: Int
    public var temporal: Int

    public init(spatial: Int, temporal: Int) {
        self.spatial = spatial
        self.temporal = temporal
    }

    public var description: String { "S\(spatial)T\(temporal)" }

    func isBelowOrEqual(_ other: LayerSelection) -> Bool {
        spatial < other.spatial || (spatial == other.spatial && temporal <= other.temporal)
    }
}

/// The steps one video track can be given, cheapest first: every temporal layer of the lowest
/// active spatial layer (dropping frame rate is the last thing tried before pausing), then each
/// higher active spatial layer within the limit at its full frame rate (a sharper picture at a
/// third of the frame rate looks worse than the layer below at the full rate).
struct LayerLadder: Equatable {
    struct Step: Equatable {
        var layer: LayerSelection
        /// What the allocator counts: never less than the step below, so going up never frees
        /// bandwidth (measurements are noisy; a layer can briefly read cheaper than the one below).
        var bitrate: Int
    }

    var steps: [Step]
    /// The highest spatial layer the subscriber's limit allows, counted over all the publisher's
    /// layers (sent or not): dynacast asks for layers by it.
    var limitLayer: Int

    init(layers: [PublishedLayer], limit: LayerLimit) {
        limitLayer = Self.limitLayer(layers: layers, limit: limit)
        steps = []
        var floor = 0
        for (spatial, layer) in layers.enumerated() where spatial <= limitLayer && layer.isActive {
            let bitrates = Self.bitrates(of: layer, spatial: spatial)
            let temporals = steps.isEmpty ? Array(bitrates.indices) : [bitrates.count - 1]
            for temporal in temporals {
                floor = max(floor, bitrates[temporal])
                steps.append(Step(layer: LayerSelection(spatial: spatial, temporal: temporal), bitrate: floor))
            }
        }
    }

    /// The highest step at or below `layer`, nil when every step is above it.
    func index(atOrBelow layer: LayerSelection) -> Int? {
        steps.lastIndex { $0.layer.isBelowOrEqual(layer) }
    }

    static func limitLayer(layers: [PublishedLayer], limit: LayerLimit) -> Int {
        let top = max(layers.count - 1, 0)
        switch limit {
        case .quality(let quality):
            return min(quality.rawValue, top)
        case .tile(let width, let height):
            return layers.firstIndex { layer in
                guard let layerWidth = layer.width, let layerHeight = layer.height else { return false }
                return layerWidth >= width && layerHeight >= height
            } ?? top
        }
    }

    /// The layer's cumulative bitrates with every unmeasured (0) entry filled in: from a measured
    /// higher temporal layer when there is one, else from the default for its resolution.
    static func bitrates(of layer: PublishedLayer, spatial: Int) -> [Int] {
        let measured = layer.temporalBitrates
        let shares = temporalShares(count: measured.count)
        var full = Double(defaultBitrate(width: layer.width, height: layer.height, spatial: spatial))
        if let known = measured.lastIndex(where: { $0 > 0 }) {
            full = Double(measured[known]) / shares[known]
        }
        return measured.indices.map { measured[$0] > 0 ? measured[$0] : Int((full * shares[$0]).rounded()) }
    }

    /// Cumulative shares of the full rate per temporal layer: the split libwebrtc's VP8 encoder
    /// uses (40/20/40 % for three layers, 60/40 % for two).
    static func temporalShares(count: Int) -> [Double] {
        switch count {
        case 1: [1.0]
        case 2: [0.6, 1.0]
        case 3: [0.4, 0.6, 1.0]
        default: (1...max(count, 1)).map { Double($0) / Double(count) }
        }
    }

    /// What a layer not measured yet is assumed to need, near what Chromium's simulcast sends for
    /// the size; by position when the size is not known (q, h, f of a 960x540 camera).
    static func defaultBitrate(width: Int?, height: Int?, spatial: Int) -> Int {
        guard let width, let height, width > 0, height > 0 else {
            return [150_000, 500_000, 1_500_000][min(spatial, 2)]
        }
        let pixels = width * height
        let table: [(pixels: Int, bitrate: Int)] = [
            (320 * 180, 150_000), (480 * 270, 250_000), (640 * 360, 500_000),
            (960 * 540, 1_200_000), (1280 * 720, 2_000_000), (1920 * 1080, 3_500_000),
        ]
        return table.first { pixels <= $0.pixels }?.bitrate ?? 5_000_000
    }
}
