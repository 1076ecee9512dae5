/// A token bucket: `burst` requests at once, refilled at `perSecond`. Not thread-safe by design:
/// each participant's bucket is owned by its room actor.
public struct TokenBucket: Sendable {
    public let perSecond: Double
    public let burst: Double
    private var tokens: Double
    private var updatedAt: Duration

    public init(perSecond: Double, burst: Int, now: Duration) {
        self.perSecond = perSecond
        self.burst = Double(max(burst, 1))
        self.tokens = self.burst
        self.updatedAt = now
    }

    /// Refilled to its burst by `now`: the same as a new bucket.
    public func isFull(now: Duration) -> Bool {
        guard perSecond > 0 else { return true }
        let (seconds, attoseconds) = (now - updatedAt).components
        return tokens + (Double(seconds) + Double(attoseconds) / 1e18) * perSecond >= burst
    }

    /// Takes one token if there is one. A non-positive rate means unlimited.
    public mutating func take(now: Duration) -> Bool {
        guard perSecond > 0 else { return true }
        let elapsed = now - updatedAt
        if elapsed > .zero {
            let (seconds, attoseconds) = elapsed.components
            let elapsedSeconds = Double(seconds) + Double(attoseconds) / 1e18
            tokens = min(burst, tokens + elapsedSeconds * perSecond)
            updatedAt = now
        }
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
