/// One `x=value` line. Lines keep their order and text, so a description survives a round trip
/// and attributes this module does not know pass through.
public struct SDPLine: Equatable, Sendable {
    public var type: Character
    public var value: String

    public init(_ type: Character, _ value: String) {
        self.type = type
        self.value = value
    }

    /// For `a=` lines: the name before the first colon, and the value after it (nil for a flag).
    public var attribute: (name: Substring, value: Substring?)? {
        guard type == "a" else { return nil }
        if let colon = value.firstIndex(of: ":") {
            return (value[..<colon], value[value.index(after: colon)...])
        }
        return (value[...], nil)
    }
}

/// Shared by session and media level: reading and editing attributes in place.
public protocol SDPLineContainer {
    var lines: [SDPLine] { get set }
}

extension SDPLineContainer {
    /// Values of every `a=name:value` (a flag gives "").
    public func attributes(_ name: String) -> [Substring] {
        lines.compactMap { line in
            guard let attribute = line.attribute, attribute.name == name else { return nil }
            return attribute.value ?? ""
        }
    }

    public func attribute(_ name: String) -> Substring? { attributes(name).first }

    public func hasAttribute(_ name: String) -> Bool { attribute(name) != nil }

    public mutating func addAttribute(_ name: String, _ value: String? = nil) {
        lines.append(SDPLine("a", value.map { "\(name):\($0)" } ?? name))
    }

    public mutating func removeAttributes(_ name: String) {
        lines.removeAll { $0.attribute?.name == name[...] }
    }
}

/// A session description (RFC 8866) with the WebRTC attributes typed (RFC 8829, 8839, 8843).
public struct SessionDescription: SDPLineContainer, Equatable, Sendable {
    /// Session-level lines after `v=`, in order (o, s, t, a, …).
    public var lines: [SDPLine]
    public var media: [MediaDescription]

    static let maxLineLength = 4096
    static let maxLines = 2000
    static let maxMedia = 64

    public init(lines: [SDPLine] = [], media: [MediaDescription] = []) {
        self.lines = lines
        self.media = media
    }

    /// Parses SDP text (CRLF or LF line ends). Bounded work on hostile input: long lines, too
    /// many lines or m-sections are refused.
    public init(parsing text: String) throws(SDPError) {
        // "\r\n" is one Character in Swift, and a newline: this splits CRLF and LF alike.
        var rawLines = text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
        while let last = rawLines.last, last.isEmpty { rawLines.removeLast() }
        guard !rawLines.isEmpty else { throw SDPError(line: 0, text: "", reason: "empty description") }
        guard rawLines.count <= Self.maxLines else {
            throw SDPError(line: Self.maxLines + 1, text: "", reason: "more than \(Self.maxLines) lines")
        }
        var session: [SDPLine] = []
        var media: [MediaDescription] = []
        for (index, raw) in rawLines.enumerated() {
            let number = index + 1
            let text = String(raw)
            guard raw.utf8.count <= Self.maxLineLength else {
                throw SDPError(line: number, text: text, reason: "longer than \(Self.maxLineLength) bytes")
            }
            guard raw.utf8.count >= 2, let type = raw.first, raw.dropFirst().first == "=" else {
                throw SDPError(line: number, text: text, reason: "not of the form x=value")
            }
            guard "vosiuepcbtrzkam".contains(type) else {
                throw SDPError(line: number, text: text, reason: "unknown line type \"\(type)\"")
            }
            let value = String(raw.dropFirst(2))
            if index == 0 {
                guard type == "v", value == "0" else { throw SDPError(line: number, text: text, reason: "the first line must be v=0") }
                continue
            }
            if type == "v" { throw SDPError(line: number, text: text, reason: "a second v= line") }
            if type == "m" {
                guard media.count < Self.maxMedia else { throw SDPError(line: number, text: text, reason: "more than \(Self.maxMedia) m-sections") }
                media.append(try MediaDescription(mLine: value, lineNumber: number))
                continue
            }
            let line = SDPLine(type, value)
            try Self.validate(line, number: number)
            if media.isEmpty { session.append(line) } else { media[media.count - 1].lines.append(line) }
        }
        guard session.contains(where: { $0.type == "o" }) else { throw SDPError(line: 0, text: "", reason: "no o= line") }
        guard session.contains(where: { $0.type == "s" }) else { throw SDPError(line: 0, text: "", reason: "no s= line") }
        self.lines = session
        self.media = media
    }

    /// Checks the attributes whose syntax matters to negotiation, so a bad one is refused with
    /// its line rather than misread later.
    static func validate(_ line: SDPLine, number: Int) throws(SDPError) {
        guard let attribute = line.attribute else { return }
        let value = attribute.value ?? ""
        func fail(_ reason: String) -> SDPError { SDPError(line: number, text: "\(line.type)=\(line.value)", reason: reason) }
        switch attribute.name {
        case "rtpmap":
            guard RTPMap(value) != nil else { throw fail("expected <payload type 0-127> <name>/<clock rate>[/<channels>]") }
        case "extmap":
            guard Extmap(value) != nil else { throw fail("expected <id 1-255>[/<direction>] <uri>") }
        case "fingerprint":
            guard Fingerprint(value) != nil else { throw fail("expected <hash function> <hex bytes separated by colons>") }
        case "candidate":
            guard ICECandidate(value) != nil else { throw fail("not a valid ICE candidate") }
        case "setup":
            guard DTLSSetup(rawValue: String(value)) != nil else { throw fail("setup must be actpass, active, passive or holdconn") }
        case "mid":
            guard !value.isEmpty, value.utf8.count <= 32 else { throw fail("mid must have 1 to 32 characters") }
        default:
            break
        }
    }

    /// RFC 8866 text with CRLF line ends.
    public func serialized() -> String {
        var out = "v=0\r\n"
        for line in lines { out += "\(line.type)=\(line.value)\r\n" }
        for section in media {
            out += "m=\(section.mLineValue)\r\n"
            for line in section.lines { out += "\(line.type)=\(line.value)\r\n" }
        }
        return out
    }

    // MARK: Session-level accessors

    /// The mids of the first BUNDLE group.
    public var bundle: [String] {
        for group in attributes("group") {
            let parts = group.split(separator: " ")
            if parts.first == "BUNDLE" { return parts.dropFirst().map(String.init) }
        }
        return []
    }

    public var isICELite: Bool { hasAttribute("ice-lite") }

    /// The o= line's session id and version.
    public var origin: (sessionID: String, version: UInt64)? {
        guard let line = lines.first(where: { $0.type == "o" }) else { return nil }
        let parts = line.value.split(separator: " ")
        guard parts.count >= 3, let version = UInt64(parts[2]) else { return nil }
        return (String(parts[1]), version)
    }

    /// ICE credentials of a media section, inherited from session level when it has none.
    public func iceCredentials(of media: MediaDescription) -> (ufrag: String, password: String)? {
        guard let ufrag = media.attribute("ice-ufrag") ?? attribute("ice-ufrag"),
            let password = media.attribute("ice-pwd") ?? attribute("ice-pwd")
        else { return nil }
        return (String(ufrag), String(password))
    }

    /// Fingerprints of a media section (or the session), strongest hash last as offered.
    public func fingerprints(of media: MediaDescription) -> [Fingerprint] {
        let own = media.attributes("fingerprint").compactMap(Fingerprint.init)
        return own.isEmpty ? attributes("fingerprint").compactMap(Fingerprint.init) : own
    }

    public func setup(of media: MediaDescription) -> DTLSSetup? {
        (media.attribute("setup") ?? attribute("setup")).flatMap { DTLSSetup(rawValue: String($0)) }
    }
}
