import Foundation
import HummingbirdWSClient
import Logging
import NIOSSL
import NIOConcurrencyHelpers
import ParleyProtocol

/// One frame from the server: its `type`, `re` and raw JSON, decodable into the message it holds.
public struct ServerFrame: Sendable, CustomStringConvertible {
    public let type: String
    public let re: String?
    public let text: String

    public init(type: String, re: String?, text: String) {
        self.type = type
        self.re = re
        self.text = text
    }

    public func decode<M: SignalMessage>(_ type: M.Type) throws -> M {
        try SignalCodec().decode(M.self, from: text)
    }

    public var description: String { text }

    /// The server's offer on the subscriber transport and the id its answer must name; nil for
    /// any other frame.
    public var subscriberOffer: (id: String, sdp: String)? {
        guard type == OfferMessage.type,
            let json = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any],
            json["target"] as? String == TransportTarget.subscriber.rawValue,
            let sdp = json["sdp"] as? String, let id = json["id"] as? String
        else { return nil }
        return (id, sdp)
    }
}

public enum SignalingClientError: Error, CustomStringConvertible {
    case connectFailed(String)
    case closed
    case timedOut(String)
    case serverError(ErrorReply)

    public var description: String {
        switch self {
        case .connectFailed(let reason): "could not connect: \(reason)"
        case .closed: "the connection is closed"
        case .timedOut(let what): "timed out waiting for \(what)"
        case .serverError(let reply): "server answered \(reply.code.rawValue): \(reply.message)"
        }
    }
}

/// A signaling connection to a Parley server (`/v1/rtc`). Frames arrive in an inbox that callers
/// read in order or by what they wait for; requests get ids and their replies are matched by `re`.
public final class SignalingClient: Sendable {
    private let inbox = Inbox<ServerFrame>()
    private let writer = NIOLockedValueBox<WebSocketOutboundWriter?>(nil)
    private let nextID = NIOLockedValueBox(0)
    private let runTask = NIOLockedValueBox<Task<Void, Never>?>(nil)
    private let codec = SignalCodec()

    private init() {}

    /// Connects with `token`; `resume` names a participant sid to resume. Returns once the
    /// WebSocket is open (the `joined` frame, or an `error`, is the first thing in the inbox).
    /// `tls`: for `wss://` to a server whose certificate the system does not trust (a dev or
    /// private CA); nil uses the system's trust store.
    public static func connect(
        url: String, token: String, resume: String? = nil, tls: TLSConfiguration? = nil, logger: Logger = Logger(label: "parley.client")
    ) async throws -> SignalingClient {
        let client = SignalingClient()
        var full = url.hasSuffix("/v1/rtc") ? url : url.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + "/v1/rtc"
        full += "?token=\(token)"
        if let resume { full += "&resume=\(resume)" }
        let task = try await ClientWebSocket.open(url: full, configuration: .init(maxFrameSize: 4 << 20), tls: tls, logger: logger) { outbound in
            client.writer.withLockedValue { $0 = outbound }
        } onText: { text in
            await client.inbox.put(client.frame(text))
        } onEnd: { closeFrame in
            await client.inbox.finish(closeCode: closeFrame.map { "\($0.closeCode)" }, normal: closeFrame?.closeCode == .normalClosure)
            client.writer.withLockedValue { $0 = nil }
        }
        client.runTask.withLockedValue { $0 = task }
        return client
    }

    private func frame(_ text: String) -> ServerFrame {
        let header = try? codec.decodeHeader(Data(text.utf8)).get()
        return ServerFrame(type: header?.type ?? "", re: header?.re, text: text)
    }

    /// Sends a raw text frame (tests use it for malformed input).
    public func sendRaw(_ text: String) async throws {
        guard let writer = writer.withLockedValue({ $0 }) else { throw SignalingClientError.closed }
        try await writer.write(.text(text))
    }

    /// Sends a binary frame.
    public func sendBinary(_ bytes: [UInt8]) async throws {
        guard let writer = writer.withLockedValue({ $0 }) else { throw SignalingClientError.closed }
        try await writer.write(.binary(.init(bytes: bytes)))
    }

    /// Sends a message without an id (no reply expected).
    public func send<M: SignalMessage>(_ message: M) async throws {
        try await sendRaw(codec.encodeRequest(message, id: nil))
    }

    /// Sends a request and waits for the frame that answers it (`re` = its id); an `error`
    /// answer is thrown.
    public func request<M: SignalMessage>(_ message: M, timeout: Duration = .seconds(10)) async throws -> ServerFrame {
        let id = nextID.withLockedValue { value -> String in
            value += 1
            return "c\(value)"
        }
        try await sendRaw(codec.encodeRequest(message, id: id))
        let reply = try await next(timeout: timeout, "a reply to \(M.type) \(id)") { $0.re == id }
        if reply.type == ErrorReply.type { throw SignalingClientError.serverError(try reply.decode(ErrorReply.self)) }
        return reply
    }

    /// The first frame in the inbox that matches, waiting up to `timeout` for it.
    public func next(
        timeout: Duration = .seconds(10), _ what: String = "a frame", where matches: @escaping @Sendable (ServerFrame) -> Bool = { _ in true }
    ) async throws -> ServerFrame {
        try await inbox.take(where: matches, timeout: timeout, what: what)
    }

    /// The next frame of `type`, decoded.
    public func next<M: SignalMessage>(_ type: M.Type, timeout: Duration = .seconds(10)) async throws -> M {
        try await next(timeout: timeout, M.type) { $0.type == M.type }.decode(M.self)
    }

    /// Frames received and not yet taken.
    public func pending() async -> [ServerFrame] { await inbox.pending }

    /// Whether the server has closed the connection, and with what code.
    public func closed(timeout: Duration = .seconds(10)) async -> String?? {
        await inbox.waitClosed(timeout: timeout)
    }

    /// Whether the server ended the connection with a normal close, as it does when it ends a
    /// session on purpose (leave, kick, room closed, resumed elsewhere); false for a dropped one.
    public func closedNormally() async -> Bool { await inbox.closedNormally }

    /// Closes the WebSocket normally.
    public func close() async {
        if let writer = writer.withLockedValue({ $0 }) {
            try? await writer.close(.normalClosure, reason: nil)
        }
        await inbox.waitClosed(timeout: .seconds(5))
        runTask.withLockedValue { $0 }?.cancel()
    }

    /// Drops the TCP connection without a close handshake, as a lost network does.
    public func drop() async {
        runTask.withLockedValue { $0 }?.cancel()
        await inbox.waitClosed(timeout: .seconds(5))
    }
}

/// Frames received, in order, with waiters for ones not yet here. Shared by the signaling client
/// and the tools' Janus client.
public actor Inbox<Frame: Sendable> {
    private var frames: [Frame] = []
    private var waiters: [UInt64: (matches: @Sendable (Frame) -> Bool, continuation: CheckedContinuation<Frame, any Error>)] = [:]
    private var closeWaiters: [CheckedContinuation<Void, Never>] = []
    private var nextWaiter: UInt64 = 0
    public private(set) var closeCode: String?? = nil
    public private(set) var closedNormally = false

    public init() {}

    public var pending: [Frame] { frames }

    public func put(_ frame: Frame) {
        for (id, waiter) in waiters.sorted(by: { $0.key < $1.key }) where waiter.matches(frame) {
            waiters[id] = nil
            waiter.continuation.resume(returning: frame)
            return
        }
        frames.append(frame)
    }

    public func finish(closeCode: String?, normal: Bool = false) {
        self.closeCode = .some(closeCode)
        closedNormally = normal
        for waiter in waiters.values { waiter.continuation.resume(throwing: SignalingClientError.closed) }
        waiters.removeAll()
        for waiter in closeWaiters { waiter.resume() }
        closeWaiters.removeAll()
    }

    public func take(where matches: @escaping @Sendable (Frame) -> Bool, timeout: Duration, what: String) async throws -> Frame {
        if let index = frames.firstIndex(where: matches) { return frames.remove(at: index) }
        if closeCode != nil { throw SignalingClientError.closed }
        nextWaiter += 1
        let id = nextWaiter
        let timer = Task {
            try await Task.sleep(for: timeout)
            self.expire(id, what: what)
        }
        defer { timer.cancel() }
        // A cancelled caller stops waiting at once (a test's time limit, a room that is left).
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                if Task.isCancelled {
                    continuation.resume(throwing: CancellationError())
                } else {
                    waiters[id] = (matches, continuation)
                }
            }
        } onCancel: {
            Task { await self.cancelWaiter(id) }
        }
    }

    private func expire(_ id: UInt64, what: String) {
        waiters.removeValue(forKey: id)?.continuation.resume(throwing: SignalingClientError.timedOut(what))
    }

    private func cancelWaiter(_ id: UInt64) {
        waiters.removeValue(forKey: id)?.continuation.resume(throwing: CancellationError())
    }

    @discardableResult
    public func waitClosed(timeout: Duration) async -> String?? {
        if closeCode != nil { return closeCode }
        let timer = Task {
            try await Task.sleep(for: timeout)
            self.releaseCloseWaiters()
        }
        await withCheckedContinuation { closeWaiters.append($0) }
        timer.cancel()
        return closeCode
    }

    private func releaseCloseWaiters() {
        for waiter in closeWaiters { waiter.resume() }
        closeWaiters.removeAll()
    }
}
