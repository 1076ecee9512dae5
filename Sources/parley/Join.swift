import ArgumentParser
import Auth
import Foundation
import ParleyClient
import ParleyProtocol
import ParleyTools
import NIOSSL

/// `parley join`: one participant on the Swift SDK, for scripts, demos and tests. It publishes a
/// tone, prints what happens as JSON lines (one per event, and the audio packets received from
/// each participant every second), and reconnects as the SDK does: to the next `--url` when its
/// node is gone, to the node a draining server names.
struct Join: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Join a room as one Swift SDK participant that publishes a tone and prints events as JSON lines.")

    @Option(help: "Server URL, e.g. ws://127.0.0.1:7880; repeat it for the other nodes of a cluster") var url: [String]
    @Option(help: "Room to join") var room: String
    @Option(help: "Identity (and name) to join as") var identity: String
    @Option(help: "A join token; without one, one is minted from the API credentials") var token: String?
    @Option(help: "The tone to publish, in Hz; 0 publishes nothing") var tone = 440.0
    @Option(help: "How long to stay, e.g. 30s; until interrupted when omitted") var duration: String?
    @Option(name: .customLong("ca-file"), help: "PEM certificates to trust for wss:// (a dev or private CA); the system's otherwise")
    var caFile: String?
    @Flag(help: "Send and receive all media through a TURN relay (iceTransportPolicy relay)") var relay = false
    @Option(name: .customLong("ice-server"), help: "ICE server URLs to use instead of the server's (turn:, turns:), with --ice-username and --ice-credential")
    var iceServer: [String] = []
    @Option(name: .customLong("ice-username")) var iceUsername: String?
    @Option(name: .customLong("ice-credential")) var iceCredential: String?
    @OptionGroup var credentials: Credentials

    func run() async throws {
        guard let first = url.first else { throw ValidationError("--url is needed") }
        let length = try duration.map { text -> Duration in
            guard let value = DurationText.parse(text) else { throw ValidationError("--duration \(text) is not a duration") }
            return value
        }
        var joinToken = token
        if joinToken == nil {
            var grants = Grants(room: room)
            for name in ["join", "publish", "subscribe", "publishData"] { _ = grants.enable(name) }
            joinToken = try await credentials.issuer().mint(identity: identity, grants: grants, name: identity, ttl: 24 * 3600)
        }
        let tls = try caFile.map { path in
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(path))
            return configuration
        }
        let servers = iceServer.isEmpty ? nil : [ICEServer(urls: iceServer, username: iceUsername, credential: iceCredential)]
        let room = try await ParleyRoom.connect(
            url: first, alternateURLs: Array(url.dropFirst()), token: joinToken!, tls: tls, iceTransportPolicy: relay ? .relay : .all,
            iceServers: servers)
        Self.emit(["event": "joined", "participant": room.sid, "room": room.joined.room.name, "node": room.joined.server.node])
        let packets = PacketCounts()
        room.onMedia = { _, _, track in
            if track.kind == "audio" { packets.add(track.participantSid) }
        }
        if tone > 0 { try await room.publishTone(frequency: tone) }
        let reporter = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                let counts = packets.take()
                let names = Dictionary(room.participants.map { ($0.sid, $0.identity) }, uniquingKeysWith: { a, _ in a })
                var audio: [String: Int] = [:]
                for (sid, count) in counts { audio[names[sid] ?? sid, default: 0] += count }
                Self.emit(["event": "media", "audio": audio])
            }
        }
        let ender = Task {
            if let length { try? await Task.sleep(for: length) } else { try? await Task.sleep(for: .seconds(365 * 24 * 3600)) }
            await room.leave()
        }
        for await event in room.events {
            switch event {
            case .participantJoined(let participant): Self.emit(["event": "participant.joined", "identity": participant.identity])
            case .participantLeft(_, let identity): Self.emit(["event": "participant.left", "identity": identity])
            case .reconnecting(let attempt): Self.emit(["event": "reconnecting", "attempt": attempt])
            case .reconnected(let resumed):
                Self.emit(["event": "reconnected", "resumed": resumed, "participant": room.sid, "node": room.joined.server.node])
            case .chat(let message): Self.emit(["event": "chat", "from": message.from.identity, "text": message.text])
            case .closed(let reason): Self.emit(["event": "closed", "reason": reason])
            default: break
            }
        }
        reporter.cancel()
        ender.cancel()
    }

    static func emit(_ object: [String: Any]) {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        FileHandle.standardOutput.write(data + Data("\n".utf8))
    }
}

/// Audio packets per sender since the last `take`, counted on the media loop.
final class PacketCounts: @unchecked Sendable {
    private let lock = NSLock()
    private var counts: [String: Int] = [:]

    func add(_ sender: String) {
        lock.lock()
        counts[sender, default: 0] += 1
        lock.unlock()
    }

    func take() -> [String: Int] {
        lock.lock()
        defer { counts.removeAll(); lock.unlock() }
        return counts
    }
}

/// `parley whip`: publish a tone (and synthetic video) into a room by WHIP, the way an encoder
/// would, through the Swift SDK's `WHIPSession`.
struct WHIPPublish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "whip", abstract: "Publish a tone (and --video) into a room by WHIP (RFC 9725), then DELETE the session.")

    @Option(help: "The WHIP endpoint, e.g. http://127.0.0.1:7880/v1/whip") var url: String
    @Option(help: "Room the minted token admits to (without --token)") var room: String?
    @Option(help: "Identity the minted token names") var identity = "whip"
    @Option(help: "A token with join and publish; without one, one is minted from the API credentials") var token: String?
    @Option(help: "The tone, in Hz") var tone = 440.0
    @Flag(help: "Synthetic VP8 video too") var video = false
    @Option(help: "How long to publish, e.g. 30s") var duration = "10s"
    @OptionGroup var credentials: Credentials

    func run() async throws {
        guard let endpoint = URL(string: url) else { throw ValidationError("--url \(url) is not a URL") }
        guard let length = DurationText.parse(duration) else { throw ValidationError("--duration \(duration) is not a duration") }
        var bearer = token
        if bearer == nil {
            guard let room else { throw ValidationError("--room or --token is needed") }
            var grants = Grants(room: room)
            for name in ["join", "publish"] { _ = grants.enable(name) }
            bearer = try await credentials.issuer().mint(identity: identity, grants: grants, name: identity, ttl: 3600)
        }
        let session = try await WHIPSession.publish(endpoint: endpoint, token: bearer!, video: video)
        try await session.sendTone(frequency: tone, videoBitrate: video ? 500_000 : nil)
        print("publishing at \(session.location.absoluteString) (ICE servers: \(session.iceServers.flatMap(\.urls).joined(separator: " ")))")
        fflush(nil)
        try await Task.sleep(for: length)
        await session.close()
        print("session deleted")
    }
}
