import ParleyProtocol

/// WebSocket signaling on top of the room API: a request from the socket becomes a call, and
/// its result the reply (with the request's id). Runs on the room's actor, so a reply leaves
/// in the same turn as the change it answers.
extension Room {
    /// Handles one request from a participant; returns the error to answer, if any.
    public func handle(_ request: ClientRequest, id: String?, from sid: String) async -> ProtocolError? {
        do {
            try await perform(request, id: id, from: sid)
            return nil
        } catch {
            return error
        }
    }

    private func perform(_ request: ClientRequest, id: String?, from sid: String) async throws(ProtocolError) {
        let participant = try member(sid)
        switch request {
        case .ping:
            reply(Pong(), re: id, to: participant)
        case .leave:
            leave(sid: sid)
        case .iceServers:
            reply(ICEServers(iceServers: try iceServers(for: sid)), re: id, to: participant)
        case .chatSend(let send):
            // Acked only once it is committed.
            let stored = try await sendChat(send, from: sid)
            reply(ChatAck(message: stored.message, duplicate: stored.duplicate), re: id, to: participant)
        case .chatHistory(let request):
            reply(ChatHistory(try await chatHistory(request, for: sid)), re: id, to: participant)
        case .typing(let typing):
            try setTyping(typing.active, from: sid)
        case .presenceSet(let presence):
            reply(try setPresence(presence, of: sid), re: id, to: participant)
        case .offer(let offer):
            try requireMediaGrant(participant)
            guard offer.target == .publisher else {
                throw ProtocolError(.badRequest, "the server makes the offers on the subscriber transport; answer them")
            }
            let answer = try publish(offer: offer.sdp, from: sid, sources: offer.sources ?? [:])
            reply(AnswerMessage(target: .publisher, sdp: answer.sdp, tracks: answer.tracks), re: id, to: participant)
            trickleLocalCandidates(.publisher, to: participant)
        case .answer(let answer):
            try requireMediaGrant(participant)
            guard answer.target == .subscriber else {
                throw ProtocolError(.badRequest, "the server answers on the publisher transport; send an offer there")
            }
            try applySubscriberAnswer(answer.sdp, to: answer.re ?? id, from: sid)
        case .candidate(let candidate):
            try requireMediaGrant(participant)
            // ICE-lite learns the peer's addresses from its checks; a candidate is only checked.
            if let text = candidate.candidate?.candidate, !text.isEmpty, MediaNegotiation.parseCandidate(text) == nil {
                throw ProtocolError(.badRequest, "candidate is not a valid ICE candidate: \(text.prefix(200))")
            }
        case .subscribe(let request):
            try subscribe(
                request.tracks, request.subscribe, quality: request.quality, maxWidth: request.maxWidth, maxHeight: request.maxHeight, for: sid)
        case .mute(let request):
            reply(try setMuted(request.muted, track: request.track, of: sid), re: id, to: participant)
        case .recordingStart(let start):
            guard participant.grants.record else { throw ProtocolError(.forbidden, "token lacks the record grant") }
            reply(RecordingEvent(recording: try await startRecording(mode: start.mode)), re: id, to: participant)
        case .recordingStop(let stop):
            guard participant.grants.record else { throw ProtocolError(.forbidden, "token lacks the record grant") }
            reply(RecordingEvent(recording: try await stopRecording(stop.recording)), re: id, to: participant)
        }
    }

    private func requireMediaGrant(_ participant: Participant) throws(ProtocolError) {
        guard participant.grants.publish || participant.grants.subscribe else {
            throw ProtocolError(.forbidden, "token lacks the publish and subscribe grants")
        }
    }
}
