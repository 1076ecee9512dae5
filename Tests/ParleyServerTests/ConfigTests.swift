import Foundation
@testable import ParleyServer
import Testing

/// The configuration's layers (defaults, YAML, PARLEY_* variables, --set), the errors that name
/// what is wrong, what dev mode changes, and what --print-config shows.
@Suite struct ConfigTests {
    @Test func defaultsNeedAKeyOutsideDevMode() throws {
        #expect(throws: ConfigError.self) { try ParleyConfig.load(ConfigSources()) }
        let dev = try ParleyConfig.load(ConfigSources(dev: true))
        #expect(dev.apiKeys == ["devkey": "secret"])
        #expect(dev.port == 7880)
        #expect(dev.resumeWindow == .seconds(20))
        #expect(dev.chatRateLimit == .init(perSecond: 10, burst: 20))
        #expect(dev.maxMessageBytes == 65536)
        #expect(dev.chatMaxTextLength == 4000)
    }

    @Test func layersApplyInOrderYAMLThenEnvironmentThenFlags() throws {
        let yaml = """
            server:
              port: 9000
              host: 127.0.0.1
            auth:
              keys:
                prodkey: a-long-secret-of-32-bytes-or-more
            chat:
              maxTextLength: 100
              rateLimit:
                burst: 5
            signaling:
              resumeWindow: 45s
            """
        let config = try ParleyConfig.load(ConfigSources(
            yaml: yaml,
            environment: ["PARLEY_SERVER_PORT": "9100", "PARLEY_CHAT_MAX_TEXT_LENGTH": "200", "UNRELATED": "x"],
            overrides: ["server.port=9200"]))
        #expect(config.port == 9200)
        #expect(config.host == "127.0.0.1")
        #expect(config.chatMaxTextLength == 200)
        #expect(config.chatRateLimit.burst == 5)
        #expect(config.resumeWindow == .seconds(45))
        #expect(config.apiKeys == ["prodkey": "a-long-secret-of-32-bytes-or-more"])
    }

    @Test func environmentNamesFollowOneRule() {
        #expect(ConfigOption(key: "turn.allowedPeers", defaultValue: .list([]), help: "").environmentName == "PARLEY_TURN_ALLOWED_PEERS")
        #expect(ConfigOptions.byKey["chat.rateLimit.perSecond"]?.environmentName == "PARLEY_CHAT_RATE_LIMIT_PER_SECOND")
        #expect(ConfigOptions.byKey["auth.keys"]?.environmentName == "PARLEY_AUTH_KEYS")
    }

    @Test func listsAndMapsParseFromText() throws {
        let config = try ParleyConfig.load(ConfigSources(environment: ["PARLEY_AUTH_KEYS": "k1:a-long-secret-of-32-bytes-or-more-1, k2:a-long-secret-of-32-bytes-or-more-2"]))
        #expect(config.apiKeys == ["k1": "a-long-secret-of-32-bytes-or-more-1", "k2": "a-long-secret-of-32-bytes-or-more-2"])
        #expect(ConfigOption(key: "x", defaultValue: .list([]), help: "").parse("a, b,,c") == .list(["a", "b", "c"]))
    }

    @Test func mistakesAreReportedByName() {
        func message(_ sources: ConfigSources) -> String {
            do {
                _ = try ParleyConfig.load(sources)
                return ""
            } catch {
                return "\(error)"
            }
        }
        #expect(message(ConfigSources(yaml: "server:\n  prot: 1\n", dev: true)).contains("unknown option server.prot"))
        #expect(message(ConfigSources(yaml: "server:\n  port: many\n", dev: true)).contains("server.port"))
        #expect(message(ConfigSources(environment: ["PARLEY_SERVER_PORT": "x"], dev: true)).contains("PARLEY_SERVER_PORT"))
        #expect(message(ConfigSources(overrides: ["nope=1"], dev: true)).contains("unknown option nope"))
        #expect(message(ConfigSources(overrides: ["log.level=loud"], dev: true)).contains("log.level"))
        #expect(message(ConfigSources(yaml: "auth:\n  keys:\n    k: short\n")).contains("at least 32"))
        #expect(message(ConfigSources(yaml: ": : :", dev: true)).contains("YAML"))
    }

    /// Config/parley.yaml documents every option with its default: load it, and compare.
    @Test func shippedConfigFileListsEveryOptionWithItsDefault() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Config/parley.yaml")
        let text = try String(contentsOf: url, encoding: .utf8)
        let values = try ParleyConfig.yamlValues(text, origin: "Config/parley.yaml")
        for option in ConfigOptions.all {
            #expect(values[option.key] == option.defaultValue, "Config/parley.yaml: \(option.key) should be \(option.defaultValue)")
            #expect(text.contains("# \(option.help)") || text.contains(option.help), "Config/parley.yaml: \(option.key) lacks its comment")
        }
        #expect(Set(values.keys) == Set(ConfigOptions.all.map(\.key)))
    }

    @Test func secretsShorterThan32BytesAreRefusedOutsideDevMode() throws {
        func load(_ secret: String, dev: Bool = false) throws -> ParleyConfig {
            try ParleyConfig.load(ConfigSources(environment: ["PARLEY_AUTH_KEYS": "prod:\(secret)"], dev: dev))
        }
        #expect(throws: ConfigError.self) { try load(String(repeating: "x", count: 31)) }
        #expect(throws: ConfigError.self) { try load("secret") }
        #expect(try load(String(repeating: "x", count: 32)).apiKeys["prod"]?.count == 32)
        // Dev mode is for loopback and tests: the dev key's six characters pass there.
        #expect(try load("secret", dev: true).apiKeys == ["prod": "secret"])
        #expect(try ParleyConfig.load(ConfigSources(dev: true)).apiKeys == [ParleyConfig.devAPIKey: ParleyConfig.devAPISecret])
    }

    @Test func devModeListensOnLoopbackUnlessAHostIsGiven() throws {
        let dev = try ParleyConfig.load(ConfigSources(dev: true))
        #expect(dev.host == "127.0.0.1" && !dev.devModeIsExposed)
        let lan = try ParleyConfig.load(ConfigSources(overrides: ["server.host=0.0.0.0"], dev: true))
        #expect(lan.host == "0.0.0.0" && lan.devModeIsExposed)
        let production = try ParleyConfig.load(ConfigSources(environment: ["PARLEY_AUTH_KEYS": "p:\(String(repeating: "s", count: 40))"]))
        #expect(production.host == "0.0.0.0" && !production.devModeIsExposed)
        // The shipped file leaves the host empty, so `make serve` (dev mode with it) stays on loopback.
        let shipped = try ParleyConfig.load(ConfigSources(yaml: try Self.shippedConfig(), dev: true))
        #expect(shipped.host == "127.0.0.1")
    }

    @Test func printConfigShowsWhatIsInForceWithSecretsRedacted() throws {
        let config = try ParleyConfig.load(ConfigSources(
            environment: [
                "PARLEY_AUTH_KEYS": "prod:\(String(repeating: "k", count: 40))",
                "PARLEY_DATABASE_URL": "postgres://parley:hunter2-password@db.internal:5432/parley?sslmode=require",
            ],
            overrides: ["turn.secret=rest-secret-value", "turn.users=alice:pw-of-alice", "cluster.secret=cluster-secret-value", "chat.maxTextLength=123"]))
        let lines = config.printedLines()
        let text = lines.joined(separator: "\n")
        #expect(lines.count == ConfigOptions.all.count)
        #expect(lines.contains("chat.maxTextLength: 123"))
        #expect(lines.contains("server.host: 0.0.0.0"), "the effective host, not the empty default")
        #expect(lines.contains("auth.keys: {prod: ***}"))
        #expect(lines.contains("turn.users: {alice: ***}"))
        #expect(lines.contains("turn.secret: ***") && lines.contains("cluster.secret: ***"))
        #expect(lines.contains("database.url: postgres://parley:***@db.internal:5432/parley?sslmode=require"))
        for secret in ["kkkkkkkk", "hunter2", "rest-secret-value", "pw-of-alice", "cluster-secret-value"] {
            #expect(!text.contains(secret), "\(secret) printed")
        }
    }

    @Test func remoteUnmuteIsOffUnlessTheOperatorTurnsItOn() throws {
        #expect(try ParleyConfig.load(ConfigSources(dev: true)).roomAllowRemoteUnmute == false)
        #expect(try ParleyConfig.load(ConfigSources(environment: ["PARLEY_ROOM_ALLOW_REMOTE_UNMUTE": "true"], dev: true)).roomAllowRemoteUnmute)
    }

    static func shippedConfig() throws -> String {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Config/parley.yaml")
        return try String(contentsOf: url, encoding: .utf8)
    }
}
