/// One m-section: the m= line and the lines under it.
public struct MediaDescription: SDPLineContainer, Equatable, Sendable {
    public var kind: String
    public var port: Int
    public var portCount: Int?
    public var proto: String
    public var formats: [String]
    public var lines: [SDPLine]

    public init(kind: String, port: Int, proto: String, formats: [String], lines: [SDPLine] = []) {
        self.kind = kind
        self.port = port
        self.proto = proto
        self.formats = formats
        self.lines = lines
    }

    init(mLine value: String, lineNumber: Int) throws(SDPError) {
        func fail(_ reason: String) -> SDPError { SDPError(line: lineNumber, text: "m=\(value)", reason: reason) }
        let parts = value.split(separator: " ")
        guard parts.count >= 4 else { throw fail("expected <media> <port> <proto> <format> …") }
        let portParts = parts[1].split(separator: "/", omittingEmptySubsequences: false)
        guard let port = Int(portParts[0]), (0...65535).contains(port) else { throw fail("port is not a number 0-65535") }
        if portParts.count == 2 {
            guard let count = Int(portParts[1]), count > 0 else { throw fail("port count is not a positive number") }
            portCount = count
        } else if portParts.count > 2 {
            throw fail("port is not a number 0-65535")
        }
        kind = String(parts[0])
        self.port = port
        proto = String(parts[2])
        formats = parts[3...].map(String.init)
        lines = []
    }

    var mLineValue: String {
        "\(kind) \(port)\(portCount.map { "/\($0)" } ?? "") \(proto) \(formats.joined(separator: " "))"
    }

    public var mid: String? { attribute("mid").map(String.init) }

    public var direction: MediaDirection {
        for line in lines {
            if let name = line.attribute?.name, line.attribute?.value == nil, let direction = MediaDirection(rawValue: String(name)) {
                return direction
            }
        }
        return .sendrecv
    }

    public mutating func setDirection(_ direction: MediaDirection) {
        lines.removeAll { line in line.attribute.map { MediaDirection(rawValue: String($0.name)) != nil && $0.value == nil } ?? false }
        addAttribute(direction.rawValue)
    }

    /// Rejected (port 0, RFC 8843 §7.3 aside for bundled sections that are still accepted).
    public var isRejected: Bool { port == 0 && !hasAttribute("bundle-only") }

    /// The codecs of an RTP m-line with their fmtp and rtcp-fb (including `rtcp-fb:*`), in the
    /// m-line's preference order.
    public var codecs: [SDPCodec] {
        let maps = attributes("rtpmap").compactMap(RTPMap.init)
        var fmtp: [UInt8: String] = [:]
        for value in attributes("fmtp") {
            guard let space = value.firstIndex(of: " "), let payloadType = UInt8(value[..<space]) else { continue }
            fmtp[payloadType] = String(value[value.index(after: space)...])
        }
        var feedback: [String: [String]] = [:]
        for value in attributes("rtcp-fb") {
            guard let space = value.firstIndex(of: " ") else { continue }
            feedback[String(value[..<space]), default: []].append(String(value[value.index(after: space)...]))
        }
        return formats.compactMap { format in
            guard let payloadType = UInt8(format), let map = maps.first(where: { $0.payloadType == payloadType }) else { return nil }
            return SDPCodec(
                payloadType: payloadType, name: map.name, clockRate: map.clockRate, channels: map.channels, fmtp: fmtp[payloadType] ?? "",
                feedback: (feedback["*"] ?? []) + (feedback[format] ?? []))
        }
    }

    public var extmaps: [Extmap] { attributes("extmap").compactMap(Extmap.init) }

    /// The primary SSRC: the first of an FID group, else the first `a=ssrc`.
    public var primarySSRC: UInt32? {
        for group in attributes("ssrc-group") {
            let parts = group.split(separator: " ")
            if parts.first == "FID", parts.count >= 2, let ssrc = UInt32(parts[1]) { return ssrc }
        }
        return attributes("ssrc").lazy.compactMap { $0.split(separator: " ").first.flatMap { UInt32($0) } }.first
    }

    /// `a=msid:<stream> <track>`.
    public var msid: (stream: String, track: String?)? {
        guard let value = attribute("msid") else { return nil }
        let parts = value.split(separator: " ", maxSplits: 1)
        guard let stream = parts.first else { return nil }
        return (String(stream), parts.count > 1 ? String(parts[1]) : nil)
    }

    public var candidates: [ICECandidate] { attributes("candidate").compactMap(ICECandidate.init) }
}

public enum MediaDirection: String, Sendable, Equatable {
    case sendrecv, sendonly, recvonly, inactive

    public var sends: Bool { self == .sendrecv || self == .sendonly }
    public var receives: Bool { self == .sendrecv || self == .recvonly }
}

public enum DTLSSetup: String, Sendable, Equatable {
    case actpass, active, passive, holdconn
}

/// A codec from rtpmap, fmtp and rtcp-fb together.
public struct SDPCodec: Sendable, Equatable {
    public var payloadType: UInt8
    public var name: String
    public var clockRate: UInt32
    public var channels: Int?
    public var fmtp: String
    /// rtcp-fb values, e.g. "nack", "nack pli", "ccm fir", "goog-remb", "transport-cc".
    public var feedback: [String]

    public init(payloadType: UInt8, name: String, clockRate: UInt32, channels: Int? = nil, fmtp: String = "", feedback: [String] = []) {
        self.payloadType = payloadType
        self.name = name
        self.clockRate = clockRate
        self.channels = channels
        self.fmtp = fmtp
        self.feedback = feedback
    }

    /// fmtp parameters as key=value pairs, in order.
    public var parameters: [(key: String, value: String)] {
        fmtp.split(separator: ";").compactMap { pair in
            let parts = pair.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { return nil }
            return (String(parts[0].drop { $0 == " " }), String(parts[1]))
        }
    }

    public func parameter(_ key: String) -> String? { parameters.first { $0.key == key }?.value }
}

/// `a=rtpmap:<pt> <name>/<rate>[/<channels>]`.
public struct RTPMap: Sendable, Equatable {
    public var payloadType: UInt8
    public var name: String
    public var clockRate: UInt32
    public var channels: Int?

    public init?(_ value: Substring) {
        let parts = value.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, let payloadType = UInt8(parts[0]), payloadType < 128 else { return nil }
        let encoding = parts[1].split(separator: "/", omittingEmptySubsequences: false)
        guard (2...3).contains(encoding.count), !encoding[0].isEmpty, let rate = UInt32(encoding[1]), rate > 0 else { return nil }
        var channels: Int?
        if encoding.count == 3 {
            guard let count = Int(encoding[2]), (1...255).contains(count) else { return nil }
            channels = count
        }
        self.payloadType = payloadType
        self.name = String(encoding[0])
        self.clockRate = rate
        self.channels = channels
    }
}

/// `a=extmap:<id>[/<direction>] <uri> [<attributes>]` (RFC 8285).
public struct Extmap: Sendable, Equatable {
    public var id: UInt8
    public var direction: MediaDirection?
    public var uri: String
    public var attributes: String?

    public init(id: UInt8, uri: String, direction: MediaDirection? = nil) {
        self.id = id
        self.uri = uri
        self.direction = direction
    }

    public init?(_ value: Substring) {
        let parts = value.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2 else { return nil }
        let idParts = parts[0].split(separator: "/", omittingEmptySubsequences: false)
        guard let id = UInt8(idParts[0]), id >= 1 else { return nil }
        if idParts.count == 2 {
            guard let direction = MediaDirection(rawValue: String(idParts[1])) else { return nil }
            self.direction = direction
        } else if idParts.count > 2 {
            return nil
        }
        self.id = id
        self.uri = String(parts[1])
        self.attributes = parts.count == 3 ? String(parts[2]) : nil
    }

    public var value: String {
        "\(id)\(direction.map { "/\($0.rawValue)" } ?? "") \(uri)\(attributes.map { " \($0)" } ?? "")"
    }

    public static let midURI = "urn:ietf:params:rtp-hdrext:sdes:mid"
    public static let audioLevelURI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
    public static let absSendTimeURI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
    public static let transportCCURI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
    /// RtpStreamId (RFC 8852): the `a=rid` a simulcast layer's packets belong to.
    public static let ridURI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
    /// RepairedRtpStreamId: the layer an RTX packet repairs.
    public static let repairedRIDURI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
    /// When the media was captured, in NTP time: forwarded untouched, so receivers measure
    /// end-to-end delay (Chromium sends it too).
    public static let absCaptureTimeURI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time"
}

/// `a=fingerprint:<hash> <AA:BB:…>`.
public struct Fingerprint: Sendable, Equatable {
    public var algorithm: String
    public var value: String

    public init(algorithm: String, value: String) {
        self.algorithm = algorithm
        self.value = value
    }

    public init?(_ value: Substring) {
        let parts = value.split(separator: " ")
        guard parts.count == 2, !parts[0].isEmpty else { return nil }
        let bytes = parts[1].split(separator: ":", omittingEmptySubsequences: false)
        guard !bytes.isEmpty, bytes.count <= 64, bytes.allSatisfy({ $0.count == 2 && $0.allSatisfy(\.isHexDigit) }) else { return nil }
        self.algorithm = parts[0].lowercased()
        self.value = String(parts[1])
    }

    public var attributeValue: String { "\(algorithm) \(value)" }
}
