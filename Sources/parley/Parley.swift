import ArgumentParser
import Auth
import Foundation
import Logging
import ParleyClient
import ParleyProtocol
import ParleyServer

@main
struct Parley: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Parley: a real-time media and signaling server.",
        version: ParleyVersion.current,
        subcommands: [Serve.self, Token.self, Rooms.self, Record.self])
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
        let resolved: ParleyConfig
        do {
            resolved = try ParleyConfig.load(ConfigSources(
                yaml: yaml, yamlOrigin: config ?? "config", environment: ProcessInfo.processInfo.environment,
                overrides: overrides, dev: dev))
        } catch let error as ConfigError {
            throw ValidationError(error.description)
        }
        if printConfig {
            for option in ConfigOptions.all {
                let value = resolved.resolved[option.key].map { option.key == "auth.keys" ? redact($0) : $0.description } ?? ""
                print("\(option.key): \(value)")
            }
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
                  data:       \(resolved.storePath)
                """)
        }
        let server = try await ParleyServer(config: resolved, logger: logger)
        try await server.run(gracefulShutdownSignals: [.sigterm, .sigint])
        logger.info("stopped")
    }

    private func redact(_ value: ConfigValue) -> String {
        guard case .map(let keys) = value else { return value.description }
        return "{" + keys.keys.sorted().map { "\($0): ***" }.joined(separator: ", ") + "}"
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
            print(try await issuer.mint(
                identity: identity, grants: grants, name: name, metadata: metadata, ttl: lifetime.components.seconds))
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
    @OptionGroup var credentials: Credentials

    func run() async throws {
        guard ["tracks", "mix", "both"].contains(mode) else { throw ValidationError("--mode must be tracks, mix or both") }
        var joinToken = token
        if joinToken == nil {
            var grants = Grants(room: room)
            for name in ["join", "subscribe", "hidden", "record"] { _ = grants.enable(name) }
            joinToken = try await credentials.issuer().mint(identity: identity, grants: grants, name: "Recorder", ttl: 24 * 3600)
        }
        let bot = RecordingBot(url: url, token: joinToken!, directory: out, mode: mode)
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
