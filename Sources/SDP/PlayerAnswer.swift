extension Negotiation {
    /// What one m-line of a player's answer sends: its SSRCs and the names it announces.
    public struct PlayerStream: Sendable, Equatable {
        public var ssrc: UInt32
        public var retransmissionSSRC: UInt32
        public var cname: String
        public var streamID: String
        public var trackID: String

        public init(ssrc: UInt32, retransmissionSSRC: UInt32, cname: String, streamID: String, trackID: String) {
            self.ssrc = ssrc
            self.retransmissionSSRC = retransmissionSSRC
            self.cname = cname
            self.streamID = streamID
            self.trackID = trackID
        }
    }

    /// The answer to a player's offer and the m-lines it sends on (codecs with the player's
    /// payload types, best first, RTX after them; the player's extension ids).
    public struct PlayerAnswer: Sendable {
        public var description: SessionDescription
        public var accepted: [NegotiatedMedia]
        public var remote: RemoteTransportParameters
    }

    /// Answers a player's offer (WHEP: the client only receives) as an ICE-lite sender: each
    /// audio and video section that receives with a supported codec becomes sendonly on the
    /// SSRCs `stream(mid, kind)` gives, keeping every supported codec the player listed (the
    /// room's publishers may use any of them) with its RTX; everything else is rejected.
    public static func answerPlayerOffer(
        _ offer: SessionDescription, capabilities: MediaCapabilities = .standard, local: LocalTransportParameters,
        stream: (_ mid: String, _ kind: String) -> PlayerStream
    ) throws(SDPError) -> PlayerAnswer {
        let remote = try remoteParameters(of: offer)
        guard remote.setup != .holdconn else { throw SDPError(line: 0, text: "", reason: "a=setup:holdconn is not supported") }
        let ourSetup: DTLSSetup = remote.setup == .passive ? .active : .passive
        var answer = SessionDescription(lines: sessionLines(local))
        var accepted: [NegotiatedMedia] = []
        for (index, section) in offer.media.enumerated() {
            guard let mid = section.mid else {
                throw SDPError(line: 0, text: "", reason: "m-section \(index) has no a=mid (BUNDLE needs one)")
            }
            let (codecs, retransmission) = acceptedCodecs(
                of: section, capabilities: capabilities, feedback: Set(subscriberFeedback[section.kind] ?? []))
            let usable = !section.isRejected && section.direction.receives && section.proto.contains("RTP") && codecs.count > retransmission.count
            guard usable else {
                answer.media.append(rejected(section, mid: mid))
                continue
            }
            let sent = Set(subscriberExtensions.filter { $0.kinds.contains(section.kind) }.map(\.uri))
            let extmaps = section.extmaps.filter { sent.contains($0.uri) && $0.id <= 14 }
            let sender = stream(mid, section.kind)
            var media = MediaDescription(kind: section.kind, port: 9, proto: section.proto, formats: codecs.map { String($0.payloadType) })
            media.lines.append(SDPLine("c", "IN IP4 0.0.0.0"))
            addTransport(&media, local: local, setup: ourSetup, mid: mid)
            for extmap in extmaps { media.addAttribute("extmap", Extmap(id: extmap.id, uri: extmap.uri).value) }
            media.addAttribute(MediaDirection.sendonly.rawValue)
            media.addAttribute("msid", "\(sender.streamID) \(sender.trackID)")
            media.addAttribute("rtcp-mux")
            if section.hasAttribute("rtcp-rsize") { media.addAttribute("rtcp-rsize") }
            addCodecs(&media, codecs)
            let ssrcs = retransmission.isEmpty ? [sender.ssrc] : [sender.ssrc, sender.retransmissionSSRC]
            if ssrcs.count > 1 { media.addAttribute("ssrc-group", SSRCGroup(semantics: "FID", ssrcs: ssrcs).value) }
            for ssrc in ssrcs {
                media.addAttribute("ssrc", "\(ssrc) cname:\(sender.cname)")
                media.addAttribute("ssrc", "\(ssrc) msid:\(sender.streamID) \(sender.trackID)")
            }
            addCandidates(&media, local)
            answer.media.append(media)
            accepted.append(
                NegotiatedMedia(
                    mid: mid, kind: section.kind, ssrc: sender.ssrc, msid: "\(sender.streamID) \(sender.trackID)", codecs: codecs,
                    extmaps: extmaps, retransmissionPayloadTypes: retransmission))
        }
        if !accepted.isEmpty { answer.lines.insert(SDPLine("a", "group:BUNDLE \(accepted.map(\.mid).joined(separator: " "))"), at: 3) }
        return PlayerAnswer(description: answer, accepted: accepted, remote: remote)
    }
}
