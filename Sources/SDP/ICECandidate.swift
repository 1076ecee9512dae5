/// An ICE candidate line (RFC 8839 §5.1), as SDP carries it and as trickle sends it.
public struct ICECandidate: Sendable, Equatable {
    public enum CandidateType: String, Sendable { case host, srflx, prflx, relay }

    public var foundation: String
    public var component: Int
    public var transport: String
    public var priority: UInt32
    public var address: String
    public var port: Int
    public var type: CandidateType
    public var relatedAddress: String?
    public var relatedPort: Int?
    public var tcpType: String?
    /// Other name/value pairs in order (generation, ufrag, network-id, …).
    public var extensions: [(String, String)]

    public init(
        foundation: String, component: Int = 1, transport: String = "udp", priority: UInt32, address: String, port: Int,
        type: CandidateType = .host, extensions: [(String, String)] = []
    ) {
        self.foundation = foundation
        self.component = component
        self.transport = transport
        self.priority = priority
        self.address = address
        self.port = port
        self.type = type
        self.extensions = extensions
    }

    /// Parses the attribute value, with or without the leading "candidate:".
    public init?(_ text: Substring) {
        var text = text
        if text.hasPrefix("candidate:") { text = text.dropFirst("candidate:".count) }
        let parts = text.split(separator: " ")
        guard parts.count >= 8, parts.count % 2 == 0, (1...32).contains(parts[0].count),
            let component = Int(parts[1]), (1...256).contains(component),
            let priority = UInt32(parts[3]), !parts[4].isEmpty,
            let port = Int(parts[5]), (0...65535).contains(port),
            parts[6] == "typ", let type = CandidateType(rawValue: String(parts[7]))
        else { return nil }
        foundation = String(parts[0])
        self.component = component
        transport = parts[2].lowercased()
        guard transport == "udp" || transport == "tcp" else { return nil }
        self.priority = priority
        address = String(parts[4])
        self.port = port
        self.type = type
        extensions = []
        var index = 8
        while index + 1 < parts.count {
            let name = String(parts[index]), value = String(parts[index + 1])
            switch name {
            case "raddr": relatedAddress = value
            case "rport":
                guard let related = Int(value), (0...65535).contains(related) else { return nil }
                relatedPort = related
            case "tcptype": tcpType = value
            default: extensions.append((name, value))
            }
            index += 2
        }
    }

    public init?(_ text: String) { self.init(text[...]) }

    /// Whether the address is an mDNS name (`….local`) rather than an IP address.
    public var isMDNS: Bool { address.hasSuffix(".local") }

    /// The attribute value, without "candidate:".
    public var value: String {
        var out = "\(foundation) \(component) \(transport) \(priority) \(address) \(port) typ \(type.rawValue)"
        if let relatedAddress { out += " raddr \(relatedAddress)" }
        if let relatedPort { out += " rport \(relatedPort)" }
        if let tcpType { out += " tcptype \(tcpType)" }
        for (name, value) in extensions { out += " \(name) \(value)" }
        return out
    }

    public static func == (lhs: ICECandidate, rhs: ICECandidate) -> Bool { lhs.value == rhs.value }
}
