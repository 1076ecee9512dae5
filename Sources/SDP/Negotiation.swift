/// What the server can receive and send: codecs, header extensions and RTCP feedback.
public struct MediaCapabilities: Sendable {
    /// Codec names accepted per kind (lowercased); H.264 only with packetization-mode=1.
    public var audioCodecs: Set<String>
    public var videoCodecs: Set<String>
    public var extensionURIs: Set<String>
    /// rtcp-fb values kept in an answer.
    public var videoFeedback: Set<String>
    public var audioFeedback: Set<String>

    public init(
        audioCodecs: Set<String>, videoCodecs: Set<String>, extensionURIs: Set<String>, videoFeedback: Set<String>,
        audioFeedback: Set<String>
    ) {
        self.audioCodecs = audioCodecs
        self.videoCodecs = videoCodecs
        self.extensionURIs = extensionURIs
        self.videoFeedback = videoFeedback
        self.audioFeedback = audioFeedback
    }

    /// Opus, VP8 and H.264, each video codec with its RTX (RFC 4588); mid, RID and repaired RID
    /// (simulcast), audio level, abs-send-time, abs-capture-time and transport-wide-cc ids.
    /// transport-cc feedback is kept so publishers estimate their uplink from the SFU's TWCC
    /// reports; REMB stays as the fallback for those that do not offer it.
    public static let standard = MediaCapabilities(
        audioCodecs: ["opus"], videoCodecs: ["vp8", "h264"],
        extensionURIs: [
            Extmap.midURI, Extmap.ridURI, Extmap.repairedRIDURI, Extmap.audioLevelURI, Extmap.absSendTimeURI, Extmap.transportCCURI,
            Extmap.absCaptureTimeURI,
        ],
        videoFeedback: ["nack", "nack pli", "ccm fir", "goog-remb", "transport-cc"], audioFeedback: ["transport-cc"])

    /// Spatial layers taken from one simulcast m-line; further rids are declined.
    public static let maxSimulcastLayers = 3

    func accepts(_ codec: SDPCodec, kind: String) -> Bool {
        let name = codec.name.lowercased()
        switch kind {
        case "audio": return audioCodecs.contains(name) && (name != "opus" || codec.clockRate == 48_000)
        case "video":
            guard videoCodecs.contains(name), codec.clockRate == 90_000 else { return false }
            return name != "h264" || codec.parameter("packetization-mode") == "1"
        default: return false
        }
    }

    func feedback(for kind: String) -> Set<String> { kind == "video" ? videoFeedback : audioFeedback }
}

/// Our side of a transport, as every SDP we write states it.
public struct LocalTransportParameters: Sendable {
    public var iceUfrag: String
    public var icePassword: String
    public var fingerprint: Fingerprint
    public var candidates: [ICECandidate]
    public var sessionID: String
    public var sessionVersion: UInt64

    public init(
        iceUfrag: String, icePassword: String, fingerprint: Fingerprint, candidates: [ICECandidate], sessionID: String,
        sessionVersion: UInt64 = 1
    ) {
        self.iceUfrag = iceUfrag
        self.icePassword = icePassword
        self.fingerprint = fingerprint
        self.candidates = candidates
        self.sessionID = sessionID
        self.sessionVersion = sessionVersion
    }
}

/// What the other side's description says about the transport.
public struct RemoteTransportParameters: Sendable, Equatable {
    public var iceUfrag: String
    public var icePassword: String
    /// The sha-256 fingerprint when offered, else the first.
    public var fingerprint: Fingerprint
    public var setup: DTLSSetup
}

/// One accepted m-section of a publisher's offer.
public struct NegotiatedMedia: Sendable, Equatable {
    public var mid: String
    public var kind: String
    public var ssrc: UInt32?
    public var msid: String?
    /// Accepted codecs in the offer's order, with the offerer's payload types and the
    /// feedback both sides support.
    public var codecs: [SDPCodec]
    public var extmaps: [Extmap]
    /// Simulcast: the rids accepted, in the offer's order (empty without simulcast).
    public var rids: [String] = []
    /// `a=ssrc-group` lines (SIM: the layers' SSRCs, FID: media and RTX SSRC pairs).
    public var ssrcGroups: [SSRCGroup] = []
    /// RTX payload type → the payload type it repairs (apt), for the accepted codecs.
    public var retransmissionPayloadTypes: [UInt8: UInt8] = [:]
}

public struct PublisherAnswer: Sendable {
    public var description: SessionDescription
    public var accepted: [NegotiatedMedia]
    public var remote: RemoteTransportParameters
}

public enum Negotiation {
    /// The remote transport parameters of a description (from its first non-rejected section).
    public static func remoteParameters(of description: SessionDescription) throws(SDPError) -> RemoteTransportParameters {
        guard let section = description.media.first(where: { !$0.isRejected }) ?? description.media.first else {
            throw SDPError(line: 0, text: "", reason: "no m-sections")
        }
        guard let ice = description.iceCredentials(of: section) else { throw SDPError(line: 0, text: "", reason: "no a=ice-ufrag and a=ice-pwd") }
        let fingerprints = description.fingerprints(of: section)
        guard let fingerprint = fingerprints.first(where: { $0.algorithm == "sha-256" }) ?? fingerprints.first else {
            throw SDPError(line: 0, text: "", reason: "no a=fingerprint")
        }
        return RemoteTransportParameters(
            iceUfrag: ice.ufrag, icePassword: ice.password, fingerprint: fingerprint, setup: description.setup(of: section) ?? .actpass)
    }

    /// Answers a publisher's offer as an ICE-lite receiver: sending audio and video sections
    /// with a supported codec become recvonly, everything else is rejected (port 0).
    public static func answerPublisherOffer(
        _ offer: SessionDescription, capabilities: MediaCapabilities = .standard, local: LocalTransportParameters
    ) throws(SDPError) -> PublisherAnswer {
        let remote = try remoteParameters(of: offer)
        guard remote.setup != .holdconn else { throw SDPError(line: 0, text: "", reason: "a=setup:holdconn is not supported") }
        let ourSetup: DTLSSetup = remote.setup == .passive ? .active : .passive
        var answer = SessionDescription(lines: sessionLines(local))
        var accepted: [NegotiatedMedia] = []
        var mids: [String] = []
        for (index, section) in offer.media.enumerated() {
            guard let mid = section.mid else {
                throw SDPError(line: 0, text: "", reason: "m-section \(index) has no a=mid (BUNDLE needs one)")
            }
            let (codecs, retransmission) = acceptedCodecs(of: section, capabilities: capabilities, feedback: capabilities.feedback(for: section.kind))
            let usable = !section.isRejected && section.direction.sends && section.proto.contains("RTP") && codecs.count > retransmission.count
            guard usable else {
                answer.media.append(rejected(section, mid: mid))
                continue
            }
            let extmaps = section.extmaps.filter { capabilities.extensionURIs.contains($0.uri) && $0.id <= 14 }
            var media = MediaDescription(kind: section.kind, port: 9, proto: section.proto, formats: codecs.map { String($0.payloadType) })
            media.lines.append(SDPLine("c", "IN IP4 0.0.0.0"))
            addTransport(&media, local: local, setup: ourSetup, mid: mid)
            for extmap in extmaps { media.addAttribute("extmap", Extmap(id: extmap.id, uri: extmap.uri).value) }
            media.addAttribute(MediaDirection.recvonly.rawValue)
            media.addAttribute("rtcp-mux")
            if section.hasAttribute("rtcp-rsize") { media.addAttribute("rtcp-rsize") }
            addCodecs(&media, codecs)
            let rids = section.kind == "video" ? simulcastRIDs(section, extmaps: extmaps) : []
            for rid in rids { media.addAttribute("rid", RIDDescription(id: rid, direction: .recv).value) }
            if !rids.isEmpty { media.addAttribute("simulcast", SimulcastDescription(receive: rids.map { [.init(rid: $0)] }).value) }
            addCandidates(&media, local)
            answer.media.append(media)
            mids.append(mid)
            let groups = section.ssrcGroups
            accepted.append(
                NegotiatedMedia(
                    mid: mid, kind: section.kind, ssrc: groups.first { $0.semantics == "SIM" }?.ssrcs.first ?? section.primarySSRC,
                    msid: section.msid.map { "\($0.stream) \($0.track ?? "")" }, codecs: codecs, extmaps: extmaps, rids: rids,
                    ssrcGroups: groups, retransmissionPayloadTypes: retransmission))
        }
        if !mids.isEmpty { answer.lines.insert(SDPLine("a", "group:BUNDLE \(mids.joined(separator: " "))"), at: 3) }
        return PublisherAnswer(description: answer, accepted: accepted, remote: remote)
    }

    /// The codecs of an offered section we take, in the offer's order with its payload types and
    /// the `feedback` we support, and RTX payload type → the one it repairs (an RTX codec is kept
    /// when the codec it repairs is; video only).
    static func acceptedCodecs(of section: MediaDescription, capabilities: MediaCapabilities, feedback: Set<String>)
        -> (codecs: [SDPCodec], retransmission: [UInt8: UInt8])
    {
        let offered = section.codecs
        let mediaCodecs = Set(offered.filter { capabilities.accepts($0, kind: section.kind) }.map(\.payloadType))
        var retransmission: [UInt8: UInt8] = [:]
        for (apt, rtx) in section.retransmissionPayloadTypes where mediaCodecs.contains(apt) && section.kind == "video" {
            retransmission[rtx] = apt
        }
        let codecs = offered.filter { mediaCodecs.contains($0.payloadType) || retransmission[$0.payloadType] != nil }.map { codec in
            var kept = codec
            kept.feedback = codec.feedback.filter { feedback.contains($0) }
            return kept
        }
        return (codecs, retransmission)
    }

    /// The rids of a simulcast offer the answer receives: the first choice of each send
    /// stream (RFC 8853 §5.3), at most `maxSimulcastLayers`, each with an `a=rid … send`; none
    /// unless the RID extension was accepted too (without it layers cannot be told apart).
    static func simulcastRIDs(_ section: MediaDescription, extmaps: [Extmap]) -> [String] {
        guard let simulcast = section.simulcast, extmaps.contains(where: { $0.uri == Extmap.ridURI }) else { return [] }
        let declared = Set(section.rids.filter { $0.direction == .send }.map(\.id))
        var rids: [String] = []
        for alternatives in simulcast.send {
            guard let first = alternatives.first, declared.contains(first.rid), !rids.contains(first.rid) else { continue }
            rids.append(first.rid)
            if rids.count == MediaCapabilities.maxSimulcastLayers { break }
        }
        return rids
    }

    // MARK: Subscriber offers

    /// One m-line of a subscriber offer: a track being sent, or a reusable inactive slot.
    public struct SubscriberSlot: Sendable, Equatable {
        public var mid: String
        public var kind: String
        public var track: Track?

        public struct Track: Sendable, Equatable {
            public var ssrc: UInt32
            public var cname: String
            public var streamID: String
            public var trackID: String
            /// The codec the publisher sends (its name, rate and fmtp; the payload type is ours).
            public var codec: SDPCodec
            /// The SSRC retransmissions go out on (RFC 4588), for video.
            public var retransmissionSSRC: UInt32?

            public init(ssrc: UInt32, cname: String, streamID: String, trackID: String, codec: SDPCodec, retransmissionSSRC: UInt32? = nil) {
                self.retransmissionSSRC = retransmissionSSRC
                self.ssrc = ssrc
                self.cname = cname
                self.streamID = streamID
                self.trackID = trackID
                self.codec = codec
            }
        }

        public init(mid: String, kind: String, track: Track?) {
            self.mid = mid
            self.kind = kind
            self.track = track
        }
    }

    /// Header extension ids the server uses on subscriber transports: fixed, so every bundled
    /// m-line agrees.
    public static let subscriberExtensions: [(id: UInt8, uri: String, kinds: Set<String>)] = [
        (1, Extmap.midURI, ["audio", "video"]),
        (2, Extmap.audioLevelURI, ["audio"]),
        (3, Extmap.absSendTimeURI, ["audio", "video"]),
        (4, Extmap.absCaptureTimeURI, ["audio", "video"]),
        (5, Extmap.transportCCURI, ["audio", "video"]),
    ]

    /// RTCP feedback offered to subscribers, per kind.
    static let subscriberFeedback: [String: [String]] = [
        "video": ["nack", "nack pli", "ccm fir", "goog-remb", "transport-cc"], "audio": ["transport-cc"],
    ]

    /// The server's offer on a subscriber transport (ICE-lite, actpass). The slots' order is
    /// the m-line order; `previous` keeps the session id and bumps the version.
    public static func makeSubscriberOffer(
        slots: [SubscriberSlot], local: LocalTransportParameters, previous: SessionDescription?
    ) -> SessionDescription {
        var local = local
        if let origin = previous?.origin {
            local.sessionID = origin.sessionID
            local.sessionVersion = origin.version + 1
        }
        var offer = SessionDescription(lines: sessionLines(local))
        let payloadTypes = subscriberPayloadTypes(slots)
        for slot in slots {
            let codec = slotCodec(slot)
            var offered = codec
            offered.payloadType = payloadTypes[signature(codec)] ?? codec.payloadType
            offered.feedback = subscriberFeedback[slot.kind] ?? []
            var codecs = [offered]
            if slot.kind == "video", let rtx = payloadTypes[retransmissionSignature(codec)] {
                codecs.append(SDPCodec(payloadType: rtx, name: "rtx", clockRate: codec.clockRate, fmtp: "apt=\(offered.payloadType)"))
            }
            var media = MediaDescription(kind: slot.kind, port: 9, proto: "UDP/TLS/RTP/SAVPF", formats: codecs.map { String($0.payloadType) })
            media.lines.append(SDPLine("c", "IN IP4 0.0.0.0"))
            addTransport(&media, local: local, setup: .actpass, mid: slot.mid)
            for ext in subscriberExtensions where ext.kinds.contains(slot.kind) { media.addAttribute("extmap", "\(ext.id) \(ext.uri)") }
            if let track = slot.track {
                media.addAttribute(MediaDirection.sendonly.rawValue)
                media.addAttribute("msid", "\(track.streamID) \(track.trackID)")
            } else {
                media.addAttribute(MediaDirection.inactive.rawValue)
            }
            media.addAttribute("rtcp-mux")
            media.addAttribute("rtcp-rsize")
            addCodecs(&media, codecs)
            if let track = slot.track {
                let rtx = codecs.count > 1 ? track.retransmissionSSRC : nil
                if let rtx { media.addAttribute("ssrc-group", SSRCGroup(semantics: "FID", ssrcs: [track.ssrc, rtx]).value) }
                for ssrc in [track.ssrc] + (rtx.map { [$0] } ?? []) {
                    media.addAttribute("ssrc", "\(ssrc) cname:\(track.cname)")
                    media.addAttribute("ssrc", "\(ssrc) msid:\(track.streamID) \(track.trackID)")
                }
            }
            addCandidates(&media, local)
            offer.media.append(media)
        }
        if !slots.isEmpty { offer.lines.insert(SDPLine("a", "group:BUNDLE \(slots.map(\.mid).joined(separator: " "))"), at: 3) }
        return offer
    }

    /// Our payload type for each distinct codec of a subscriber transport: one numbering for the
    /// whole bundle, whatever numbers the publishers chose (aiortc's Opus 96 is Chromium's VP8).
    static func subscriberPayloadTypes(_ slots: [SubscriberSlot]) -> [String: UInt8] {
        var assigned: [String: UInt8] = [:]
        var used: Set<UInt8> = []
        let preferred: [String: UInt8] = ["opus": 111, "vp8": 96, "h264": 102]
        func assign(_ key: String, preferring start: UInt8) {
            guard assigned[key] == nil else { return }
            var payloadType = start
            while used.contains(payloadType) { payloadType = payloadType >= 127 ? 96 : payloadType + 1 }
            assigned[key] = payloadType
            used.insert(payloadType)
        }
        for slot in slots { assign(signature(slotCodec(slot)), preferring: preferred[slotCodec(slot).name.lowercased()] ?? 98) }
        // Each video codec's RTX next to it, once every codec has its number.
        for slot in slots where slot.kind == "video" {
            let codec = slotCodec(slot)
            assign(retransmissionSignature(codec), preferring: (assigned[signature(codec)] ?? 96) + 1)
        }
        return assigned
    }

    static func retransmissionSignature(_ codec: SDPCodec) -> String { "rtx/" + signature(codec) }

    /// The codec a slot offers: its track's, or for an inactive slot a placeholder of its kind.
    static func slotCodec(_ slot: SubscriberSlot) -> SDPCodec {
        if let track = slot.track { return track.codec }
        return slot.kind == "audio"
            ? SDPCodec(payloadType: 111, name: "opus", clockRate: 48_000, channels: 2, fmtp: "minptime=10;useinbandfec=1")
            : SDPCodec(payloadType: 96, name: "VP8", clockRate: 90_000)
    }

    static func signature(_ codec: SDPCodec) -> String {
        "\(codec.name.lowercased())/\(codec.clockRate)/\(codec.channels ?? 1)/\(codec.fmtp)"
    }

    /// What the subscriber accepted, per mid.
    public struct SubscriberAnswer: Sendable {
        public var remote: RemoteTransportParameters
        public var media: [String: (direction: MediaDirection, codecs: [SDPCodec], extmaps: [Extmap])]
    }

    public static func readSubscriberAnswer(_ answer: SessionDescription, for offer: SessionDescription) throws(SDPError)
        -> SubscriberAnswer
    {
        let remote = try remoteParameters(of: answer)
        guard remote.setup == .active || remote.setup == .passive else {
            throw SDPError(line: 0, text: "", reason: "an answer to actpass must say a=setup:active or a=setup:passive")
        }
        guard answer.media.count == offer.media.count else {
            throw SDPError(line: 0, text: "", reason: "the answer has \(answer.media.count) m-sections; the offer had \(offer.media.count)")
        }
        var media: [String: (MediaDirection, [SDPCodec], [Extmap])] = [:]
        for (index, section) in answer.media.enumerated() {
            guard let mid = section.mid ?? offer.media[index].mid else { continue }
            guard mid == offer.media[index].mid else {
                throw SDPError(line: 0, text: "", reason: "m-section \(index) has mid \(mid); the offer's is \(offer.media[index].mid ?? "none")")
            }
            media[mid] = (section.isRejected ? .inactive : section.direction, section.codecs, section.extmaps)
        }
        return SubscriberAnswer(remote: remote, media: media.mapValues { (direction: $0.0, codecs: $0.1, extmaps: $0.2) })
    }

    /// Our role from the two setup attributes (RFC 5763 §5): whoever is active is the client.
    public static func weAreDTLSClient(ourSetup: DTLSSetup, theirSetup: DTLSSetup) -> Bool {
        ourSetup == .active || (ourSetup == .actpass && theirSetup == .passive)
    }

    // MARK: Building blocks

    static func sessionLines(_ local: LocalTransportParameters) -> [SDPLine] {
        [
            SDPLine("o", "- \(local.sessionID) \(local.sessionVersion) IN IP4 0.0.0.0"),
            SDPLine("s", "-"),
            SDPLine("t", "0 0"),
            SDPLine("a", "ice-lite"),
            SDPLine("a", "msid-semantic: WMS *"),
        ]
    }

    static func addTransport(_ media: inout MediaDescription, local: LocalTransportParameters, setup: DTLSSetup, mid: String) {
        media.addAttribute("ice-ufrag", local.iceUfrag)
        media.addAttribute("ice-pwd", local.icePassword)
        media.addAttribute("ice-options", "trickle")
        media.addAttribute("fingerprint", local.fingerprint.attributeValue)
        media.addAttribute("setup", setup.rawValue)
        media.addAttribute("mid", mid)
    }

    static func addCodecs(_ media: inout MediaDescription, _ codecs: [SDPCodec]) {
        for codec in codecs {
            media.addAttribute("rtpmap", "\(codec.payloadType) \(codec.name)/\(codec.clockRate)\(codec.channels.map { "/\($0)" } ?? "")")
            for feedback in codec.feedback { media.addAttribute("rtcp-fb", "\(codec.payloadType) \(feedback)") }
            if !codec.fmtp.isEmpty { media.addAttribute("fmtp", "\(codec.payloadType) \(codec.fmtp)") }
        }
    }

    static func addCandidates(_ media: inout MediaDescription, _ local: LocalTransportParameters) {
        for candidate in local.candidates { media.addAttribute("candidate", candidate.value) }
        media.addAttribute("end-of-candidates")
    }

    static func rejected(_ section: MediaDescription, mid: String) -> MediaDescription {
        var media = MediaDescription(kind: section.kind, port: 0, proto: section.proto, formats: Array(section.formats.prefix(1)))
        media.lines.append(SDPLine("c", "IN IP4 0.0.0.0"))
        media.addAttribute("mid", mid)
        media.addAttribute(MediaDirection.inactive.rawValue)
        return media
    }
}
