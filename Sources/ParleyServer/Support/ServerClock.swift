import Foundation
import NIOConcurrencyHelpers

/// Time as the server sees it. Injected so timers (empty rooms, resume windows, rate limits) are
/// tested by advancing a manual clock instead of sleeping.
public protocol ServerClock: Sendable {
    /// Monotonic time since an arbitrary origin.
    func now() -> Duration
    /// Wall-clock milliseconds since the Unix epoch, for timestamps clients see.
    func wallMilliseconds() -> Int64
    func sleep(for duration: Duration) async throws
}

public struct SystemClock: ServerClock {
    private let origin = ContinuousClock.now

    public init() {}

    public func now() -> Duration { ContinuousClock.now - origin }

    public func wallMilliseconds() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }

    public func sleep(for duration: Duration) async throws {
        try await Task.sleep(for: duration)
    }
}

/// A clock that moves only when told: `advance(by:)` wakes every sleeper whose deadline has come.
public final class ManualClock: ServerClock {
    private struct Sleeper {
        let deadline: Duration
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var now: Duration = .zero
        var wallOrigin: Int64
        var sleepers: [UInt64: Sleeper] = [:]
        var nextID: UInt64 = 0
    }

    private let state: NIOLockedValueBox<State>

    public init(wallMilliseconds: Int64 = Int64(Date().timeIntervalSince1970 * 1000)) {
        state = NIOLockedValueBox(State(wallOrigin: wallMilliseconds))
    }

    public func now() -> Duration { state.withLockedValue { $0.now } }

    public func wallMilliseconds() -> Int64 {
        state.withLockedValue { $0.wallOrigin + $0.now.milliseconds }
    }

    /// How many tasks are sleeping on this clock: lets a test wait until a timer is armed.
    public var sleeperCount: Int { state.withLockedValue { $0.sleepers.count } }

    public func sleep(for duration: Duration) async throws {
        let id = state.withLockedValue { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let resumeNow = state.withLockedValue { state -> Bool in
                    if Task.isCancelled { return true }
                    let deadline = state.now + duration
                    if deadline <= state.now { return true }
                    state.sleepers[id] = Sleeper(deadline: deadline, continuation: continuation)
                    return false
                }
                if resumeNow {
                    if Task.isCancelled { continuation.resume(throwing: CancellationError()) } else { continuation.resume() }
                }
            }
        } onCancel: {
            let sleeper = state.withLockedValue { $0.sleepers.removeValue(forKey: id) }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    public func advance(by duration: Duration) {
        let due = state.withLockedValue { state -> [Sleeper] in
            state.now += duration
            let now = state.now
            let dueIDs = state.sleepers.filter { $0.value.deadline <= now }.map(\.key)
            return dueIDs.compactMap { state.sleepers.removeValue(forKey: $0) }
        }
        for sleeper in due.sorted(by: { $0.deadline < $1.deadline }) { sleeper.continuation.resume() }
    }
}

private extension Duration {
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
