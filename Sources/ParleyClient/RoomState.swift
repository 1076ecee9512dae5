import ParleyProtocol

/// What a client knows of its room besides itself: the other participants with their tracks
/// and presence, kept from events, and the chat it has seen. Events sent while the signaling
/// connection was down are lost, so after a reconnection `reconcile(with:)` compares with the
/// room as the new `joined` gives it, and the missed chat is fetched after `lastChatSeq`.
struct RoomState {
    private(set) var participants: [ParticipantInfo]
    /// Highest chat seq received; nil while unknown (the server withheld the history on join).
    private(set) var lastChatSeq: Int64?
    /// Messages a catch-up delivered, so their live copies queued behind it are not repeated.
    private var caughtUpChatSeqs: Set<Int64> = []

    init(joined: Joined) {
        participants = joined.participants
        lastChatSeq = joined.chat.messages.last?.seq ?? (joined.chat.hasMore ? nil : 0)
    }

    /// A participant joined, or its info changed.
    mutating func update(_ participant: ParticipantInfo) {
        if let index = index(of: participant.sid) { participants[index] = participant } else { participants.append(participant) }
    }

    mutating func participantLeft(_ sid: String) {
        participants.removeAll { $0.sid == sid }
    }

    mutating func trackPublished(_ track: TrackInfo, by sid: String) {
        guard let index = index(of: sid) else { return }
        participants[index].tracks = (participants[index].tracks ?? []).filter { $0.sid != track.sid } + [track]
    }

    mutating func trackUnpublished(_ trackSid: String, by sid: String) {
        guard let index = index(of: sid) else { return }
        participants[index].tracks?.removeAll { $0.sid == trackSid }
    }

    mutating func trackMuted(_ event: TrackMuted) {
        guard let index = index(of: event.participant), let track = participants[index].tracks?.firstIndex(where: { $0.sid == event.track })
        else { return }
        participants[index].tracks?[track].muted = event.muted
    }

    mutating func presenceChanged(_ event: PresenceEvent) {
        guard let index = index(of: event.participant) else { return }
        participants[index].presence = Presence(status: event.status, text: event.text, since: event.since)
    }

    /// Whether a live chat message is new (a catch-up did not deliver it already).
    mutating func chatArrived(_ message: ChatMessage) -> Bool {
        guard caughtUpChatSeqs.remove(message.seq) == nil else { return false }
        lastChatSeq = max(lastChatSeq ?? message.seq, message.seq)
        return true
    }

    /// The messages of a catch-up page to deliver: others' messages after `lastChatSeq` (our own
    /// were acknowledged to us when sent).
    mutating func caughtUp(_ messages: [ChatMessage], ownIdentity: String) -> [ChatMessage] {
        let after = lastChatSeq ?? 0
        let fresh = messages.filter { $0.seq > after && $0.from.identity != ownIdentity }
        caughtUpChatSeqs.formUnion(fresh.map(\.seq))
        lastChatSeq = max(after, messages.map(\.seq).max() ?? after)
        return fresh
    }

    /// Brings the participants in line with `current` (a reconnection's `joined`) and returns the
    /// events the client would have seen had it stayed connected, in the order the server sends
    /// them (a join without tracks, then each track published).
    mutating func reconcile(with current: [ParticipantInfo]) -> [ParleyRoom.Event] {
        var events: [ParleyRoom.Event] = []
        for old in participants where !current.contains(where: { $0.sid == old.sid }) {
            events.append(.participantLeft(sid: old.sid, identity: old.identity))
        }
        for now in current {
            let tracks = now.tracks ?? []
            guard let old = participants.first(where: { $0.sid == now.sid }) else {
                var joined = now
                joined.tracks = []
                events.append(.participantJoined(joined))
                events += tracks.map { .trackPublished(participant: now.sid, track: $0) }
                continue
            }
            let oldTracks = old.tracks ?? []
            for track in oldTracks where !tracks.contains(where: { $0.sid == track.sid }) {
                events.append(.trackUnpublished(participant: now.sid, track: track.sid))
            }
            for track in tracks where !oldTracks.contains(where: { $0.sid == track.sid }) {
                events.append(.trackPublished(participant: now.sid, track: track))
            }
            if let presence = now.presence, presence != old.presence {
                events.append(.presence(PresenceEvent(participant: now.sid, identity: now.identity, presence: presence)))
            }
        }
        participants = current
        return events
    }

    private func index(of sid: String) -> Int? { participants.firstIndex { $0.sid == sid } }
}
