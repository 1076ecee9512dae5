import Addresses
import SDP
import SFU
import STUN
import WebRTC

/// Between the SDP module's offer/answer and the transport and SFU types: what a description
/// means for a `WebRTCTransport` (credentials, fingerprint, DTLS role) and for publications and
/// down-tracks (payload types, extension ids, feedback).
enum MediaNegotiation {
    struct LocalParameters {
        var ice: ICECredentials
        var fingerprint: CertificateFingerprint
        var addresses: [TransportAddress]
    }

    /// A client's offer: a publisher's, or a WHEP player's.
    struct ClientOffer {
        var description: SDP.SessionDescription
        var remote: WebRTCTransport.RemoteParameters
    }

    struct AcceptedMedia {
        var mid: String
        var kind: MediaKind
        var ssrc: UInt32?
        var codecs: [RTPCodec]
        var extensions: RTPExtensionIDs
        var feedback: Publication.Feedback
        /// Simulcast layers, lowest first; empty for a single stream.
        var layers: [Publication.LayerDescription]
        /// RTX payload type → the payload type it repairs.
        var retransmission: [UInt8: UInt8]
    }

    struct PublisherAnswer {
        var sdp: String
        var accepted: [AcceptedMedia]
    }

    struct SubscriberAnswer {
        var remote: WebRTCTransport.RemoteParameters
        var media: [String: (codecs: [RTPCodec], retransmissionPayloadType: UInt8?, extensions: RTPExtensionIDs)]
    }

    static func readOffer(_ text: String) throws -> ClientOffer {
        let description = try SDP.SessionDescription(parsing: text)
        let remote = try Negotiation.remoteParameters(of: description)
        // We answer passive to actpass or active, active to passive.
        let ourSetup: DTLSSetup = remote.setup == .passive ? .active : .passive
        return ClientOffer(description: description, remote: try transportParameters(remote, ourSetup: ourSetup))
    }

    static func answer(_ offer: ClientOffer, local: LocalParameters) throws -> PublisherAnswer {
        let answer = try Negotiation.answerPublisherOffer(offer.description, local: sdpParameters(local, version: 1))
        let accepted = answer.accepted.compactMap { media -> AcceptedMedia? in
            guard let kind = MediaKind(rawValue: media.kind) else { return nil }
            let feedback = Set(media.codecs.first?.feedback ?? [])
            return AcceptedMedia(
                mid: media.mid, kind: kind, ssrc: media.ssrc, codecs: media.codecs.map(rtpCodec), extensions: extensionIDs(media.extmaps),
                feedback: Publication.Feedback(
                    nack: feedback.contains("nack"), pli: feedback.contains("nack pli"), fir: feedback.contains("ccm fir"),
                    remb: feedback.contains("goog-remb"), transportCC: feedback.contains("transport-cc")),
                layers: simulcastLayers(media), retransmission: media.retransmissionPayloadTypes)
        }
        return PublisherAnswer(sdp: answer.description.serialized(), accepted: accepted)
    }

    /// The layers of a simulcast m-line, lowest first. Rids say nothing of size; the usual
    /// names (q, h, f) are put in that order, any others kept in the offer's order, as browsers
    /// list encodings lowest first. An `a=ssrc-group:SIM` offer (no rids) lists its SSRCs lowest
    /// first, each paired with its RTX by `FID`.
    static func simulcastLayers(_ media: NegotiatedMedia) -> [Publication.LayerDescription] {
        let pairs = Dictionary(
            media.ssrcGroups.filter { $0.semantics == "FID" && $0.ssrcs.count == 2 }.map { ($0.ssrcs[0], $0.ssrcs[1]) },
            uniquingKeysWith: { first, _ in first })
        if media.rids.count > 1 {
            let usual = ["q", "h", "f"]
            let rids = Set(media.rids).isSubset(of: usual) ? usual.filter(media.rids.contains) : media.rids
            return rids.map { Publication.LayerDescription(rid: $0) }
        }
        if let sim = media.ssrcGroups.first(where: { $0.semantics == "SIM" }), sim.ssrcs.count > 1 {
            return sim.ssrcs.prefix(MediaCapabilities.maxSimulcastLayers).map {
                Publication.LayerDescription(ssrc: $0, retransmissionSSRC: pairs[$0])
            }
        }
        if let ssrc = media.ssrc { return [Publication.LayerDescription(ssrc: ssrc, retransmissionSSRC: pairs[ssrc])] }
        return []
    }

    /// Answers a WHEP player's offer: each m-line it receives on gets fixed SSRCs from
    /// `newSSRC`, announced under the room's name, and becomes a playback slot.
    static func answerPlayer(_ offer: ClientOffer, local: LocalParameters, roomName: String, newSSRC: () -> UInt32) throws
        -> (sdp: String, slots: [PlaybackSlot])
    {
        var streams: [String: Negotiation.PlayerStream] = [:]
        var used: Set<UInt32> = []
        func fresh() -> UInt32 {
            var ssrc = newSSRC()
            while used.contains(ssrc) { ssrc = newSSRC() }
            used.insert(ssrc)
            return ssrc
        }
        let answer = try Negotiation.answerPlayerOffer(offer.description, local: sdpParameters(local, version: 1)) { mid, kind in
            let stream = Negotiation.PlayerStream(
                ssrc: fresh(), retransmissionSSRC: fresh(), cname: roomName, streamID: roomName, trackID: "\(kind)-\(mid)")
            streams[mid] = stream
            return stream
        }
        let slots = answer.accepted.compactMap { media -> PlaybackSlot? in
            guard let kind = MediaKind(rawValue: media.kind), let stream = streams[media.mid] else { return nil }
            let codecs = media.codecs.filter { $0.name.lowercased() != "rtx" }.map(rtpCodec)
            // The player's RTX for each codec it takes, by the payload type it repairs.
            let retransmission = Dictionary(media.retransmissionPayloadTypes.map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
            return PlaybackSlot(
                mid: media.mid, kind: kind, ssrc: stream.ssrc, retransmissionSSRC: stream.retransmissionSSRC, codecs: codecs,
                retransmission: retransmission, extensions: extensionIDs(media.extmaps))
        }
        return (answer.description.serialized(), slots)
    }

    struct SubscriberOfferState {
        var description: SDP.SessionDescription
        var sdp: String
    }

    static func subscriberOffer(
        slots: [SubscriberSlot], publications: (String) -> Publication?, local: LocalParameters, previous: SubscriberOfferState?
    ) -> SubscriberOfferState {
        let described = slots.map { slot -> Negotiation.SubscriberSlot in
            guard let downTrack = slot.downTrack, let trackSid = slot.trackSid, let publication = publications(trackSid),
                let codec = publication.codecs.first
            else { return Negotiation.SubscriberSlot(mid: slot.mid, kind: slot.kind.rawValue, track: nil) }
            return Negotiation.SubscriberSlot(
                mid: slot.mid, kind: slot.kind.rawValue,
                track: .init(
                    ssrc: downTrack.outgoingSSRC, cname: publication.participantSid, streamID: publication.participantSid,
                    trackID: publication.trackSid,
                    codec: SDPCodec(payloadType: codec.payloadType, name: codec.name, clockRate: codec.clockRate, channels: codec.channels, fmtp: codec.fmtp),
                    retransmissionSSRC: publication.kind == .video ? downTrack.retransmissionSSRC : nil))
        }
        let description = Negotiation.makeSubscriberOffer(slots: described, local: sdpParameters(local, version: 1), previous: previous?.description)
        return SubscriberOfferState(description: description, sdp: description.serialized())
    }

    static func readSubscriberAnswer(_ text: String, for offer: SubscriberOfferState) throws -> SubscriberAnswer {
        let description = try SDP.SessionDescription(parsing: text)
        let summary = try Negotiation.readSubscriberAnswer(description, for: offer.description)
        var media: [String: (codecs: [RTPCodec], retransmissionPayloadType: UInt8?, extensions: RTPExtensionIDs)] = [:]
        for (mid, accepted) in summary.media where accepted.direction.receives {
            let codecs = accepted.codecs.filter { $0.name.lowercased() != "rtx" }
            // The subscriber's RTX for the codec it takes (its first), if it kept one.
            let rtx = accepted.codecs.first { codec in
                codec.name.lowercased() == "rtx" && codec.parameter("apt").flatMap(UInt8.init) == codecs.first?.payloadType
            }
            media[mid] = (codecs.map(rtpCodec), rtx?.payloadType, extensionIDs(accepted.extmaps))
        }
        return SubscriberAnswer(remote: try transportParameters(summary.remote, ourSetup: .actpass), media: media)
    }

    static func parseCandidate(_ text: String) -> ICECandidate? { ICECandidate(text) }

    /// A host candidate line for one of our addresses (RFC 8445 §5.1.2 priority, type host).
    static func candidateLine(_ address: TransportAddress, index: Int) -> String {
        "candidate:" + hostCandidate(address, index: index).value
    }

    // MARK: Conversions

    private static func hostCandidate(_ address: TransportAddress, index: Int) -> ICECandidate {
        let localPreference = UInt32(65_535 - min(index, 65_535))
        let priority = (126 << 24) | (localPreference << 8) | 255
        return ICECandidate(foundation: "\(index + 1)", priority: priority, address: address.ip.description, port: Int(address.port))
    }

    private static func sdpParameters(_ local: LocalParameters, version: UInt64) -> LocalTransportParameters {
        LocalTransportParameters(
            iceUfrag: local.ice.ufrag, icePassword: local.ice.password,
            fingerprint: Fingerprint(algorithm: local.fingerprint.algorithm, value: local.fingerprint.hex),
            candidates: local.addresses.enumerated().map { hostCandidate($1, index: $0) },
            sessionID: String(UInt64.random(in: 1...UInt64(Int64.max))), sessionVersion: version)
    }

    private static func transportParameters(_ remote: RemoteTransportParameters, ourSetup: DTLSSetup) throws
        -> WebRTCTransport.RemoteParameters
    {
        guard let fingerprint = CertificateFingerprint(sdpValue: remote.fingerprint.attributeValue) else {
            throw SDPError(line: 0, text: "", reason: "fingerprint \(remote.fingerprint.attributeValue) is not usable")
        }
        let client = Negotiation.weAreDTLSClient(ourSetup: ourSetup, theirSetup: remote.setup)
        return WebRTCTransport.RemoteParameters(
            ice: ICECredentials(ufrag: remote.iceUfrag, password: remote.icePassword), fingerprint: fingerprint,
            dtlsRole: client ? .client : .server)
    }

    private static func rtpCodec(_ codec: SDPCodec) -> RTPCodec {
        RTPCodec(payloadType: codec.payloadType, name: codec.name, clockRate: codec.clockRate, channels: codec.channels, fmtp: codec.fmtp)
    }

    private static func extensionIDs(_ extmaps: [Extmap]) -> RTPExtensionIDs {
        func id(_ uri: String) -> UInt8 { extmaps.first { $0.uri == uri }?.id ?? 0 }
        return RTPExtensionIDs(
            mid: id(Extmap.midURI), audioLevel: id(Extmap.audioLevelURI), absSendTime: id(Extmap.absSendTimeURI),
            transportCC: id(Extmap.transportCCURI), absCaptureTime: id(Extmap.absCaptureTimeURI), rid: id(Extmap.ridURI),
            repairedRID: id(Extmap.repairedRIDURI))
    }
}
