import ParleyProtocol
import Webhooks

/// Room events as webhook bodies in LiveKit's shape: its event names, room, participant, track
/// and egress (recording) objects, times in seconds (egress times in nanoseconds, as LiveKit's).
enum WebhookMapping {
    static func body(of event: RoomEvent) -> WebhookEventBody {
        var room = WebhookEventBody.Room(sid: event.roomSid, name: event.room)
        var body = WebhookEventBody(event: event.name, id: event.id, createdAt: event.createdAt / 1000, room: room)
        switch event.kind {
        case .roomStarted(let info):
            room.emptyTimeout = info.emptyTimeout
            room.maxParticipants = info.maxParticipants
            room.creationTime = info.createdAt / 1000
            room.metadata = info.metadata
            room.numParticipants = info.numParticipants
            body.room = room
        case .roomFinished:
            break
        case .participantJoined(let participant, let hidden):
            body.participant = self.participant(participant, hidden: hidden, state: "ACTIVE")
        case .participantLeft(let participant, let reason, let hidden):
            var left = self.participant(participant, hidden: hidden, state: "DISCONNECTED")
            left.disconnectReason = disconnectReason(reason)
            body.participant = left
        case .trackPublished(let participant, let track), .trackUnpublished(let participant, let track):
            body.participant = self.participant(participant, hidden: false, state: "ACTIVE")
            body.track = self.track(track)
        case .recordingStarted(let recording), .recordingEnded(let recording):
            body.egressInfo = WebhookEventBody.Egress(
                egressId: recording.id, roomId: event.roomSid, roomName: recording.room, status: egressStatus(recording.state),
                startedAt: recording.startedAt * 1_000_000, endedAt: recording.stoppedAt.map { $0 * 1_000_000 }, error: recording.error)
        }
        return body
    }

    static func participant(_ info: ParticipantInfo, hidden: Bool, state: String) -> WebhookEventBody.Participant {
        let tracks = (info.tracks ?? []).map(track)
        return WebhookEventBody.Participant(
            sid: info.sid, identity: info.identity, name: info.name, metadata: info.metadata, state: state,
            joinedAt: info.joinedAt.map { $0 / 1000 }, tracks: tracks, isPublisher: !tracks.isEmpty,
            permission: hidden ? WebhookEventBody.Permission(hidden: true, recorder: false) : nil)
    }

    static func track(_ info: TrackInfo) -> WebhookEventBody.Track {
        let source = switch info.source {
        case "microphone": "MICROPHONE"
        case "camera": "CAMERA"
        case "screen_share": "SCREEN_SHARE"
        case "screen_share_audio": "SCREEN_SHARE_AUDIO"
        default: "UNKNOWN"
        }
        return WebhookEventBody.Track(
            sid: info.sid, type: info.kind == "video" ? "VIDEO" : "AUDIO", source: source, muted: info.muted,
            simulcast: (info.layers?.count ?? 0) > 1)
    }

    static func disconnectReason(_ reason: LeaveReason) -> String {
        switch reason {
        case .left: "CLIENT_INITIATED"
        case .duplicateIdentity: "DUPLICATE_IDENTITY"
        case .kicked: "PARTICIPANT_REMOVED"
        case .roomClosed: "ROOM_CLOSED"
        case .disconnected, .slowConsumer: "STATE_MISMATCH"
        }
    }

    static func egressStatus(_ state: String) -> String {
        switch state {
        case "starting": "EGRESS_STARTING"
        case "active": "EGRESS_ACTIVE"
        case "stopped": "EGRESS_COMPLETE"
        default: "EGRESS_FAILED"
        }
    }
}
