import ArgumentParser
import Auth
import Foundation
import Logging
import ParleyClient
import ParleyProtocol
import ParleyTools
import ParleyServer

@main
struct Parley: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Parley: a real-time media and signaling server.",
        version: ParleyVersion.current,
        subcommands: [Serve.self, Token.self, Rooms.self, Node.self, Join.self, WHIPPublish.self, Record.self, LoadTest.self])
}

/// API credentials for commands that mint tokens: flags, then PARLEY_API_KEY / PARLEY_API_SECRET,
/// then the dev key.
struct Credentials: ParsableArguments {
    @Option(name: .customLong("api-key"), help: "API key (default: $PARLEY_API_KEY, else the dev key)")
    var apiKey: String?

    @Option(name: .customLong("api-secret"), help: "API secret (default: $PARLEY_API_SECRET, else the dev secret)")
    var apiSecret: String?

    func issuer() async -> TokenIssuer {
        let environment = ProcessInfo.processInfo.environment
        let key = apiKey ?? environment["PARLEY_API_KEY"] ?? ParleyConfig.devAPIKey
        let secret = apiSecret ?? environment["PARLEY_API_SECRET"] ?? ParleyConfig.devAPISecret
        return await TokenIssuer(apiKey: key, secret: secret)
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the server until SIGINT or SIGTERM.")

    @Option(help: "YAML configuration file") var config: String?
    @Flag(help: "Dev mode: dev API key, GET /v1/dev/token, data under ./data") var dev = false
    @Option(help: "Address to bind (server.host)") var host: String?
    @Option(help: "HTTP and signaling port (server.port)") var port: Int?
    @Option(name: .customLong("set"), help: "Set any option, e.g. --set chat.maxTextLength=2000 (repeatable)")
    var overrides: [String] = []
    @Flag(help: "Print the resolved configuration and exit") var printConfig = false

    func run() async throws {
        var yaml: String?
        if let config {
            do {
                yaml = try String(contentsOfFile: config, encoding: .utf8)
            } catch {
                throw ValidationError("cannot read \(config): \(error.localizedDescription)")
            }
        }
        var overrides = self.overrides
        if let host { overrides.append("server.host=\(host)") }
        if let port { overrides.append("server.port=\(port)") }
        var resolved: ParleyConfig
        do {
            resolved = try ParleyConfig.load(ConfigSources(
                yaml: yaml, yamlOrigin: config ?? "config", environment: ProcessInfo.processInfo.environment,
                overrides: overrides, dev: dev))
        } catch let error as ConfigError {
            throw ValidationError(error.description)
        }
        if printConfig {
            for line in resolved.printedLines() { print(line) }
            return
        }
        let level = resolved.logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "parley")
        if resolved.dev {
            let (key, secret) = resolved.apiKeys.sorted { $0.key < $1.key }.first!
            print("""
                Parley \(ParleyVersion.current) in dev mode
                  API key:    \(key)
                  API secret: \(secret)
                  web client: http://127.0.0.1:\(resolved.port)/
                  data:       \(resolved.databaseURL?.description ?? resolved.storePath)
                """)
            if resolved.devModeIsExposed {
                logger.warning("""
                    dev mode listens on \(resolved.host), not only loopback: anyone who can reach it can mint tokens \
                    at /v1/dev/token with the well-known dev key. Use it on a network you trust; run production \
                    without --dev, with auth.keys set.
                    """)
            }
        }
        // Dev mode on a LAN address: HTTPS with a self-signed certificate, so a phone on the network
        // gets its camera in the web client (browsers give one only to a secure page).
        var devCertificate: DevCertificate.Files?
        if resolved.dev, resolved.tlsFiles == nil, !["127.0.0.1", "::1", "localhost"].contains(resolved.host) {
            let folder = ((resolved.storePath as NSString).deletingLastPathComponent as NSString).appendingPathComponent("dev-tls")
            let addresses = ParleyServer.advertisedAddresses(resolved)
            let files = try DevCertificate.ensure(directory: folder, addresses: addresses)
            resolved.tlsFiles = (files.cert, files.key)
            devCertificate = files
        }
        let server = try await ParleyServer(config: resolved, logger: logger)
        if let devCertificate {
            let pages = server.pageURLs(scheme: "https", port: resolved.tlsPort)
            print("""
                  HTTPS:      \(pages.joined(separator: "  "))
                              (self-signed, \(devCertificate.cert); SHA-256 \(devCertificate.fingerprint))
                """)
        }
        // The banner reaches a pipe or a file now, not when the process ends.
        fflush(nil)  // every output stream, stdout included
        // SIGTERM (an orchestrator stopping one node) drains a node of a cluster onto the others
        // first; SIGINT (Ctrl-C) stops at once.
        try await server.run(gracefulShutdownSignals: [.sigint], drainSignals: [.sigterm])
        logger.info("stopped")
    }

}

struct Token: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Mint access tokens.", subcommands: [Create.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Mint a join token (HS256 JWT) for a room.")

        @Option(help: "Room the token admits to (omit with --grant admin for a server-wide admin token)") var room: String?
        @Option(help: "Participant identity (sub)") var identity: String
        @Option(help: "Display name") var name: String?
        @Option(help: "Free-text metadata") var metadata: String?
        @Option(help: "Comma-separated grants: \(Grants.names.joined(separator: ",")) (default: join,publish,subscribe,chat)")
        var grant: String?
        @Option(help: "Lifetime, e.g. 90s, 15m, 6h, 7d") var ttl = "6h"
        @Option(help: "parley (grants), or livekit (LiveKit's video claims, for apps and tools written for LiveKit); Parley accepts both")
        var format = "parley"
        @OptionGroup var credentials: Credentials

        func run() async throws {
            var grants = Grants(room: room)
            let names = grant.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
                ?? ["join", "publish", "subscribe", "chat"]
            for name in names where !grants.enable(name) {
                throw ValidationError("unknown grant \(name); grants are \(Grants.names.joined(separator: ", "))")
            }
            if room != nil { grants.join = true }
            guard room != nil || grants.admin else { throw ValidationError("--room is required unless --grant includes admin") }
            guard let lifetime = DurationText.parse(ttl), lifetime > .zero else { throw ValidationError("--ttl \(ttl) is not a duration") }
            let issuer = await credentials.issuer()
            switch format {
            case "parley":
                print(try await issuer.mint(
                    identity: identity, grants: grants, name: name, metadata: metadata, ttl: lifetime.components.seconds))
            case "livekit":
                print(try await issuer.mintLiveKit(
                    identity: identity, grants: grants, name: name, metadata: metadata, ttl: lifetime.components.seconds))
            default:
                throw ValidationError("--format must be parley or livekit")
            }
        }
    }
}

/// `parley record`: a bot that joins as a hidden participant and records every track.
struct Record: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Record a room from the outside: a hidden participant that writes every track (and a mix) to --out.")

    @Option(help: "Server URL, e.g. ws://127.0.0.1:7880") var url: String
    @Option(help: "Room to record") var room: String
    @Option(help: "Folder for the files and manifest.json") var out: String
    @Option(help: "tracks, mix or both") var mode = "tracks"
    @Option(help: "A join token (with subscribe); without one, one is minted from the API credentials") var token: String?
    @Option(help: "Identity the bot joins with") var identity = "recorder"
    @Flag(help: "Receive through the server's TURN relay only (iceTransportPolicy relay)") var relay = false
    @OptionGroup var credentials: Credentials

    func run() async throws {
        guard ["tracks", "mix", "both"].contains(mode) else { throw ValidationError("--mode must be tracks, mix or both") }
        var joinToken = token
        if joinToken == nil {
            var grants = Grants(room: room)
            for name in ["join", "subscribe", "hidden", "record"] { _ = grants.enable(name) }
            joinToken = try await credentials.issuer().mint(identity: identity, grants: grants, name: "Recorder", ttl: 24 * 3600)
        }
        let bot = RecordingBot(url: url, token: joinToken!, directory: out, mode: mode, iceTransportPolicy: relay ? .relay : .all)
        // Ctrl-C and SIGTERM end the recording; the files are finished before exiting.
        let sources = [SIGINT, SIGTERM].map { number -> any DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler { bot.stop() }
            source.resume()
            return source
        }
        let summary = try await bot.run { line in
            FileHandle.standardError.write(Data(("\r" + line.prefix(160) + "\u{1B}[K").utf8))
        }
        _ = sources
        FileHandle.standardError.write(Data("\n".utf8))
        print("recording ended (\(summary.reason)), \(summary.durationMs / 1000) s")
        for file in summary.files {
            print("  \(file.name)  \(file.format)  \(file.bytes) bytes  \(file.durationMs) ms  from \(file.offsetMs) ms")
        }
        for error in summary.errors { print("  error: \(error)") }
        if !summary.errors.isEmpty { throw ExitCode(1) }
    }
}

/// `parley loadtest`: synthetic participants with real media against a server.
struct LoadTest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loadtest",
        abstract: "Drive synthetic participants (libopus tones over real ICE/DTLS/SRTP) and report joins, delay, loss and jitter.")

    @Option(help: "Server URL, e.g. ws://127.0.0.1:7880 (Janus's WebSocket API with --target janus, e.g. ws://127.0.0.1:8188); repeat it for the nodes of a cluster: participants go round them, so every room is spread over all") var url: [String]
    @OptionGroup var credentials: Credentials
    @Option(help: "Rooms") var rooms = 1
    @Option(help: "Publishers per room (each sends a distinct tone)") var publishers = 1
    @Option(help: "Subscribers per room (each receives every publisher)") var subscribers = 1
    @Option(help: "How long to run, e.g. 60s, 5m") var duration = "60s"
    @Option(help: "Participants started per second, e.g. 10/s") var ramp = "10/s"
    @Option(name: .customLong("chat-rate"), help: "Chat messages per second per room") var chatRate = 0.0
    @Flag(help: "Publishers also send synthetic VP8 video (keyframes on PLI)") var video = false
    @Option(help: "parley, or janus (its VideoRoom; --url is then its WebSocket API, e.g. ws://127.0.0.1:8188)") var target = "parley"
    @Option(name: .customLong("video-bitrate"), help: "Bits per second of each synthetic video track (default 500k; with --simulcast, of the top layer, the others scaled alike)") var videoBitrate: Int?
    @Flag(help: "Publishers send video as three simulcast layers (320x180, 640x360, 1280x720 at 150k, 500k, 1.5M unless --video-bitrate) with RTX and transport-cc; implies --video") var simulcast = false
    @Option(help: "The quality subscribers ask for of every video track: low, medium or high") var quality: String?
    @Flag(help: "Send and receive all media through the server's TURN relay (iceTransportPolicy relay; Parley only)") var relay = false
    @Option(help: "Write the full report as JSON here") var json: String?
    @Option(name: .customLong("slo-loss"), help: "Fail when packet loss is above this, e.g. 1%") var sloLoss: String?
    @Option(name: .customLong("slo-latency-p99"), help: "Fail when the media delay p99 is above this, e.g. 100ms") var sloLatencyP99: String?

    func run() async throws {
        guard let length = DurationText.parse(duration), length > .zero else { throw ValidationError("--duration \(duration) is not a duration") }
        guard let rate = Double(ramp.replacingOccurrences(of: "/s", with: "")), rate > 0 else { throw ValidationError("--ramp must look like 10/s") }
        let lossLimit = try sloLoss.map { text -> Double in
            guard let value = Double(text.replacingOccurrences(of: "%", with: "")) else { throw ValidationError("--slo-loss must look like 1%") }
            return value
        }
        let latencyLimit = try sloLatencyP99.map { text -> Double in
            guard let value = DurationText.parse(text) else { throw ValidationError("--slo-latency-p99 must look like 100ms") }
            return Double(value.components.seconds) * 1000 + Double(value.components.attoseconds) / 1e15
        }
        let environment = ProcessInfo.processInfo.environment
        guard let firstURL = url.first else { throw ValidationError("--url is needed") }
        guard url.count == 1 || target == "parley" else { throw ValidationError("several --url: --target parley") }
        var options = LoadTester.Options(
            url: firstURL, apiKey: credentials.apiKey ?? environment["PARLEY_API_KEY"] ?? ParleyConfig.devAPIKey,
            apiSecret: credentials.apiSecret ?? environment["PARLEY_API_SECRET"] ?? ParleyConfig.devAPISecret)
        options.alternateURLs = Array(url.dropFirst())
        options.rooms = rooms
        options.publishers = publishers
        options.subscribers = subscribers
        options.duration = length
        options.rampPerSecond = rate
        options.chatRate = chatRate
        guard ["parley", "janus"].contains(target) else { throw ValidationError("--target must be parley or janus") }
        options.target = target
        guard !relay || target == "parley" else { throw ValidationError("--relay uses Parley's TURN server: --target parley") }
        options.iceTransportPolicy = relay ? .relay : .all
        options.videoBitrate = video || simulcast ? max(50_000, videoBitrate ?? 500_000) : 0
        guard !simulcast || target == "parley" else { throw ValidationError("--simulcast: --target parley") }
        options.simulcast = simulcast
        if let videoBitrate { options.simulcastLayers = SimulcastLayerPlan.standard(topBitrate: max(50_000, videoBitrate)) }
        options.quality = try quality.map { text in
            guard let quality = VideoQuality(rawValue: text) else { throw ValidationError("--quality must be low, medium or high") }
            return quality
        }
        let report = try await LoadTester(options: options).run { line in
            FileHandle.standardError.write(Data(("\r" + line.prefix(160) + "\u{1B}[K").utf8))
        }
        FileHandle.standardError.write(Data("\n".utf8))
        func row(_ name: String, _ value: String) { print(name.padding(toLength: 44, withPad: " ", startingAt: 0) + value) }
        func ms(_ p: LoadTester.Report.Percentiles) -> String {
            String(format: "p50 %.1f ms  p95 %.1f ms  p99 %.1f ms  (%d)", p.p50, p.p95, p.p99, p.count)
        }
        row("joins", "\(report.joinsOK) ok, \(report.joinsFailed) failed")
        if report.joinsByNode.count > 1 {
            row("rooms' nodes (joins)", report.joinsByNode.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "  "))
        }
        row("join time", ms(report.joinMs))
        row("media delay", ms(report.mediaDelayMs))
        row("loss", String(format: "%.3f%% (%d of %d packets)", report.lossPercent, report.packetsLost, report.packetsReceived + report.packetsLost))
        row("jitter", String(format: "%.2f ms", report.jitterMs))
        row("bitrate per track", String(format: "%.1f kbit/s", report.bitrateKbpsPerTrack))
        row("tracks", "\(report.tracksReceived) received of \(report.tracksExpected), tones detected in \(report.tonesDetected)")
        if report.videoTracksReceived > 0 {
            row("video", String(format: "%d tracks, %.1f kbit/s per track", report.videoTracksReceived, report.videoBitrateKbpsPerTrack))
        }
        if !report.videoWidths.isEmpty {
            // Which layer subscribers got: width of the latest keyframe → video tracks received at it.
            let widths = report.videoWidths.sorted { (Int($0.key) ?? -1) < (Int($1.key) ?? -1) }
            row("video layers received (width: tracks)", widths.map { "\($0.key): \($0.value)" }.joined(separator: "  "))
            for reception in report.videoReceptions.prefix(20) {
                let size = reception.frameWidth.map { "\($0)x\(reception.frameHeight ?? 0)" } ?? "no keyframe"
                row("  " + reception.subscriber, "\(size) of \(reception.track), " + String(format: "%.1f kbit/s", reception.bitrateKbps))
            }
        }
        if options.simulcast {
            row("publishers' feedback", "\(report.publisherTransportFeedback) transport-wide, \(report.publisherRetransmissions) retransmissions")
        }
        if report.chatDelayMs.count > 0 { row("chat delivery", ms(report.chatDelayMs)) }
        for (name, value) in report.server.sorted(by: { $0.key < $1.key }) { row("server " + name.replacingOccurrences(of: "parley_", with: ""), String(format: "%.0f", value)) }
        for error in report.errors.prefix(10) { print("error: \(error)") }
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(report).write(to: URL(fileURLWithPath: json))
        }
        var missed: [String] = []
        if report.joinsFailed > 0 { missed.append("\(report.joinsFailed) joins failed") }
        if let lossLimit, report.lossPercent > lossLimit { missed.append(String(format: "loss %.3f%% > %.3f%%", report.lossPercent, lossLimit)) }
        if let latencyLimit, report.mediaDelayMs.p99 > latencyLimit {
            missed.append(String(format: "delay p99 %.1f ms > %.1f ms", report.mediaDelayMs.p99, latencyLimit))
        }
        if !missed.isEmpty {
            print("SLO missed: " + missed.joined(separator: "; "))
            throw ExitCode(2)
        }
    }
}
