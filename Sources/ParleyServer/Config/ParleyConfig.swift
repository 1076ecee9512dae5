import Auth
import Foundation
import Logging
import SFU
import ParleyProtocol
import Store
import TURN
import Yams

public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Where a layer of configuration comes from, in the order they apply: later layers win.
public struct ConfigSources: Sendable {
    public var yaml: String?
    public var yamlOrigin: String
    public var environment: [String: String]
    /// `key=value` overrides from flags.
    public var overrides: [String]
    public var dev: Bool

    public init(
        yaml: String? = nil, yamlOrigin: String = "config", environment: [String: String] = [:],
        overrides: [String] = [], dev: Bool = false
    ) {
        self.yaml = yaml
        self.yamlOrigin = yamlOrigin
        self.environment = environment
        self.overrides = overrides
        self.dev = dev
    }
}

/// The server's configuration, resolved from defaults, the YAML file, `PARLEY_*` variables and flags.
public struct ParleyConfig: Sendable {
    public struct RateLimit: Sendable, Equatable {
        public var perSecond: Double
        public var burst: Int

        public init(perSecond: Double, burst: Int) {
            self.perSecond = perSecond
            self.burst = burst
        }
    }

    public var host: String
    public var port: Int
    public var tlsPort: Int
    /// `tls.certFile` and `tls.keyFile`, both set or neither.
    public var tlsFiles: (cert: String, key: String)?
    public var nodeName: String
    public var dev: Bool
    public var apiKeys: [String: String]
    public var tokenLeeway: Duration
    public var storePath: String
    public var durability: ParleyDatabase.Durability
    /// PostgreSQL for a cluster (`postgres://…`); nil keeps the embedded SQLite store.
    public var databaseURL: PostgresURL?
    public var databaseMaxConnections: Int
    public var databaseStatementTimeout: Duration
    public var clusterAdvertiseURL: String
    public var clusterLeaseDuration: Duration
    /// Signs relayed signaling between nodes (`ClusterCredential`).
    public var clusterSecret: [UInt8]
    public var clusterRenewInterval: Duration
    public var nodeMaxParticipants: Int
    public var nodeMaxCPU: Double
    public var nodeDrainTimeout: Duration
    public var roomMaxParticipants: Int
    public var roomEmptyTimeout: Duration
    public var roomAutoCreate: Bool
    public var roomAllowRemoteUnmute: Bool
    public var roomAutoRecord: String
    public var resumeWindow: Duration
    public var maxMessageBytes: Int
    public var maxFrameBytes: Int
    public var signalingRateLimit: RateLimit
    public var pingInterval: Duration
    public var outboxLimit: Int
    public var outboxBytes: Int
    public var httpRateLimit: RateLimit
    public var httpMaxBodyBytes: Int
    public var chatMaxTextLength: Int
    public var chatRateLimit: RateLimit
    public var chatHistoryOnJoin: Int
    public var chatMaxRecipients: Int
    public var metricsToken: String
    public var webhookURLs: [String]
    /// The API key (and its secret) that signs webhooks.
    public var webhookKey: (key: String, secret: String)?
    public var logLevel: Logger.Level
    public var mediaWorkers: Int
    public var rtc: RTC
    public var turn: TURNOptions
    /// `recording.dir`: recordings go under it as {room}/{recording id}/.
    public var recordingDir: String
    public var chatRetention: Duration
    var recordingLimits: RecordingLimits

    /// STUN/TURN options (`turn.*`).
    public struct TURNOptions: Sendable, Equatable {
        public var enabled: Bool
        public var port: Int
        public var tlsPort: Int
        public var publicHost: String
        public var realm: String
        /// Empty means one is made at start.
        public var secret: String
        public var users: [String: String]
        public var credentialTTL: Duration
        public var relayPorts: ClosedRange<Int>
        public var allowedPeers: [IPRange]
        public var deniedPeers: [IPRange]
        public var defaultLifetime: Duration
        public var maxLifetime: Duration
        public var nonceLifetime: Duration
        public var maxAllocations: Int
        public var userQuota: Int
        public var maxBitrate: Int
        public var rateLimit: RateLimit
        public var maxPermissions = 100
        public var tcpMaxConnections = 10_000
        public var tcpMaxConnectionsPerSource = 256
        public var tcpIdleTimeout: Duration = .seconds(30)

        /// The server's settings, with `secret` (this one, or the one made at start).
        public func configuration(secret: [UInt8]) -> TURNConfiguration {
            var configuration = TURNConfiguration(
                credentials: TURNCredentials(realm: realm, sharedSecret: secret, staticUsers: users),
                nonceLifetimeSeconds: UInt64(nonceLifetime.components.seconds),
                defaultLifetimeSeconds: UInt32(defaultLifetime.components.seconds),
                maxLifetimeSeconds: UInt32(maxLifetime.components.seconds), relayPorts: relayPorts, maxAllocations: maxAllocations,
                maxAllocationsPerUser: userQuota, maxBitratePerAllocation: maxBitrate, unauthenticatedPerSecond: rateLimit.perSecond,
                unauthenticatedBurst: rateLimit.burst, policy: PeerPolicy(allowed: allowedPeers, extraDenied: deniedPeers))
            configuration.maxPermissionsPerAllocation = maxPermissions
            configuration.maxStreamConnections = tcpMaxConnections
            configuration.maxStreamConnectionsPerSource = tcpMaxConnectionsPerSource
            configuration.streamIdleSeconds = UInt64(max(1, tcpIdleTimeout.components.seconds))
            return configuration
        }
    }

    /// Media options (`rtc.*`).
    public struct RTC: Sendable, Equatable {
        public var port: Int
        /// Configured host candidate addresses; empty means detect them at start.
        public var nodeIPs: [String]
        public var consentTimeout: Duration
        public var maxBitrate: Int
        public var pliInterval: Duration
        public var packetHistory: Int
        public var speakersInterval: Duration

        /// The forwarding core's settings.
        public var sfuConfiguration: SFUConfiguration {
            SFUConfiguration(
                maxBitrate: UInt64(maxBitrate), pliIntervalNanoseconds: UInt64(pliInterval.nanoseconds),
                packetHistory: packetHistory, speakersIntervalNanoseconds: UInt64(speakersInterval.nanoseconds),
                consentTimeoutNanoseconds: UInt64(consentTimeout.nanoseconds))
        }
    }

    /// The values every option resolved to, for `parley serve --print-config` and logs.
    public private(set) var resolved: [String: ConfigValue]

    public static let devAPIKey = "devkey"
    public static let devAPISecret = "secret"
    public static let minimumSecretBytes = 32

    /// Dev mode reachable from other machines: anyone who reaches it can mint tokens with the
    /// well-known dev key at /v1/dev/token.
    public var devModeIsExposed: Bool { dev && !["127.0.0.1", "::1", "localhost"].contains(host) }

    /// What `parley serve --print-config` prints: every option as resolved, one per line,
    /// secrets and passwords redacted.
    public func printedLines() -> [String] {
        ConfigOptions.all.map { option in
            let value = resolved[option.key] ?? option.defaultValue
            return "\(option.key): \(Self.redacted(option.key, value))"
        }
    }

    static let secretOptions: Set<String> = ["cluster.secret", "turn.secret"]
    static let secretMaps: Set<String> = ["auth.keys", "turn.users"]

    static func redacted(_ key: String, _ value: ConfigValue) -> String {
        switch value {
        case .map(let entries) where secretMaps.contains(key):
            return "{" + entries.keys.sorted().map { "\($0): ***" }.joined(separator: ", ") + "}"
        case .string(let text) where secretOptions.contains(key) && !text.isEmpty:
            return "***"
        case .string(let text) where key == "database.url":
            // postgres://user:password@host → postgres://user:***@host
            guard let scheme = text.range(of: "://"), let at = text.range(of: "@", range: scheme.upperBound..<text.endIndex),
                  let colon = text.range(of: ":", range: scheme.upperBound..<at.lowerBound)
            else { return value.description }
            return String(text[..<colon.upperBound]) + "***" + String(text[at.lowerBound...])
        default:
            return value.description
        }
    }

    /// Defaults only (plus dev mode when asked): what tests and benchmarks start from.
    public static func defaults(dev: Bool = false) -> ParleyConfig {
        // The defaults always resolve.
        try! load(ConfigSources(dev: dev))
    }

    public static func load(_ sources: ConfigSources) throws -> ParleyConfig {
        var values = Dictionary(uniqueKeysWithValues: ConfigOptions.all.map { ($0.key, $0.defaultValue) })
        if let yaml = sources.yaml {
            for (key, value) in try yamlValues(yaml, origin: sources.yamlOrigin) { values[key] = value }
        }
        for option in ConfigOptions.all {
            guard let text = sources.environment[option.environmentName] else { continue }
            guard let value = option.parse(text) else {
                throw ConfigError("\(option.environmentName)=\(text): not a valid value for \(option.key) (default \(option.defaultValue))")
            }
            values[option.key] = value
        }
        for override in sources.overrides {
            let parts = override.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ConfigError("--set \(override): expected key=value") }
            guard let option = ConfigOptions.byKey[parts[0]] else { throw ConfigError("--set \(override): unknown option \(parts[0])") }
            guard let value = option.parse(parts[1]) else {
                throw ConfigError("--set \(override): not a valid value for \(option.key) (default \(option.defaultValue))")
            }
            values[option.key] = value
        }
        if sources.dev { values["dev"] = .bool(true) }
        return try ParleyConfig(values: values)
    }

    init(values: [String: ConfigValue]) throws {
        var values = values
        func string(_ key: String) -> String { if case .string(let v) = values[key] { v } else { "" } }
        func int(_ key: String) -> Int { if case .int(let v) = values[key] { v } else { 0 } }
        func double(_ key: String) -> Double { if case .double(let v) = values[key] { v } else { 0 } }
        func bool(_ key: String) -> Bool { if case .bool(let v) = values[key] { v } else { false } }
        func duration(_ key: String) -> Duration { if case .duration(let v) = values[key] { v } else { .zero } }
        func map(_ key: String) -> [String: String] { if case .map(let v) = values[key] { v } else { [:] } }

        dev = bool("dev")
        var keys = map("auth.keys")
        if dev && keys.isEmpty {
            keys = [Self.devAPIKey: Self.devAPISecret]
            values["auth.keys"] = .map(keys)
        }
        guard !keys.isEmpty else {
            throw ConfigError("no API keys configured: set auth.keys (or PARLEY_AUTH_KEYS=key:secret), or run with --dev")
        }
        // An HS256 secret shorter than its hash is open to an offline search from any token
        // the server ever issued; dev mode's well-known key is for loopback and tests.
        if !dev {
            for (key, secret) in keys where secret.utf8.count < Self.minimumSecretBytes {
                throw ConfigError(
                    "auth.keys: the secret of \(key) is \(secret.utf8.count) bytes; at least \(Self.minimumSecretBytes) are needed (make one with `openssl rand -base64 32`)")
            }
        }
        apiKeys = keys
        host = string("server.host")
        if host.isEmpty { host = dev ? "127.0.0.1" : "0.0.0.0" }
        values["server.host"] = .string(host)
        port = int("server.port")
        guard (0...65535).contains(port) else { throw ConfigError("server.port: \(port) is not a port number") }
        tlsPort = int("server.tlsPort")
        guard (0...65535).contains(tlsPort) else { throw ConfigError("server.tlsPort: \(tlsPort) is not a port number") }
        switch (string("tls.certFile"), string("tls.keyFile")) {
        case ("", ""): tlsFiles = nil
        case (let cert, let key) where !cert.isEmpty && !key.isEmpty: tlsFiles = (cert, key)
        default: throw ConfigError("tls.certFile and tls.keyFile go together: set both or neither")
        }
        let node = string("server.nodeName")
        nodeName = node.isEmpty ? ProcessInfo.processInfo.hostName : node
        tokenLeeway = duration("auth.leeway")
        storePath = string("store.path")
        guard let durability = ParleyDatabase.Durability(rawValue: string("store.durability")) else {
            throw ConfigError("store.durability: expected full or normal, got \(string("store.durability"))")
        }
        self.durability = durability
        let url = string("database.url")
        do {
            databaseURL = url.isEmpty ? nil : try PostgresURL(url)
        } catch {
            throw ConfigError("\(error)")
        }
        databaseMaxConnections = int("database.maxConnections")
        guard databaseMaxConnections >= 1 else {
            throw ConfigError("database.maxConnections: at least 1, got \(databaseMaxConnections)")
        }
        databaseStatementTimeout = duration("database.statementTimeout")
        clusterAdvertiseURL = string("cluster.advertiseURL")
        clusterLeaseDuration = duration("cluster.leaseDuration")
        let secret = string("cluster.secret")
        clusterSecret = secret.isEmpty ? ClusterCredential.derivedSecret(apiKeys: apiKeys) : Array(secret.utf8)
        clusterRenewInterval = duration("cluster.renewInterval")
        guard clusterRenewInterval > .zero, clusterRenewInterval * 2 <= clusterLeaseDuration else {
            throw ConfigError("cluster.renewInterval must be positive and at most half of cluster.leaseDuration")
        }
        nodeMaxParticipants = int("node.maxParticipants")
        nodeMaxCPU = double("node.maxCPU")
        guard nodeMaxCPU >= 0, nodeMaxCPU <= 1 else { throw ConfigError("node.maxCPU: a share of the cores, 0 to 1, got \(nodeMaxCPU)") }
        nodeDrainTimeout = duration("node.drainTimeout")
        roomMaxParticipants = int("room.maxParticipants")
        roomEmptyTimeout = duration("room.emptyTimeout")
        roomAutoCreate = bool("room.autoCreate")
        roomAllowRemoteUnmute = bool("room.allowRemoteUnmute")
        roomAutoRecord = string("room.autoRecord")
        guard ["", "tracks", "mix", "both"].contains(roomAutoRecord) else {
            throw ConfigError("room.autoRecord: expected tracks, mix, both or empty, got \(roomAutoRecord)")
        }
        resumeWindow = duration("signaling.resumeWindow")
        maxMessageBytes = int("signaling.maxMessageBytes")
        maxFrameBytes = max(int("signaling.maxFrameBytes"), maxMessageBytes)
        signalingRateLimit = RateLimit(perSecond: double("signaling.rateLimit.perSecond"), burst: int("signaling.rateLimit.burst"))
        pingInterval = duration("signaling.pingInterval")
        outboxLimit = max(16, int("signaling.outboxLimit"))
        outboxBytes = max(65_536, int("signaling.outboxBytes"))
        httpRateLimit = RateLimit(perSecond: double("http.rateLimit.perSecond"), burst: int("http.rateLimit.burst"))
        httpMaxBodyBytes = max(4096, int("http.maxBodyBytes"))
        chatMaxTextLength = int("chat.maxTextLength")
        chatRateLimit = RateLimit(perSecond: double("chat.rateLimit.perSecond"), burst: int("chat.rateLimit.burst"))
        chatHistoryOnJoin = int("chat.historyOnJoin")
        chatMaxRecipients = int("chat.maxRecipients")
        metricsToken = string("metrics.token")
        webhookURLs = []
        if case .list(let urls) = values["webhook.urls"] { webhookURLs = urls }
        for url in webhookURLs {
            guard let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme ?? ""), parsed.host != nil else {
                throw ConfigError("webhook.urls: \(url) is not an http(s) URL")
            }
        }
        let signingKey = string("webhook.apiKey").isEmpty ? apiKeys.keys.sorted().first : string("webhook.apiKey")
        if let signingKey, let secret = apiKeys[signingKey] {
            webhookKey = (signingKey, secret)
        } else if !webhookURLs.isEmpty {
            throw ConfigError("webhook.apiKey: \(signingKey ?? "") is not one of auth.keys")
        } else {
            webhookKey = nil
        }
        guard let level = Logger.Level(rawValue: string("log.level")) else {
            throw ConfigError("log.level: expected one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        logLevel = level
        let workers = int("rtc.workers")
        mediaWorkers = workers > 0 ? workers : ProcessInfo.processInfo.activeProcessorCount
        let rtcPort = int("rtc.port")
        guard rtcPort == 0 || (1...65535).contains(rtcPort + mediaWorkers - 1) else {
            throw ConfigError("rtc.port: \(rtcPort) + \(mediaWorkers) workers runs past 65535")
        }
        var nodeIPs: [String] = []
        if case .list(let list) = values["rtc.nodeIPs"] { nodeIPs = list }
        for address in nodeIPs where !Self.isIPAddress(address) {
            throw ConfigError("rtc.nodeIPs: \(address) is not an IPv4 or IPv6 address")
        }
        let history = int("rtc.packetHistory")
        guard history >= 64, history <= 32768, history & (history - 1) == 0 else {
            throw ConfigError("rtc.packetHistory: \(history) is not a power of two between 64 and 32768")
        }
        rtc = RTC(
            port: rtcPort, nodeIPs: nodeIPs, consentTimeout: duration("rtc.consentTimeout"), maxBitrate: max(30_000, int("rtc.maxBitrate")),
            pliInterval: duration("rtc.pliInterval"), packetHistory: history, speakersInterval: duration("rtc.speakersInterval"))
        recordingDir = string("recording.dir")
        chatRetention = duration("chat.retention")
        recordingLimits = RecordingLimits(
            maxDuration: duration("recording.maxDuration"), roomQuotaBytes: Int64(max(0, int("recording.roomQuota"))),
            minFreeBytes: Int64(max(0, int("recording.minFreeDisk"))))
        let relayMin = int("turn.relayPortMin"), relayMax = int("turn.relayPortMax")
        guard (1024...65535).contains(relayMin), (relayMin...65535).contains(relayMax) else {
            throw ConfigError("turn.relayPortMin/relayPortMax: \(relayMin)-\(relayMax) is not a range of ports from 1024 to 65535")
        }
        func ranges(_ key: String) throws -> [IPRange] {
            guard case .list(let list) = values[key] else { return [] }
            return try list.map { text in
                guard let range = IPRange(text) else { throw ConfigError("\(key): \(text) is not an address or CIDR range") }
                return range
            }
        }
        let turnPort = int("turn.port")
        guard (0...65535).contains(turnPort) else { throw ConfigError("turn.port: \(turnPort) is not a port number") }
        let defaultLifetime = max(duration("turn.defaultLifetime"), .seconds(60))
        turn = TURNOptions(
            enabled: bool("turn.enabled"), port: turnPort, tlsPort: int("turn.tlsPort"), publicHost: string("turn.publicHost"), realm: string("turn.realm"),
            secret: string("turn.secret"), users: map("turn.users"), credentialTTL: duration("turn.credentialTTL"),
            relayPorts: relayMin...relayMax, allowedPeers: try ranges("turn.allowedPeers"), deniedPeers: try ranges("turn.deniedPeers"),
            defaultLifetime: defaultLifetime, maxLifetime: max(duration("turn.maxLifetime"), defaultLifetime),
            nonceLifetime: max(duration("turn.nonceLifetime"), .seconds(10)), maxAllocations: max(1, int("turn.maxAllocations")),
            userQuota: max(0, int("turn.userQuota")), maxBitrate: max(0, int("turn.maxBitrate")),
            rateLimit: RateLimit(perSecond: double("turn.rateLimit.perSecond"), burst: int("turn.rateLimit.burst")),
            maxPermissions: max(1, int("turn.maxPermissions")), tcpMaxConnections: max(1, int("turn.tcp.maxConnections")),
            tcpMaxConnectionsPerSource: max(1, int("turn.tcp.maxConnectionsPerSource")), tcpIdleTimeout: duration("turn.tcp.idleTimeout"))
        resolved = values
    }

    static func isIPAddress(_ text: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }

    /// Flattens a YAML document into dotted keys, refusing unknown keys and values of the wrong shape.
    static func yamlValues(_ text: String, origin: String) throws -> [String: ConfigValue] {
        let document: Any?
        do {
            document = try Yams.load(yaml: text)
        } catch {
            throw ConfigError("\(origin): not valid YAML: \(error)")
        }
        guard let document else { return [:] }
        guard let root = document as? [String: Any] else { throw ConfigError("\(origin): the top level must be a mapping") }
        var values: [String: ConfigValue] = [:]
        func walk(_ node: [String: Any], prefix: String) throws {
            for (name, child) in node {
                let key = prefix.isEmpty ? name : "\(prefix).\(name)"
                if let option = ConfigOptions.byKey[key] {
                    guard let value = option.fromYAML(child) else {
                        throw ConfigError("\(origin): \(key): \(child) is not a valid value (default \(option.defaultValue))")
                    }
                    values[key] = value
                } else if let nested = child as? [String: Any] {
                    try walk(nested, prefix: key)
                } else if child is NSNull, ConfigOptions.all.contains(where: { $0.key.hasPrefix(key + ".") }) {
                    continue  // an empty section
                } else {
                    throw ConfigError("\(origin): unknown option \(key)")
                }
            }
        }
        try walk(root, prefix: "")
        return values
    }
}
