/// `a=rid:<id> <send|recv> [pt=…;max-width=…;…]` (RFC 8851): one RTP stream of a simulcast
/// m-line, named by the RtpStreamId header extension its packets carry.
public struct RIDDescription: Sendable, Equatable {
    public var id: String
    public var direction: Direction
    /// Restrictions as written, e.g. `pt` → `96,97`, `max-width` → `1280`.
    public var restrictions: [(key: String, value: String)]

    public enum Direction: String, Sendable, Equatable { case send, recv }

    public init(id: String, direction: Direction, restrictions: [(key: String, value: String)] = []) {
        self.id = id
        self.direction = direction
        self.restrictions = restrictions
    }

    /// Parses the attribute's value; nil for an id that is not 1-255 alphanumeric characters,
    /// dashes or underscores (RFC 8851 §10), or an unknown direction.
    public init?(_ value: Substring) {
        let parts = value.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
        guard parts.count >= 2, Self.isValidID(parts[0]), let direction = Direction(rawValue: String(parts[1])) else { return nil }
        id = String(parts[0])
        self.direction = direction
        restrictions = parts.count == 3
            ? parts[2].split(separator: ";").compactMap { pair in
                let keyValue = pair.split(separator: "=", maxSplits: 1)
                guard let key = keyValue.first, !key.isEmpty else { return nil }
                return (String(key), keyValue.count == 2 ? String(keyValue[1]) : "")
            }
            : []
    }

    public static func isValidID(_ id: some StringProtocol) -> Bool {
        (1...255).contains(id.utf8.count) && id.utf8.allSatisfy { byte in
            (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || byte == 0x2D || byte == 0x5F
        }
    }

    public var value: String {
        "\(id) \(direction.rawValue)" + (restrictions.isEmpty ? "" : " " + restrictions.map { "\($0.key)=\($0.value)" }.joined(separator: ";"))
    }

    public static func == (lhs: RIDDescription, rhs: RIDDescription) -> Bool {
        lhs.id == rhs.id && lhs.direction == rhs.direction && lhs.restrictions.elementsEqual(rhs.restrictions) { $0 == $1 }
    }
}

/// `a=simulcast:send q;h;f recv …` (RFC 8853): the streams in order of the sender's preference.
/// Each entry is a list of alternatives (`,`); a leading `~` marks a stream paused at the start.
public struct SimulcastDescription: Sendable, Equatable {
    public struct Stream: Sendable, Equatable {
        public var rid: String
        public var paused: Bool

        public init(rid: String, paused: Bool = false) {
            self.rid = rid
            self.paused = paused
        }
    }

    public var send: [[Stream]]
    public var receive: [[Stream]]

    public init(send: [[Stream]] = [], receive: [[Stream]] = []) {
        self.send = send
        self.receive = receive
    }

    public init?(_ value: Substring) {
        let parts = value.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 2 || parts.count == 4 else { return nil }
        var send: [[Stream]]?
        var receive: [[Stream]]?
        for index in stride(from: 0, to: parts.count, by: 2) {
            guard let list = Self.streams(parts[index + 1]) else { return nil }
            switch parts[index] {
            case "send" where send == nil: send = list
            case "recv" where receive == nil: receive = list
            default: return nil
            }
        }
        self.send = send ?? []
        self.receive = receive ?? []
    }

    private static func streams(_ text: Substring) -> [[Stream]]? {
        var result: [[Stream]] = []
        for entry in text.split(separator: ";", omittingEmptySubsequences: false) {
            var alternatives: [Stream] = []
            for alternative in entry.split(separator: ",", omittingEmptySubsequences: false) {
                let paused = alternative.hasPrefix("~")
                let rid = paused ? alternative.dropFirst() : alternative
                guard RIDDescription.isValidID(rid) else { return nil }
                alternatives.append(Stream(rid: String(rid), paused: paused))
            }
            result.append(alternatives)
        }
        return result
    }

    public var value: String {
        func text(_ list: [[Stream]]) -> String {
            list.map { $0.map { ($0.paused ? "~" : "") + $0.rid }.joined(separator: ",") }.joined(separator: ";")
        }
        return [("send", send), ("recv", receive)].filter { !$0.1.isEmpty }.map { "\($0.0) \(text($0.1))" }.joined(separator: " ")
    }
}

/// `a=ssrc-group:<semantics> <ssrc>…` (RFC 5576): `SIM` lists simulcast layers lowest first,
/// `FID` pairs a stream with its RTX stream.
public struct SSRCGroup: Sendable, Equatable {
    public var semantics: String
    public var ssrcs: [UInt32]

    public init(semantics: String, ssrcs: [UInt32]) {
        self.semantics = semantics
        self.ssrcs = ssrcs
    }

    public init?(_ value: Substring) {
        let parts = value.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count >= 2 else { return nil }
        let ssrcs = parts.dropFirst().compactMap { UInt32($0) }
        guard ssrcs.count == parts.count - 1 else { return nil }
        semantics = String(parts[0])
        self.ssrcs = ssrcs
    }

    public var value: String { ([semantics] + ssrcs.map(String.init)).joined(separator: " ") }
}

extension MediaDescription {
    /// The m-line's `a=rid` lines that parse.
    public var rids: [RIDDescription] { attributes("rid").compactMap(RIDDescription.init) }

    public var simulcast: SimulcastDescription? { attribute("simulcast").flatMap(SimulcastDescription.init) }

    public var ssrcGroups: [SSRCGroup] { attributes("ssrc-group").compactMap(SSRCGroup.init) }

    /// The RTX payload type for each codec payload type (`a=fmtp:<rtx> apt=<codec>`).
    public var retransmissionPayloadTypes: [UInt8: UInt8] {
        var map: [UInt8: UInt8] = [:]
        for codec in codecs where codec.name.lowercased() == "rtx" {
            if let apt = codec.parameter("apt").flatMap(UInt8.init) { map[apt] = codec.payloadType }
        }
        return map
    }
}
