import NIOConcurrencyHelpers

/// Counts live signaling sessions, so shutdown can wait for them to flush their last frames
/// (`room.closed`) before the listener closes the sockets.
final class SessionCounter: Sendable {
    private let count = NIOLockedValueBox(0)

    func started() { count.withLockedValue { $0 += 1 } }
    func ended() { count.withLockedValue { $0 -= 1 } }
    var active: Int { count.withLockedValue { $0 } }

    /// The signaling rate buckets of sessions whose connection went, kept for the resume window:
    /// a client cannot refill its bucket by dropping and resuming.
    private let heldBuckets = NIOLockedValueBox<[String: (bucket: TokenBucket, at: Duration)]>([:])

    /// `sid`'s bucket as its last connection left it, or nil.
    func resumeBucket(of sid: String) -> TokenBucket? {
        heldBuckets.withLockedValue { $0.removeValue(forKey: sid)?.bucket }
    }

    func holdBucket(_ bucket: TokenBucket, of sid: String, now: Duration, window: Duration) {
        heldBuckets.withLockedValue { held in
            held[sid] = (bucket, now)
            // Past the resume window a session cannot come back: its bucket goes.
            if held.count > 256 { held = held.filter { now - $0.value.at <= window } }
        }
    }

    /// Returns once no session is live, or after `timeout`.
    func waitUntilIdle(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while active > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}
