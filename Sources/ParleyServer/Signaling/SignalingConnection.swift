import NIOConcurrencyHelpers
import NIOWebSocket

/// The outgoing side of one signaling connection: a bounded queue of text frames that a writer
/// task drains into the WebSocket. Rooms enqueue without waiting, so one slow client never
/// stalls a room; a client whose queue overflows is disconnected (it may resume and catch up
/// through `chat.history`).
public final class SignalingConnection: ParticipantChannel {
    public typealias CloseReason = ChannelCloseReason

    public let id: UInt64
    public let frames: AsyncStream<String>
    private let continuation: AsyncStream<String>.Continuation
    private let closeReason = NIOLockedValueBox<CloseReason?>(nil)

    private static let counter = NIOLockedValueBox<UInt64>(0)

    /// Bytes queued and not yet written: bounded as well as the frames, as a few large frames
    /// (chat history pages, offers) can hold as much memory as thousands of small ones.
    private let queuedBytes = NIOLockedValueBox(0)
    private let byteLimit: Int

    public init(limit: Int, byteLimit: Int = .max) {
        id = Self.counter.withLockedValue { value in
            value += 1
            return value
        }
        self.byteLimit = byteLimit
        (frames, continuation) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingOldest(limit))
    }

    /// Queues a frame. Returns false when the connection is closed or its queue overflowed, in
    /// which case it is now closing.
    @discardableResult
    public func send(_ text: String) -> Bool {
        let size = text.utf8.count
        let overflows = queuedBytes.withLockedValue { queued in
            guard queued + size <= byteLimit else { return true }
            queued += size
            return false
        }
        if overflows {
            close(.overflow)
            return false
        }
        switch continuation.yield(text) {
        case .enqueued: return true
        case .dropped:
            close(.overflow)
            return false
        case .terminated: return false
        @unknown default: return false
        }
    }

    /// Ends the connection once what is queued has been written.
    public func close(_ reason: CloseReason) {
        closeReason.withLockedValue { current in
            if current == nil { current = reason }
        }
        continuation.finish()
    }

    public var requestedClose: CloseReason? { closeReason.withLockedValue { $0 } }

    /// The writer took a frame off the queue.
    func written(_ text: String) {
        let size = text.utf8.count
        queuedBytes.withLockedValue { $0 -= size }
    }

    public var bytesQueued: Int { queuedBytes.withLockedValue { $0 } }

    /// The WebSocket close code and reason to send for the close that was requested.
    var closeFrame: (WebSocketErrorCode, String?) {
        switch requestedClose {
        case .normal(let reason): (.normalClosure, reason)
        case .policy(let reason): (.policyViolation, reason)
        case .goingAway(let reason): (.goingAway, reason)
        case .overflow: (.policyViolation, "slow_consumer")
        case nil: (.normalClosure, nil)
        }
    }
}
