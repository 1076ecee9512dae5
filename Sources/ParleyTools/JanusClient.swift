import Foundation
import HummingbirdWSClient
import Logging
import NIOConcurrencyHelpers
import ParleyClient

/// Janus's WebSocket API (subprotocol `janus-protocol`) for the VideoRoom plugin, so the load
/// tester can drive a peer SFU with the same synthetic participants: a session on a socket of its
/// own, one handle per PeerConnection, and requests whose answers (`success`, or for asynchronous
/// ones the plugin's `event` with its JSEP) come back on the socket with the request's transaction.
final class JanusClient: Sendable {
    struct JanusError: Error, CustomStringConvertible {
        let description: String
    }

    /// One message from Janus: what it is (`success`, `ack`, `event`, `error`, …), the
    /// transaction it answers and its JSON text.
    struct Frame: Sendable {
        let janus: String
        let transaction: String?
        let text: String

        init?(_ text: String) {
            guard let json = Self.json(text), let janus = json["janus"] as? String else { return nil }
            self.janus = janus
            transaction = json["transaction"] as? String
            self.text = text
        }

        var json: [String: Any] { Self.json(text) ?? [:] }

        private static func json(_ text: String) -> [String: Any]? {
            (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]
        }

        /// Whether a request waits for it. Janus acknowledges a `message` before the plugin's
        /// event answers it, and keepalives only to keep the session; events with no
        /// transaction (webrtcup, media, hangup, other publishers) are nobody's answer.
        var answers: Bool {
            guard let transaction, !transaction.hasPrefix("keepalive-") else { return false }
            return !(janus == "ack" && transaction.hasPrefix("message-"))
        }
    }

    /// Janus drops a session after 60 s without a request (`session_timeout`).
    static let keepaliveInterval = Duration.seconds(25)

    private let inbox = Inbox<Frame>()
    private let writer = NIOLockedValueBox<WebSocketOutboundWriter?>(nil)
    private let runTask = NIOLockedValueBox<Task<Void, Never>?>(nil)
    private let keepalive = NIOLockedValueBox<Task<Void, Never>?>(nil)
    private let sessionID = NIOLockedValueBox<UInt64?>(nil)
    private let nextTransaction = NIOLockedValueBox(0)

    private init() {}

    /// The session, once `create` has answered.
    var session: UInt64 { sessionID.withLockedValue { $0 } ?? 0 }

    /// Opens a socket to `url` (e.g. ws://127.0.0.1:8188) and creates a session on it.
    static func connect(url: String, logger: Logger = Logger(label: "parley.janus")) async throws -> JanusClient {
        let client = JanusClient()
        let task = try await ClientWebSocket.open(
            url: url, configuration: .init(maxFrameSize: 4 << 20, additionalHeaders: [.init("Sec-WebSocket-Protocol")!: "janus-protocol"]),
            logger: logger
        ) { outbound in
            client.writer.withLockedValue { $0 = outbound }
        } onText: { text in
            if let frame = Frame(text), frame.answers { await client.inbox.put(frame) }
        } onEnd: { _ in
            await client.inbox.finish(closeCode: nil)
            client.writer.withLockedValue { $0 = nil }
        }
        client.runTask.withLockedValue { $0 = task }
        do {
            let reply = try await client.call("create", [:])
            guard let data = reply["data"] as? [String: Any], let id = (data["id"] as? NSNumber)?.uint64Value else {
                throw JanusError(description: "create: \(reply)")
            }
            client.sessionID.withLockedValue { $0 = id }
        } catch {
            await client.close()
            throw error
        }
        client.keepalive.withLockedValue {
            $0 = Task { [weak client] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: keepaliveInterval)
                    guard let client else { return }
                    try? await client.send(client.message("keepalive", [:]))
                }
            }
        }
        return client
    }

    /// Destroys the session and closes the socket.
    func close() async {
        keepalive.withLockedValue { $0 }?.cancel()
        if sessionID.withLockedValue({ $0 }) != nil { _ = try? await call("destroy", [:], timeout: .seconds(2)) }
        if let writer = writer.withLockedValue({ $0 }) { try? await writer.close(.normalClosure, reason: nil) }
        await inbox.waitClosed(timeout: .seconds(5))
        runTask.withLockedValue { $0 }?.cancel()
    }

    func attach() async throws -> UInt64 {
        let reply = try await call("attach", ["plugin": "janus.plugin.videoroom"])
        guard let data = reply["data"] as? [String: Any], let id = (data["id"] as? NSNumber)?.uint64Value else {
            throw JanusError(description: "attach: \(reply)")
        }
        return id
    }

    /// Tells Janus this handle has no more candidates to trickle (it waits for that before DTLS).
    func trickleCompleted(handle: UInt64) async throws {
        _ = try await call("trickle", ["handle_id": handle, "candidate": ["completed": true]])
    }

    /// Sends a plugin request; returns the synchronous answer (`success`) or, for asynchronous
    /// ones (acknowledged first), the event that answers it.
    func request(handle: UInt64, _ body: [String: Any], jsep: [String: Any]? = nil, timeout: Duration = .seconds(15)) async throws -> [String: Any] {
        var fields: [String: Any] = ["handle_id": handle, "body": body]
        if let jsep { fields["jsep"] = jsep }
        return try await call("message", fields, what: "\(body["request"] ?? "request")", timeout: timeout)
    }

    /// The VideoRoom part of an event or answer.
    static func plugin(_ reply: [String: Any]) -> [String: Any] {
        ((reply["plugindata"] as? [String: Any])?["data"] as? [String: Any]) ?? [:]
    }

    /// Sends a `janus` request and waits for the message that answers its transaction; an `error` is thrown.
    private func call(_ janus: String, _ fields: [String: Any], what: String? = nil, timeout: Duration = .seconds(15)) async throws -> [String: Any] {
        let message = message(janus, fields)
        let transaction = message["transaction"] as! String
        try await send(message)
        let what = what ?? janus
        let reply: Frame
        do {
            reply = try await inbox.take(where: { $0.transaction == transaction }, timeout: timeout, what: "Janus's answer to \(what)")
        } catch {
            throw JanusError(description: "\(what): \(error)")
        }
        let json = reply.json
        if reply.janus == "error" { throw JanusError(description: "\(what): \(json["error"] ?? json)") }
        return json
    }

    /// A request with a fresh transaction (named for its kind, so replies can be sorted) and the session.
    private func message(_ janus: String, _ fields: [String: Any]) -> [String: Any] {
        let number = nextTransaction.withLockedValue { value -> Int in
            value += 1
            return value
        }
        var message = fields
        message["janus"] = janus
        message["transaction"] = "\(janus)-\(number)"
        if let session = sessionID.withLockedValue({ $0 }) { message["session_id"] = session }
        return message
    }

    private func send(_ message: [String: Any]) async throws {
        guard let writer = writer.withLockedValue({ $0 }) else { throw JanusError(description: "the Janus socket is closed") }
        try await writer.write(.text(String(decoding: JSONSerialization.data(withJSONObject: message), as: UTF8.self)))
    }
}
