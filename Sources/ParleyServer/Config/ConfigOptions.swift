import Foundation
import ParleyProtocol

/// A configuration value in one of the shapes options take.
public enum ConfigValue: Sendable, Equatable, CustomStringConvertible {
    case string(String)
    case int(Int)
    case double(Double)
    case bool(Bool)
    case duration(Duration)
    case list([String])
    case map([String: String])

    public var description: String {
        switch self {
        case .string(let s): s.isEmpty ? "\"\"" : s
        case .int(let i): String(i)
        case .double(let d): String(d)
        case .bool(let b): String(b)
        case .duration(let d): DurationText.format(d)
        case .list(let l): "[" + l.joined(separator: ", ") + "]"
        case .map(let m): "{" + m.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "}"
        }
    }
}

/// One configuration option: its dotted key, its default (which fixes its shape) and what it does.
public struct ConfigOption: Sendable {
    public let key: String
    public let defaultValue: ConfigValue
    public let help: String

    /// The environment variable that sets it: `turn.allowedPeers` → `PARLEY_TURN_ALLOWED_PEERS`.
    public var environmentName: String {
        var name = "PARLEY_"
        for character in key {
            if character == "." {
                name.append("_")
            } else if character.isUppercase {
                name.append("_")
                name.append(character)
            } else {
                name.append(character.uppercased())
            }
        }
        return name
    }

    /// Reads a value of this option's shape from text (environment variables and `--set` flags):
    /// lists are comma-separated, maps `key:value` pairs.
    public func parse(_ text: String) -> ConfigValue? {
        switch defaultValue {
        case .string: return .string(text)
        case .int: return Int(text.trimmingCharacters(in: .whitespaces)).map(ConfigValue.int)
        case .double: return Double(text.trimmingCharacters(in: .whitespaces)).map(ConfigValue.double)
        case .bool:
            switch text.lowercased() {
            case "true", "1", "yes", "on": return .bool(true)
            case "false", "0", "no", "off": return .bool(false)
            default: return nil
            }
        case .duration: return DurationText.parse(text).map(ConfigValue.duration)
        case .list:
            return .list(text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
        case .map:
            var map: [String: String] = [:]
            for pair in text.split(separator: ",") {
                let parts = pair.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                guard parts.count == 2, !parts[0].isEmpty else { return nil }
                map[parts[0]] = parts[1]
            }
            return .map(map)
        }
    }

    /// Reads a value of this option's shape from a YAML node.
    func fromYAML(_ node: Any) -> ConfigValue? {
        switch (defaultValue, node) {
        case (.list, let array as [Any]): return .list(array.map { "\($0)" })
        case (.map, let dict as [String: Any]): return .map(dict.mapValues { "\($0)" })
        case (.map, _), (.list, _): return nil
        case (.string, let string as String): return .string(string)
        case (.bool, let bool as Bool): return .bool(bool)
        case (.int, let int as Int): return .int(int)
        case (.double, let double as Double): return .double(double)
        case (.double, let int as Int): return .double(Double(int))
        case (.duration, let int as Int): return .duration(.seconds(int))
        default: return parse("\(node)")
        }
    }
}

/// Every option Parley reads. `Config/parley.yaml` lists each with its default; a test keeps the two in step.
public enum ConfigOptions {
    public static let all: [ConfigOption] = [
        .init(key: "server.host", defaultValue: .string(""), help: "address the HTTP and WebSocket server binds; empty means every interface (0.0.0.0), or loopback only in dev mode"),
        .init(key: "server.port", defaultValue: .int(7880), help: "TCP port for the HTTP API, web client and /v1/rtc"),
        .init(key: "server.tlsPort", defaultValue: .int(7443), help: "TCP port for HTTPS and WSS (the same API), when tls.certFile is set"),
        .init(key: "tls.certFile", defaultValue: .string(""), help: "PEM certificate chain (leaf first) for HTTPS, WSS and TURN over TLS; reloaded on SIGHUP; empty means no TLS"),
        .init(key: "tls.keyFile", defaultValue: .string(""), help: "PEM private key of tls.certFile; reloaded on SIGHUP"),
        .init(key: "server.nodeName", defaultValue: .string(""), help: "this node's name in `joined` and logs; empty means the host name"),
        .init(key: "dev", defaultValue: .bool(false), help: "dev mode: the dev API key, GET /v1/dev/token, data under ./data"),
        .init(key: "auth.keys", defaultValue: .map([:]), help: "API keys and their secrets (key: secret); dev mode adds devkey: secret when empty"),
        .init(key: "auth.leeway", defaultValue: .duration(.seconds(5)), help: "clock skew tolerated on token nbf and exp"),
        .init(key: "store.path", defaultValue: .string("./data/parley.sqlite"), help: "SQLite database file (WAL mode); its folder is created"),
        .init(key: "store.durability", defaultValue: .string("full"), help: "full: fsync each commit (an ack survives power loss); normal: survives crashes only"),
        .init(key: "database.url", defaultValue: .string(""), help: "PostgreSQL for a cluster, postgres://user:password@host:5432/parley?sslmode=disable|prefer|require; empty keeps chat and recordings in SQLite (store.path)"),
        .init(key: "database.maxConnections", defaultValue: .int(10), help: "PostgreSQL connections this node keeps at most"),
        .init(key: "database.statementTimeout", defaultValue: .duration(.seconds(5)), help: "a PostgreSQL statement that takes longer fails (a chat message is then refused, not acked)"),
        .init(key: "cluster.advertiseURL", defaultValue: .string(""), help: "the HTTP URL other nodes and clients reach this node's API and signaling at; empty means http://<first rtc.nodeIPs address>:<server.port>"),
        .init(key: "cluster.secret", defaultValue: .string(""), help: "what nodes sign relayed signaling with; empty means derived from auth.keys, which every node shares"),
        .init(key: "cluster.leaseDuration", defaultValue: .duration(.seconds(6)), help: "a node (and its rooms) whose lease is not renewed for this long is dead, and its rooms move on the next join"),
        .init(key: "cluster.renewInterval", defaultValue: .duration(.seconds(2)), help: "how often a node renews its lease and reports its load"),
        .init(key: "node.maxParticipants", defaultValue: .int(0), help: "the participants this node takes before new rooms go to the least loaded other node (in a cluster); 0 means no cap"),
        .init(key: "node.maxCPU", defaultValue: .double(0.85), help: "the share of this machine's cores the process may use before new rooms go to the least loaded other node (in a cluster); 0 means CPU is not considered"),
        .init(key: "node.drainTimeout", defaultValue: .duration(.seconds(60)), help: "how long a draining node (parley node drain, or SIGTERM in a cluster) waits for its rooms to empty before it moves the participants left to other nodes"),
        .init(key: "room.maxParticipants", defaultValue: .int(0), help: "default cap on visible participants per room; 0 means no cap"),
        .init(key: "room.emptyTimeout", defaultValue: .duration(.seconds(300)), help: "how long an empty room stays open before it closes"),
        .init(key: "room.autoRecord", defaultValue: .string(""), help: "recording mode (tracks, mix or both) every room starts with its first participant; empty means none"),
        .init(key: "room.allowRemoteUnmute", defaultValue: .bool(false), help: "let the admin API unmute a participant's track; off, it may only mute (a person's microphone is theirs to open)"),
        .init(key: "room.autoCreate", defaultValue: .bool(true), help: "create a room on first join; false means only the admin API creates rooms"),
        .init(key: "signaling.resumeWindow", defaultValue: .duration(.seconds(20)), help: "how long a dropped participant may come back with &resume= and keep its sid"),
        .init(key: "signaling.maxMessageBytes", defaultValue: .int(65_536), help: "largest signaling message accepted; larger ones get too_large"),
        .init(key: "signaling.maxFrameBytes", defaultValue: .int(1_048_576), help: "largest WebSocket frame read at all; a larger one closes the connection (1009)"),
        .init(key: "signaling.rateLimit.perSecond", defaultValue: .double(50), help: "signaling messages a participant may send per second, sustained"),
        .init(key: "signaling.rateLimit.burst", defaultValue: .int(100), help: "signaling messages a participant may send in a burst"),
        .init(key: "signaling.pingInterval", defaultValue: .duration(.seconds(30)), help: "WebSocket ping interval; a peer that misses a pong is dropped"),
        .init(key: "http.rateLimit.perSecond", defaultValue: .double(100), help: "HTTP API requests one client address may make per second, sustained (429 past it); 0 means no limit. Behind a proxy every client shares its address"),
        .init(key: "http.rateLimit.burst", defaultValue: .int(200), help: "HTTP API requests one client address may make in a burst"),
        .init(key: "http.maxBodyBytes", defaultValue: .int(1_048_576), help: "largest request body the HTTP API accepts (413 past it); routes take less where they need less"),
        .init(key: "signaling.outboxLimit", defaultValue: .int(4096), help: "messages queued for a slow client before it is disconnected (it may resume)"),
        .init(key: "signaling.outboxBytes", defaultValue: .int(4_194_304), help: "bytes queued for a slow client before it is disconnected (it may resume)"),
        .init(key: "chat.retention", defaultValue: .duration(.zero), help: "chat messages older than this are deleted (each room's newest kept, so its seq goes on); 0 keeps them all"),
        .init(key: "chat.maxTextLength", defaultValue: .int(4000), help: "longest chat message, in characters"),
        .init(key: "chat.rateLimit.perSecond", defaultValue: .double(10), help: "chat messages a participant may send per second, sustained"),
        .init(key: "chat.rateLimit.burst", defaultValue: .int(20), help: "chat messages a participant may send in a burst"),
        .init(key: "chat.historyOnJoin", defaultValue: .int(50), help: "recent messages included in `joined`"),
        .init(key: "chat.maxRecipients", defaultValue: .int(50), help: "most identities in one direct message's `to`"),
        .init(key: "webhook.urls", defaultValue: .list([]), help: "URLs that receive room, participant, track and recording events as signed JSON POSTs (LiveKit's shape); empty means no webhooks"),
        .init(key: "webhook.apiKey", defaultValue: .string(""), help: "the API key whose secret signs webhooks; empty means the first of auth.keys by name"),
        .init(key: "metrics.token", defaultValue: .string(""), help: "when set, GET /metrics needs `Authorization: Bearer <token>`"),
        .init(key: "log.level", defaultValue: .string("info"), help: "trace, debug, info, notice, warning, error or critical"),
        .init(key: "rtc.workers", defaultValue: .int(0), help: "media workers (event loops) that rooms are pinned to; 0 means one per core"),
        .init(key: "rtc.port", defaultValue: .int(7882), help: "first UDP media port: worker N listens on port + N; 0 picks free ports (tests)"),
        .init(key: "rtc.nodeIPs", defaultValue: .list([]), help: "addresses advertised as ICE host candidates, one socket each, IPv4 or IPv6; empty means every up interface (IPv4, then global and unique-local IPv6; loopback only if there is nothing else, and always in dev mode)"),
        .init(key: "rtc.consentTimeout", defaultValue: .duration(.seconds(30)), help: "a transport closes after this long without a valid ICE check or media (RFC 7675)"),
        .init(key: "rtc.maxBitrate", defaultValue: .int(2_500_000), help: "cap, in bits per second, on the REMB estimate sent to a video publisher"),
        .init(key: "rtc.pliInterval", defaultValue: .duration(.milliseconds(500)), help: "fewest time between two keyframe requests (PLI/FIR) sent to one publisher"),
        .init(key: "rtc.packetHistory", defaultValue: .int(512), help: "packets kept per video publication to answer NACKs (a power of two)"),
        .init(key: "rtc.speakersInterval", defaultValue: .duration(.milliseconds(300)), help: "how often active speakers are computed and sent, at most"),
        .init(key: "recording.maxDuration", defaultValue: .duration(.seconds(6 * 3600)), help: "a recording stops by itself after this long (stopReason max_duration); 0 means no limit"),
        .init(key: "recording.roomQuota", defaultValue: .int(0), help: "bytes one room's recordings may fill on this node's disk: a running one stops at it (room_quota), a new one is refused (507); 0 means no quota"),
        .init(key: "recording.minFreeDisk", defaultValue: .int(1_073_741_824), help: "free bytes kept on the recordings' file system: a running recording stops at it (disk_full) with playable files, a new one is refused (507); 0 keeps none"),
        .init(key: "recording.dir", defaultValue: .string("./data/recordings"), help: "where recordings are written, as {room}/{recording id}/ with a manifest.json"),
        .init(key: "turn.enabled", defaultValue: .bool(true), help: "run the built-in STUN/TURN server (UDP and TCP)"),
        .init(key: "turn.tlsPort", defaultValue: .int(5349), help: "TCP port of TURN over TLS (turns:), when tls.certFile is set"),
        .init(key: "turn.port", defaultValue: .int(3478), help: "UDP and TCP port of the STUN/TURN server, on every rtc node address; 0 picks a free port (tests)"),
        .init(key: "turn.publicHost", defaultValue: .string(""), help: "host put in the TURN URLs of `joined`; empty means the first rtc node address"),
        .init(key: "turn.realm", defaultValue: .string("parley"), help: "realm of the long-term credentials"),
        .init(key: "turn.secret", defaultValue: .string(""), help: "shared secret of coturn's TURN REST scheme (username expiry:identity); empty makes a random one at start"),
        .init(key: "turn.users", defaultValue: .map([:]), help: "static TURN users (name: password), e.g. for turnutils_uclient"),
        .init(key: "turn.credentialTTL", defaultValue: .duration(.seconds(12 * 3600)), help: "how long the TURN credentials handed out in `joined` stay valid"),
        .init(key: "turn.relayPortMin", defaultValue: .int(49152), help: "lowest UDP port a relay is bound on"),
        .init(key: "turn.relayPortMax", defaultValue: .int(65535), help: "highest UDP port a relay is bound on"),
        .init(key: "turn.allowedPeers", defaultValue: .list([]), help: "peer ranges opened despite the deny list (CIDR, e.g. 10.0.0.0/8 or 127.0.0.1); Parley's own media ports are always allowed"),
        .init(key: "turn.deniedPeers", defaultValue: .list([]), help: "peer ranges denied on top of the built-in list (loopback, private, link-local, multicast, ...)"),
        .init(key: "turn.defaultLifetime", defaultValue: .duration(.seconds(600)), help: "allocation lifetime when a client asks for less or nothing"),
        .init(key: "turn.maxLifetime", defaultValue: .duration(.seconds(3600)), help: "longest allocation lifetime granted"),
        .init(key: "turn.nonceLifetime", defaultValue: .duration(.seconds(600)), help: "how long a nonce is fresh; an older one gets 438 Stale Nonce"),
        .init(key: "turn.maxAllocations", defaultValue: .int(10_000), help: "allocations at once, all users together"),
        .init(key: "turn.userQuota", defaultValue: .int(10), help: "allocations at once per user (REST identity or static user); 0 means no cap"),
        .init(key: "turn.maxBitrate", defaultValue: .int(20_000_000), help: "bits per second one allocation may relay, both directions; 0 means no cap"),
        .init(key: "turn.rateLimit.perSecond", defaultValue: .double(20), help: "requests without valid credentials answered per client address per second"),
        .init(key: "turn.maxPermissions", defaultValue: .int(100), help: "permissions one allocation may hold at once (CreatePermission past it gets 508)"),
        .init(key: "turn.tcp.maxConnections", defaultValue: .int(10_000), help: "TURN clients over TCP and TLS at once"),
        .init(key: "turn.tcp.maxConnectionsPerSource", defaultValue: .int(256), help: "TURN clients over TCP and TLS at once from one address (an office behind one NAT is one address)"),
        .init(key: "turn.tcp.idleTimeout", defaultValue: .duration(.seconds(30)), help: "a TURN client over TCP without an allocation is closed after this long"),
        .init(key: "turn.rateLimit.burst", defaultValue: .int(40), help: "requests without valid credentials answered per client address in a burst"),
    ]

    public static let byKey: [String: ConfigOption] = Dictionary(uniqueKeysWithValues: all.map { ($0.key, $0) })
}
