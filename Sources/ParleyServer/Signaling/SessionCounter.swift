import NIOConcurrencyHelpers

/// Counts live signaling sessions, so shutdown can wait for them to flush their last frames
/// (`room.closed`) before the listener closes the sockets.
final class SessionCounter: Sendable {
    private let count = NIOLockedValueBox(0)

    func started() { count.withLockedValue { $0 += 1 } }
    func ended() { count.withLockedValue { $0 -= 1 } }
    var active: Int { count.withLockedValue { $0 } }

    /// Returns once no session is live, or after `timeout`.
    func waitUntilIdle(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while active > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}
