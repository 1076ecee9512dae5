/// The publisher's side of adaptive video: layers no one receives are not worth encoding and
/// sending, so the SFU tells the publisher to turn them off.
public enum Dynacast {
    /// The spatial layers (0 = lowest) the publisher should send, given every need for the track:
    /// each subscriber's `VideoAllocation.neededSpatialLayer` and any other consumer's layer (a
    /// recorder's, say). A need above the top layer asks for the top. When anything is needed
    /// the lowest layer is too: every downgrade and resume lands on it. Empty: nothing is needed.
    public static func layersToSend(needs: some Sequence<Int>, layerCount: Int) -> Set<Int> {
        guard layerCount > 0 else { return [] }
        var layers = Set(needs.map { min(max($0, 0), layerCount - 1) })
        if !layers.isEmpty { layers.insert(0) }
        return layers
    }
}
