import Auth
import Foundation
import Logging
import Testing
import ParleyClient
import ParleyProtocol
@testable import ParleyServer
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

enum TestServerError: Error {
    case notListening(String)
}

/// A real server on a free loopback port with its own database, for integration tests.
final class TestServer: Sendable {
    let server: ParleyServer
    let port: Int
    let storePath: String
    private let task: Task<Void, any Error>

    static func start(
        storePath: String? = nil, clock: any ServerClock = SystemClock(), _ settings: [String] = []
    ) async throws -> TestServer {
        let path = storePath ?? FileManager.default.temporaryDirectory
            .appendingPathComponent("parley-it-\(UUID().uuidString)/parley.sqlite").path
        let config = try ParleyConfig.load(ConfigSources(
            overrides: ["server.host=127.0.0.1", "server.port=0", "store.path=\(path)", "rtc.workers=2", "rtc.port=0", "rtc.nodeIPs=127.0.0.1", "turn.port=0"] + settings, dev: true))
        var logger = Logger(label: "parley-test")
        logger.logLevel = ProcessInfo.processInfo.environment["PARLEY_TEST_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .critical
        let server = try await ParleyServer(config: config, logger: logger, clock: clock)
        let task = Task { try await server.run() }
        // Polled rather than awaited: a server whose run ends before it listens (a bind that
        // fails) must fail the test, not hang the run.
        let deadline = ContinuousClock.now + .seconds(30)
        while server.boundListeningPort == nil {
            if ContinuousClock.now > deadline {
                await server.shutdown()
                throw TestServerError.notListening("the server did not listen within 30 s")
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        return TestServer(server: server, port: server.boundListeningPort!, storePath: path, task: task)
    }

    private init(server: ParleyServer, port: Int, storePath: String, task: Task<Void, any Error>) {
        self.server = server
        self.port = port
        self.storePath = storePath
        self.task = task
    }

    var url: String { "ws://127.0.0.1:\(port)" }
    var httpURL: String { "http://127.0.0.1:\(port)" }

    /// Shuts the server down and waits for it to end; one that has not ended after `limit` is a
    /// failed test (with what it still ran), not a hung run.
    func stop(limit: Duration = .seconds(30)) async throws {
        await server.shutdown()
        let task = self.task
        let ended = await withTaskGroup(of: Bool.self) { group in
            group.addTask { _ = try? await task.value; return true }
            group.addTask { try? await Task.sleep(for: limit); return false }
            defer { group.cancelAll() }
            return await group.next() ?? false
        }
        guard ended else {
            let sessions = server.sessions.active
            Issue.record("the server did not stop within \(limit): \(sessions) signaling sessions still running")
            return
        }
        try await task.value
    }

    func token(
        _ identity: String, room: String = "standup", name: String? = nil, grants: Grants? = nil, ttl: Int64 = 600
    ) async throws -> String {
        let issuer = await TokenIssuer(apiKey: ParleyConfig.devAPIKey, secret: ParleyConfig.devAPISecret)
        // On the server's clock: a manual clock stands still while a loaded machine takes seconds
        // to start the server, and a token minted on the real one would not be valid yet.
        let now = Date(timeIntervalSince1970: Double(server.services.clock.wallMilliseconds()) / 1000)
        return try await issuer.mint(
            identity: identity, grants: grants ?? Grants(room: room, join: true, publish: true, subscribe: true, chat: true),
            name: name ?? identity.capitalized, ttl: ttl, now: now)
    }

    /// Connects and returns the client with its `joined` frame.
    func join(
        _ identity: String, room: String = "standup", grants: Grants? = nil, resume: String? = nil
    ) async throws -> (client: SignalingClient, joined: Joined) {
        let client = try await SignalingClient.connect(
            url: url, token: try await token(identity, room: room, grants: grants), resume: resume)
        let first = try await client.next()
        guard first.type == Joined.type else {
            throw SignalingClientError.serverError(try first.decode(ErrorReply.self))
        }
        return (client, try first.decode(Joined.self))
    }

    /// Sends a WebSocket upgrade request by hand and returns the status line's code and the body,
    /// so a refused upgrade's own status is seen (WebSocket clients only report that they failed).
    func upgrade(path: String) async throws -> (status: Int, body: String) {
        let port = self.port
        return try await Task.detached {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw POSIXError(.EIO) }
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
            let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            _ = request.withCString { send(fd, $0, strlen($0), 0) }
            var received = [UInt8]()
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = recv(fd, &chunk, chunk.count, 0)
                if n <= 0 { break }
                received += chunk[0..<n]
                if let text = String(bytes: received, encoding: .utf8), text.hasPrefix("HTTP/1.1 101") { break }
            }
            let text = String(decoding: received, as: UTF8.self)
            let status = Int(text.split(separator: " ").dropFirst().first ?? "") ?? 0
            let body = text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
            return (status, body)
        }.value
    }

    /// An admin HTTP call; returns the status and the decoded JSON body.
    func http(
        _ method: String, _ path: String, body: [String: Any]? = nil, token: String? = "admin"
    ) async throws -> (status: Int, json: [String: Any]) {
        var request = URLRequest(url: URL(string: httpURL + path)!)
        request.httpMethod = method
        if let token {
            let bearer = token == "admin" ? try await self.token("ops", grants: Grants(admin: true)) : token
            request.setValue("Bearer \(bearer)", forHTTPHeaderField: "Authorization")
        }
        if let body {
            request.httpBody = try JSONSerialization.data(withJSONObject: body)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let (data, response) = try await URLSession.shared.data(for: request)
        let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? ["_text": String(decoding: data, as: UTF8.self)]
        return ((response as! HTTPURLResponse).statusCode, json)
    }
}

extension SignalingClient {
    func expectNothing<M: SignalMessage>(_ type: M.Type, within duration: Duration = .milliseconds(300)) async -> Bool {
        (try? await next(type, timeout: duration)) == nil
    }
}
