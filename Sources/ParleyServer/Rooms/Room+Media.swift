import Logging
import ParleyProtocol
import SFU
import STUN
import WebRTC

/// A participant's media negotiation state, owned by the room actor.
struct ParticipantMedia {
    /// Tracks this participant publishes, in m-line order.
    var tracks: [TrackInfo] = []
    /// The subscriber transport's m-lines, in order; a slot whose track is gone stays (inactive)
    /// to be reused, so m-line order and count never shrink.
    var slots: [SubscriberSlot] = []
    /// Tracks the participant asked not to receive (selective subscription); everything else
    /// is received by default.
    var excluded: Set<String> = []
    /// What the participant asked for of each track it receives (quality or tile size).
    var limits: [String: SubscriptionLimit] = [:]
    var nextMid = 0
    var offersSent = 0
    /// The id of the subscriber offer awaiting its answer: one at a time, so no glare.
    var outstandingOffer: String?
    var lastOffer: MediaNegotiation.SubscriberOfferState?
    /// The set changed while an offer was outstanding: offer again after the answer.
    var needsOffer = false
    /// A WHEP player's fixed m-lines (it never gets offers).
    var playback: Playback?
}

struct SubscriberSlot {
    var mid: String
    var kind: MediaKind
    var trackSid: String?
    var publisherSid: String?
    var downTrack: DownTrack?
}

/// Relays the SFU's loop-side events into the actor, which runs on the same loop.
final class SFUEventRelay: SFURoomDelegate, @unchecked Sendable {
    weak var room: Room?

    func sfuRoom(_ sfu: SFURoom, speakersChanged speakers: [ActiveSpeaker]) {
        room?.assumeIsolated { $0.broadcastSpeakers(speakers) }
    }

    func sfuRoom(_ sfu: SFURoom, participant sid: String, transport role: TransportRole, closed reason: WebRTCTransport.CloseReason) {
        room?.assumeIsolated { $0.mediaTransportClosed(sid: sid, role: role, reason: reason) }
    }

    func sfuRoom(_ sfu: SFURoom, downTrack: DownTrack, pausedForBandwidth paused: Bool) {
        let subscriber = downTrack.subscriberSid
        let publisher = downTrack.publication.participantSid
        let track = downTrack.publication.trackSid
        room?.assumeIsolated { $0.trackPausedForBandwidth(track, of: publisher, for: subscriber, paused: paused) }
    }

    func sfuRoom(_ sfu: SFURoom, downTrack: DownTrack, switchedToLayer layer: Int) {
        let subscriber = downTrack.subscriberSid
        let publisher = downTrack.publication.participantSid
        let track = downTrack.publication.trackSid
        let rid = downTrack.publication.layers[layer].rid ?? String(layer)
        room?.assumeIsolated { room in
            guard let participant = room.findParticipant(sid: subscriber) else { return }
            room.deliver(room.codec.encode(TrackLayer(participant: publisher, track: track, layer: layer, rid: rid)), to: participant)
        }
    }

    func sfuRoom(_ sfu: SFURoom, publication: Publication, neededLayers: [PublishedLayer]) {
        let publisher = publication.participantSid
        let track = publication.trackSid
        // Layers of an a=ssrc-group:SIM offer have no rid: named by their index, as the track's `layers` name them.
        let rids = neededLayers.map { $0.rid ?? String($0.index) }
        room?.assumeIsolated { $0.publisherLayersNeeded(track, of: publisher, rids: rids) }
    }
}

extension Room {
    // MARK: Media (the room API)

    /// Subscribes `sid` to `tracks` again (`subscribe` true) or stops receiving them; everything
    /// else it receives by default. A quality or a tile size (`maxWidth`/`maxHeight`) caps the
    /// simulcast layer it gets of them. Its subscriber transport gets an offer if that changed.
    public func subscribe(
        _ tracks: [String], _ subscribe: Bool, quality: VideoQuality? = nil, maxWidth: Int? = nil, maxHeight: Int? = nil, for sid: String
    ) throws(ProtocolError) {
        let participant = try member(sid)
        var limit: SubscriptionLimit?
        if quality != nil || maxWidth != nil || maxHeight != nil {
            guard (maxWidth ?? 1) > 0, (maxHeight ?? 1) > 0 else { throw ProtocolError(.badRequest, "maxWidth and maxHeight must be positive") }
            limit = SubscriptionLimit(
                quality: quality.flatMap { SubscriptionLimit.Quality(rawValue: $0.rawValue) } ?? .high, maxWidth: maxWidth, maxHeight: maxHeight)
        }
        guard participant.grants.subscribe else { throw ProtocolError(.forbidden, "token lacks the subscribe grant") }
        let known = Set(participants.flatMap { $0.media.tracks.map(\.sid) })
        let unknown = tracks.filter { !known.contains($0) }
        guard unknown.isEmpty else { throw ProtocolError(.notFound, "no such track: \(unknown.joined(separator: ", "))") }
        if subscribe {
            participant.media.excluded.subtract(tracks)
        } else {
            participant.media.excluded.formUnion(tracks)
        }
        if let limit {
            for track in tracks { participant.media.limits[track] = limit }
            for slot in participant.media.slots {
                if let downTrack = slot.downTrack, let trackSid = slot.trackSid, tracks.contains(trackSid) { sfu.setLimit(limit, for: downTrack) }
            }
        }
        updateSubscriptions(of: participant)
    }

    /// Tells a subscriber one of its tracks paused for lack of bandwidth, or resumed.
    func trackPausedForBandwidth(_ track: String, of publisher: String, for subscriberSid: String, paused: Bool) {
        guard let subscriber = findParticipant(sid: subscriberSid) else { return }
        let frame = paused ? codec.encode(TrackPaused(participant: publisher, track: track)) : codec.encode(TrackResumed(participant: publisher, track: track))
        deliver(frame, to: subscriber)
    }

    /// Dynacast: tells a publisher which simulcast layers of its track anyone needs.
    func publisherLayersNeeded(_ track: String, of publisherSid: String, rids: [String]) {
        guard let publisher = findParticipant(sid: publisherSid) else { return }
        deliver(codec.encode(PublisherLayers(track: track, active: rids)), to: publisher)
    }

    /// Mutes or unmutes one of `sid`'s tracks: forwarding stops or resumes (with a keyframe), the
    /// others hear `track.muted`, and the caller gets the event to answer with.
    public func setMuted(_ muted: Bool, track trackSid: String, of sid: String) throws(ProtocolError) -> TrackMuted {
        let participant = try member(sid)
        guard let index = participant.media.tracks.firstIndex(where: { $0.sid == trackSid }) else {
            throw ProtocolError(.notFound, "no such track of yours: \(trackSid)")
        }
        return setMuted(participant: participant, trackIndex: index, muted: muted)
    }

    /// The admin API's mute: as the participant's own, and the participant hears of it too, so
    /// its client shows the track muted. `trackSid` may also be a source (`microphone`, `camera`,
    /// `screen_share`) or a kind (`audio`, `video`): the participant's first such track.
    public func setMuted(_ muted: Bool, track trackSid: String, ofIdentity identity: String) throws(ProtocolError) -> TrackMuted {
        guard let participant = findParticipant(identity: identity) else {
            throw ProtocolError(.notFound, "no participant \(identity) in room \(name)")
        }
        let tracks = participant.media.tracks
        guard let index = tracks.firstIndex(where: { $0.sid == trackSid })
            ?? tracks.firstIndex(where: { $0.source == trackSid })
            ?? tracks.firstIndex(where: { $0.kind == trackSid })
        else {
            throw ProtocolError(.notFound, "participant \(identity) has no track \(trackSid)")
        }
        let event = setMuted(participant: participant, trackIndex: index, muted: muted)
        deliver(codec.encode(event), to: participant)
        logger.info("track muted by the admin API", metadata: ["participant": "\(participant.sid)", "track": "\(event.track)", "muted": "\(muted)"])
        return event
    }

    /// Mutes or unmutes a participant's track. The others get `track.muted` when it changed; the
    /// event is returned for the participant (with its request's id, or as an event).
    func setMuted(participant: Participant, trackIndex index: Int, muted: Bool) -> TrackMuted {
        let track = participant.media.tracks[index]
        let changed = track.muted != muted
        if changed {
            participant.media.tracks[index].muted = muted
            if let publication = sfu.publication(trackSid: track.sid) { sfu.setMuted(publication, muted) }
        }
        let event = TrackMuted(participant: participant.sid, track: track.sid, muted: muted)
        if changed, !participant.hidden { broadcast(codec.encode(event), except: participant) }
        return event
    }

    // MARK: Publisher

    /// What the room answers a publisher's offer with: the SDP answer and the participant's
    /// tracks after it (kept ones first, then the new ones).
    public struct PublisherAnswer: Sendable, Equatable {
        public var sdp: String
        public var tracks: [TrackInfo]
    }

    /// Answers `sid`'s offer on its publisher transport: each sending m-line it accepts becomes a
    /// track (published to the others, who are offered it), m-lines no longer sending end theirs,
    /// and a re-offer with new ICE credentials restarts ICE. The answer's candidates are the
    /// room's media addresses (signaling trickles them too).
    public func publish(offer sdp: String, from sid: String, sources: [String: String] = [:]) throws(ProtocolError) -> PublisherAnswer {
        let participant = try member(sid)
        guard participant.grants.publish else { throw ProtocolError(.forbidden, "token lacks the publish grant") }
        let known: Set<String> = ["microphone", "camera", "screen_share", "screen_share_audio"]
        if let unknown = sources.values.first(where: { !known.contains($0) }) {
            throw ProtocolError(.badRequest, "unknown track source \(unknown): microphone, camera, screen_share or screen_share_audio")
        }
        let transport = sfu.transport(for: participant.sid, role: .publisher)
        let offer: MediaNegotiation.ClientOffer
        do {
            offer = try MediaNegotiation.readOffer(sdp)
        } catch {
            throw ProtocolError(.badRequest, "invalid SDP offer: \(error)")
        }
        // A re-offer with new ICE credentials is an ICE restart: ours change too.
        if let remote = transport.remote, remote.ice != offer.remote.ice {
            _ = sfu.restartICE(for: participant.sid, role: .publisher)
        }
        let answer: MediaNegotiation.PublisherAnswer
        do {
            answer = try MediaNegotiation.answer(offer, local: localParameters(transport))
            try transport.configure(remote: offer.remote, now: sfu.port.now())
        } catch {
            throw ProtocolError(.badRequest, "cannot answer the offer: \(error)")
        }

        var published: [TrackInfo] = []
        var kept: [TrackInfo] = []
        for media in answer.accepted {
            if let existing = participant.media.tracks.first(where: { $0.mid == media.mid }) {
                kept.append(existing)
                continue
            }
            let track = TrackInfo(
                sid: services.ids.track(), kind: media.kind.rawValue,
                source: sources[media.mid] ?? (media.kind == .audio ? "microphone" : "camera"),
                muted: false, mid: media.mid,
                layers: media.layers.count > 1
                    ? media.layers.enumerated().map { VideoLayer(rid: $1.rid ?? "\($0)", index: $0) } : nil)
            let publication = sfu.publish(
                participant: participant.sid, trackSid: track.sid, kind: media.kind, mid: media.mid, ssrc: media.ssrc, layers: media.layers,
                codecs: media.codecs, extensions: media.extensions, feedback: media.feedback, retransmission: media.retransmission)
            // A screen share comes first when bandwidth is short.
            publication.isScreenShare = track.source == "screen_share"
            published.append(track)
        }
        // m-lines no longer sending: their tracks end.
        let gone = participant.media.tracks.filter { track in !answer.accepted.contains { $0.mid == track.mid } }
        for track in gone {
            if let publication = sfu.publication(trackSid: track.sid) { sfu.unpublish(publication) }
            if !participant.hidden { broadcast(codec.encode(TrackUnpublished(participant: participant.sid, track: track.sid))) }
            emit(.trackUnpublished(participant: participant.info, track: track))
        }
        participant.media.tracks = kept + published
        logger.info(
            "publisher negotiated",
            metadata: ["participant": "\(participant.sid)", "tracks": "\(participant.media.tracks.map { "\($0.kind):\($0.sid)" })"])
        if !participant.hidden {
            for track in published { broadcast(codec.encode(TrackPublished(participant: participant.sid, track: track)), except: participant) }
        }
        for track in published { emit(.trackPublished(participant: participant.info, track: track)) }
        if !published.isEmpty || !gone.isEmpty {
            for other in participants where other !== participant { updateSubscriptions(of: other) }
        }
        return PublisherAnswer(sdp: answer.sdp, tracks: participant.media.tracks)
    }

    // MARK: Subscriber

    /// Brings a participant's subscriber m-lines in line with what it should receive, and
    /// offers when that changed.
    func updateSubscriptions(of participant: Participant) {
        if participant.media.playback != nil { return updatePlayback(of: participant) }
        guard participant.grants.subscribe, participant.connection != nil || participant.heldFrames != nil else { return }
        // Without signaling (WHIP, WHEP before its offer) there is no one to answer an offer.
        guard participant.connection?.endsWithMedia != true else { return }
        var wanted: [(publisher: Participant, track: TrackInfo)] = []
        for publisher in participants where publisher !== participant {
            for track in publisher.media.tracks where !participant.media.excluded.contains(track.sid) {
                wanted.append((publisher, track))
            }
        }
        let wantedSids = Set(wanted.map(\.track.sid))
        var changed = false
        for index in participant.media.slots.indices {
            guard let trackSid = participant.media.slots[index].trackSid, !wantedSids.contains(trackSid) else { continue }
            if let downTrack = participant.media.slots[index].downTrack { sfu.unsubscribe(downTrack) }
            participant.media.slots[index].trackSid = nil
            participant.media.slots[index].publisherSid = nil
            participant.media.slots[index].downTrack = nil
            changed = true
        }
        let present = Set(participant.media.slots.compactMap(\.trackSid))
        for (publisher, track) in wanted where !present.contains(track.sid) {
            guard let kind = MediaKind(rawValue: track.kind), let publication = sfu.publication(trackSid: track.sid) else { continue }
            let index: Int
            if let free = participant.media.slots.firstIndex(where: { $0.trackSid == nil && $0.kind == kind }) {
                index = free
            } else {
                participant.media.slots.append(SubscriberSlot(mid: String(participant.media.nextMid), kind: kind))
                participant.media.nextMid += 1
                index = participant.media.slots.count - 1
            }
            participant.media.slots[index].trackSid = track.sid
            participant.media.slots[index].publisherSid = publisher.sid
            let downTrack = sfu.subscribe(participant.sid, to: publication, mid: participant.media.slots[index].mid)
            if let limit = participant.media.limits[track.sid] { sfu.setLimit(limit, for: downTrack) }
            participant.media.slots[index].downTrack = downTrack
            changed = true
        }
        if changed {
            participant.media.needsOffer = true
            offerToSubscriber(participant)
        }
    }

    /// What was sent while a resumed participant's connection was down is lost: the subscriber
    /// offer awaiting its answer goes again (same id), and tracks published or ended meanwhile
    /// (subscriptions were not updated without a connection) are offered.
    func resumeSubscriptions(of participant: Participant) {
        if let id = participant.media.outstandingOffer, let offer = participant.media.lastOffer {
            deliver(codec.encodeRequest(OfferMessage(target: .subscriber, sdp: offer.sdp), id: id), to: participant)
        }
        updateSubscriptions(of: participant)
    }

    private func offerToSubscriber(_ participant: Participant) {
        guard participant.media.needsOffer, participant.media.outstandingOffer == nil else { return }
        participant.media.needsOffer = false
        let transport = sfu.transport(for: participant.sid, role: .subscriber)
        let offer = MediaNegotiation.subscriberOffer(
            slots: participant.media.slots, publications: { [sfu] sid in sfu.publication(trackSid: sid) },
            local: localParameters(transport), previous: participant.media.lastOffer)
        participant.media.lastOffer = offer
        participant.media.offersSent += 1
        let id = "s\(participant.media.offersSent)"
        participant.media.outstandingOffer = id
        deliver(codec.encodeRequest(OfferMessage(target: .subscriber, sdp: offer.sdp), id: id), to: participant)
        if participant.media.offersSent == 1 { trickleLocalCandidates(.subscriber, to: participant) }
    }

    /// Applies `sid`'s answer to the subscriber offer `offerID` (the room offers one at a time
    /// and offers again after an answer if the tracks changed meanwhile).
    public func applySubscriberAnswer(_ sdp: String, to offerID: String?, from sid: String) throws(ProtocolError) {
        let participant = try member(sid)
        guard participant.grants.publish || participant.grants.subscribe else {
            throw ProtocolError(.forbidden, "token lacks the publish and subscribe grants")
        }
        guard let outstanding = participant.media.outstandingOffer, let offer = participant.media.lastOffer else {
            throw ProtocolError(.conflict, "no subscriber offer is waiting for an answer")
        }
        guard offerID == outstanding else {
            throw ProtocolError(.conflict, "answer is for offer \(offerID ?? "(none)"); the outstanding offer is \(outstanding)")
        }
        let summary: MediaNegotiation.SubscriberAnswer
        do {
            summary = try MediaNegotiation.readSubscriberAnswer(sdp, for: offer)
        } catch {
            throw ProtocolError(.badRequest, "invalid SDP answer: \(error)")
        }
        participant.media.outstandingOffer = nil
        let transport = sfu.transport(for: participant.sid, role: .subscriber)
        do {
            try transport.configure(remote: summary.remote, now: sfu.port.now())
        } catch {
            throw ProtocolError(.badRequest, "cannot use the answer: \(error)")
        }
        for slot in participant.media.slots {
            guard let downTrack = slot.downTrack, let accepted = summary.media[slot.mid] else { continue }
            sfu.negotiate(downTrack, codecs: accepted.codecs, retransmissionPayloadType: accepted.retransmissionPayloadType, extensions: accepted.extensions)
        }
        offerToSubscriber(participant)
    }

    /// The admin view of one participant's media, read on the room's loop.
    public func mediaInfo(identity: String) -> ParticipantMediaInfo? {
        guard let participant = findParticipant(identity: identity) else { return nil }
        let media = sfu.participants[participant.sid]
        let now = sfu.port.now()
        let bandwidth = media?.bandwidth
        let source = bandwidth.map { $0.hasFeedback ? "twcc" : ($0.receiverEstimate != nil ? "remb" : "none") } ?? "none"
        let downlink = ParticipantMediaInfo.Downlink(
            estimate: Int(bandwidth?.available(fallback: 0) ?? 0), source: source, feedbackPackets: Int(bandwidth?.feedbackReceived ?? 0),
            probeBytes: Int(bandwidth?.probeBytesSent ?? 0), sending: bandwidth?.videoSendingRate,
            trialGoal: source == "remb" ? bandwidth?.receiverTrial.goal : nil,
            failedTrials: source == "remb" ? bandwidth?.receiverTrial.failures : nil)
        let publications = (media?.publications ?? []).map { publication in
            ParticipantMediaInfo.Publication(
                track: publication.trackSid, kind: publication.kind.rawValue,
                layers: publication.layers.map { layer in
                    ParticipantMediaInfo.Layer(
                        rid: layer.rid, index: layer.index, ssrc: layer.ssrc, width: layer.width, height: layer.height,
                        bitrate: layer.bitrates.last ?? 0, active: layer.isActive(now: now),
                        requested: publication.requestedLayers.contains(layer.index), packets: Int(layer.packetsReceived),
                        repairs: Int(layer.repairsReceived))
                })
        }
        let subscriptions = (media?.downTracks ?? []).map { downTrack in
            ParticipantMediaInfo.Subscription(
                track: downTrack.publication.trackSid, publisher: downTrack.publication.participantSid, kind: downTrack.publication.kind.rawValue,
                layer: downTrack.currentLayer, targetLayer: downTrack.targetLayer, maxTemporalLayer: downTrack.maxTemporalLayer,
                paused: downTrack.isPausedForBandwidth, switches: Int(downTrack.layerSwitches), retransmissions: Int(downTrack.retransmissionsSent))
        }
        return ParticipantMediaInfo(participant: participant.info, downlink: downlink, publications: publications, subscriptions: subscriptions)
    }

    // MARK: Helpers

    func localParameters(_ transport: WebRTCTransport) -> MediaNegotiation.LocalParameters {
        MediaNegotiation.LocalParameters(
            ice: transport.localICE, fingerprint: services.media.fingerprint, addresses: sfu.port.localAddresses)
    }

    /// Our candidates are in the SDP already; they are trickled too (PROTOCOL.md), then null.
    func trickleLocalCandidates(_ target: TransportTarget, to participant: Participant) {
        for (index, address) in sfu.port.localAddresses.enumerated() {
            let candidate = CandidateInit(candidate: MediaNegotiation.candidateLine(address, index: index), sdpMid: nil, sdpMLineIndex: 0)
            deliver(codec.encode(CandidateMessage(target: target, candidate: candidate)), to: participant)
        }
        deliver(codec.encode(CandidateMessage(target: target, candidate: nil)), to: participant)
    }

    func broadcastSpeakers(_ speakers: [ActiveSpeaker]) {
        let visible = speakers.filter { speaker in findParticipant(sid: speaker.participantSid).map { !$0.hidden } ?? false }
        broadcast(codec.encode(SpeakersEvent(speakers: visible.map { SpeakerLevel(participant: $0.participantSid, level: $0.level) })))
        self.speakers = visible.map(\.participantSid)
        for player in participants where player.media.playback != nil { updatePlayback(of: player) }
    }

    func mediaTransportClosed(sid: String, role: TransportRole, reason: WebRTCTransport.CloseReason) {
        logger.notice("media transport closed", metadata: ["participant": "\(sid)", "transport": "\(role.rawValue)", "reason": "\(reason.rawValue)"])
        // A session that is nothing but its media (WHIP) ends with it.
        if let participant = findParticipant(sid: sid), participant.connection?.endsWithMedia == true {
            leave(sid: sid)
        }
    }

    /// An ICE restart outside an offer (WHIP's and WHEP's PATCH): the transport takes the
    /// client's new credentials and gets new ones of ours, returned with our candidates' lines.
    public func restartICE(of sid: String, role: TransportRole, remote: ICECredentials) throws(ProtocolError)
        -> (local: ICECredentials, candidates: [String])
    {
        _ = try member(sid)
        let transport = sfu.transport(for: sid, role: role)
        guard var parameters = transport.remote else { throw ProtocolError(.conflict, "no \(role.rawValue) session was negotiated") }
        guard let local = sfu.restartICE(for: sid, role: role) else { throw ProtocolError(.notFound, "no \(role.rawValue) transport") }
        parameters.ice = remote
        do {
            try transport.configure(remote: parameters, now: sfu.port.now())
        } catch {
            throw ProtocolError(.badRequest, "cannot restart ICE: \(error)")
        }
        let candidates = sfu.port.localAddresses.enumerated().map { MediaNegotiation.candidateLine($1, index: $0) }
        return (local, candidates)
    }

    /// A participant left: its tracks end for everyone, its transports close.
    func removeMedia(of participant: Participant) {
        let tracks = participant.media.tracks
        let info = participant.info
        sfu.removeParticipant(participant.sid)
        participant.media = ParticipantMedia()
        guard !tracks.isEmpty else { return }
        if !participant.hidden {
            for track in tracks { broadcast(codec.encode(TrackUnpublished(participant: participant.sid, track: track.sid))) }
        }
        for track in tracks { emit(.trackUnpublished(participant: info, track: track)) }
        for other in participants where other !== participant { updateSubscriptions(of: other) }
    }
}
