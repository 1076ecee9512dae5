import ParleyProtocol
import SFU
import StreamAllocation
import WebRTC

/// A WHEP player's side of the room: the m-lines its offer had, each sending one of the room's
/// tracks on fixed SSRCs, re-pointed as the followed participant changes.
struct Playback {
    var slots: [PlaybackSlot]
    /// The identity the player asked for (`?participant=`), else nil: it follows the speaker.
    var pinnedIdentity: String?
    /// The sid followed now.
    var followed: String?
}

struct PlaybackSlot {
    var mid: String
    var kind: MediaKind
    var ssrc: UInt32
    var retransmissionSSRC: UInt32
    /// What the player takes, with its payload types, best first.
    var codecs: [RTPCodec]
    /// Payload type → the player's RTX payload type for it.
    var retransmission: [UInt8: UInt8]
    var extensions: RTPExtensionIDs
    /// The track sent now, if any.
    var trackSid: String?
    /// The latest down-track of this m-line, kept while nothing is sent so the next source
    /// continues its numbering.
    var downTrack: DownTrack?
}

extension Room {
    /// Answers a WHEP player's offer on `sid`'s subscriber transport: its audio and video
    /// m-lines carry the room's tracks, the first of each kind those of the participant named
    /// `identity` or, without one, of the active speaker. Throws if it receives nothing we send.
    public func play(offer sdp: String, for sid: String, following identity: String?) throws(ProtocolError) -> String {
        let participant = try member(sid)
        guard participant.grants.subscribe else { throw ProtocolError(.forbidden, "token lacks the subscribe grant") }
        guard participant.media.playback == nil else { throw ProtocolError(.conflict, "the player's session is already negotiated") }
        let transport = sfu.transport(for: sid, role: .subscriber)
        let answer: (sdp: String, slots: [PlaybackSlot])
        do {
            let offer = try MediaNegotiation.readOffer(sdp)
            answer = try MediaNegotiation.answerPlayer(offer, local: localParameters(transport), roomName: name, newSSRC: sfu.randomSSRC)
            guard !answer.slots.isEmpty else {
                throw ProtocolError(.badRequest, "the offer receives no audio or video with a codec Parley forwards (Opus, VP8, H.264)")
            }
            try transport.configure(remote: offer.remote, now: sfu.port.now())
        } catch let error as ProtocolError {
            throw error
        } catch {
            throw ProtocolError(.badRequest, "invalid SDP offer: \(error)")
        }
        participant.media.playback = Playback(slots: answer.slots, pinnedIdentity: identity)
        updatePlayback(of: participant)
        return answer.sdp
    }

    /// Brings a player's m-lines in line with whom it follows and what the room publishes.
    func updatePlayback(of player: Participant) {
        guard var playback = player.media.playback else { return }
        // A player that asked for one participant gets nobody else's tracks, and waits for them.
        let pinned = playback.pinnedIdentity.map { identity in findParticipant(identity: identity)?.sid ?? "" }
        let publishers = participants.filter { $0 !== player && !$0.hidden && (pinned == nil || $0.sid == pinned) }
        let tracks = publishers.flatMap { publisher in
            publisher.media.tracks.filter { isPlayable($0.sid, on: playback.slots) }.map { PlaybackSelection.Track(participant: publisher.sid, track: $0.sid, kind: $0.kind) }
        }
        let followed = PlaybackSelection.followed(current: playback.followed, pinned: pinned, speakers: speakers, tracks: tracks)
        if followed != playback.followed {
            logger.info("player follows", metadata: ["player": "\(player.sid)", "participant": "\(followed ?? "nobody")"])
        }
        playback.followed = followed
        for kind in [MediaKind.audio, .video] {
            let indices = playback.slots.indices.filter { playback.slots[$0].kind == kind }
            let wanted = PlaybackSelection.wanted(
                kind: kind.rawValue, count: indices.count, followed: followed, speakers: speakers, tracks: tracks)
            let assigned = PlaybackSelection.assign(current: indices.map { playback.slots[$0].trackSid }, wanted: wanted)
            for (index, trackSid) in zip(indices, assigned) where trackSid != playback.slots[index].trackSid {
                point(&playback.slots[index], at: trackSid, for: player)
            }
        }
        player.media.playback = playback
    }

    /// A track whose codec none of the player's m-lines of its kind takes (H.264 to a VP8-only
    /// player) is left out: the player would get a stream it cannot decode.
    private func isPlayable(_ trackSid: String, on slots: [PlaybackSlot]) -> Bool {
        guard let publication = sfu.publication(trackSid: trackSid),
              let sent = publication.codecs.first(where: { $0.name.lowercased() != "rtx" })
        else { return false }
        return slots.contains { slot in slot.kind == publication.kind && slot.codecs.contains { $0.matches(sent) } }
    }

    /// Sends `trackSid` on `slot`, or nothing: the m-line's stream continues from its latest
    /// source, so the player sees one stream whoever it shows.
    private func point(_ slot: inout PlaybackSlot, at trackSid: String?, for player: Participant) {
        slot.trackSid = nil
        guard let trackSid, let publication = sfu.publication(trackSid: trackSid) else {
            // Paused (no BYE): the down-track stays for the numbering of the next source.
            if let downTrack = slot.downTrack { sfu.unsubscribe(downTrack) }
            return
        }
        let downTrack: DownTrack
        if let previous = slot.downTrack {
            downTrack = sfu.switchSource(previous, to: publication)
        } else {
            downTrack = sfu.subscribe(player.sid, to: publication, mid: slot.mid, ssrcs: (slot.ssrc, slot.retransmissionSSRC))
        }
        // The player's codec for what the publisher sends, its RTX with it.
        let sent = publication.codecs.first { $0.name.lowercased() != "rtx" }
        let taken = sent.flatMap { sent in slot.codecs.first { $0.matches(sent) } }
        sfu.negotiate(
            downTrack, codecs: slot.codecs, retransmissionPayloadType: taken.flatMap { slot.retransmission[$0.payloadType] },
            extensions: slot.extensions)
        slot.downTrack = downTrack
        slot.trackSid = trackSid
    }
}
