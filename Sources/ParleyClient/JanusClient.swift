import Foundation
import NIOConcurrencyHelpers
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Janus's HTTP API (the VideoRoom plugin), so the load tester can drive a peer SFU with the
/// same synthetic participants: a session, one handle per PeerConnection, requests whose
/// answers and JSEP come back as events on the session's long poll.
final class JanusClient: @unchecked Sendable {
    struct JanusError: Error, CustomStringConvertible {
        let description: String
    }

    let base: URL
    let session: UInt64
    /// Every participant holds a long poll open: the shared session's six connections per host
    /// would leave requests queued behind them.
    static let http: URLSession = {
        let configuration = URLSessionConfiguration.default
        configuration.httpMaximumConnectionsPerHost = 10_000
        configuration.timeoutIntervalForRequest = 60
        return URLSession(configuration: configuration)
    }()
    private let events = NIOLockedValueBox<[[String: Any]]>([])
    private let closed = NIOLockedValueBox(false)
    private var poller: Task<Void, Never>?

    private init(base: URL, session: UInt64) {
        self.base = base
        self.session = session
    }

    static func connect(base: URL) async throws -> JanusClient {
        let reply = try await post(base, ["janus": "create"])
        guard let data = reply["data"] as? [String: Any], let id = (data["id"] as? NSNumber)?.uint64Value else {
            throw JanusError(description: "create: \(reply)")
        }
        let client = JanusClient(base: base, session: id)
        client.poller = Task { await client.poll() }
        return client
    }

    func close() async {
        closed.withLockedValue { $0 = true }
        _ = try? await Self.post(base.appendingPathComponent("\(session)"), ["janus": "destroy"])
        poller?.cancel()
    }

    func attach() async throws -> UInt64 {
        let reply = try await Self.post(base.appendingPathComponent("\(session)"), ["janus": "attach", "plugin": "janus.plugin.videoroom"])
        guard let data = reply["data"] as? [String: Any], let id = (data["id"] as? NSNumber)?.uint64Value else {
            throw JanusError(description: "attach: \(reply)")
        }
        return id
    }

    /// Tells Janus this handle has no more candidates to trickle (it waits for that before DTLS).
    func trickleCompleted(handle: UInt64) async throws {
        _ = try await Self.post(base.appendingPathComponent("\(session)/\(handle)"), ["janus": "trickle", "candidate": ["completed": true]])
    }

    /// Sends a plugin request; returns the synchronous answer (`success`) or, for asynchronous
    /// ones (`ack`), the event that answers it.
    func request(handle: UInt64, _ body: [String: Any], jsep: [String: Any]? = nil, timeout: Duration = .seconds(15)) async throws -> [String: Any] {
        let transaction = UUID().uuidString
        var message: [String: Any] = ["janus": "message", "body": body, "transaction": transaction]
        if let jsep { message["jsep"] = jsep }
        let reply = try await Self.post(base.appendingPathComponent("\(session)/\(handle)"), message)
        if reply["janus"] as? String == "success" { return reply }
        guard reply["janus"] as? String == "ack" else { throw JanusError(description: "\(body["request"] ?? "request"): \(reply)") }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let found = events.withLockedValue { events -> [String: Any]? in
                guard let index = events.firstIndex(where: { $0["transaction"] as? String == transaction }) else { return nil }
                return events.remove(at: index)
            }
            if let found { return found }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw JanusError(description: "no answer to \(body["request"] ?? "request") within \(timeout)")
    }

    private func poll() async {
        var components = URLComponents(url: base.appendingPathComponent("\(session)"), resolvingAgainstBaseURL: false)!
        components.queryItems = [URLQueryItem(name: "maxev", value: "10")]
        while !closed.withLockedValue({ $0 }), !Task.isCancelled {
            guard let (data, _) = try? await Self.http.data(from: components.url!) else {
                try? await Task.sleep(for: .milliseconds(100))
                continue
            }
            let parsed = try? JSONSerialization.jsonObject(with: data)
            let batch = (parsed as? [[String: Any]]) ?? ((parsed as? [String: Any]).map { [$0] } ?? [])
            events.withLockedValue { $0 += batch.filter { $0["janus"] as? String != "keepalive" } }
        }
    }

    static func post(_ url: URL, _ body: [String: Any]) async throws -> [String: Any] {
        var message = body
        if message["transaction"] == nil { message["transaction"] = UUID().uuidString }
        var request = URLRequest(url: url)
        request.httpMethod = "POST"
        request.httpBody = try JSONSerialization.data(withJSONObject: message)
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        let (data, _) = try await http.data(for: request)
        guard let reply = try JSONSerialization.jsonObject(with: data) as? [String: Any] else { throw JanusError(description: "not JSON") }
        if reply["janus"] as? String == "error" { throw JanusError(description: "\(reply["error"] ?? reply)") }
        return reply
    }

    /// The VideoRoom part of an event or answer.
    static func plugin(_ reply: [String: Any]) -> [String: Any] {
        ((reply["plugindata"] as? [String: Any])?["data"] as? [String: Any]) ?? [:]
    }
}
