import Auth
import ParleyProtocol

/// A participant's state inside its room. Owned by the room actor; never shared.
final class Participant {
    let sid: String
    let identity: String
    let name: String
    let metadata: String
    let grants: Grants
    let joinedAt: Int64
    var presence: Presence
    /// Where its frames go; nil while the connection is lost and the resume window runs.
    var connection: (any ParticipantChannel)?
    /// Frames held back until `joined` has been sent, so it is always the first frame.
    var heldFrames: [(text: String, chatSeq: Int64?)]?
    var chatBucket: TokenBucket
    /// Bumped whenever the resume timer is armed or disarmed, so a stale timer does nothing.
    var resumeGeneration = 0
    /// Tracks, subscriber m-lines and the offer in flight.
    var media = ParticipantMedia()

    init(sid: String, claims: AccessClaims, joinedAt: Int64, chatBucket: TokenBucket) {
        self.sid = sid
        self.identity = claims.identity
        self.name = claims.name ?? claims.identity
        self.metadata = claims.metadata ?? ""
        self.grants = claims.grants
        self.joinedAt = joinedAt
        self.presence = Presence(status: .online, text: "", since: joinedAt)
        self.chatBucket = chatBucket
    }

    var hidden: Bool { grants.hidden }

    var info: ParticipantInfo {
        ParticipantInfo(
            sid: sid, identity: identity, name: name, metadata: metadata, presence: presence, tracks: media.tracks,
            joinedAt: joinedAt, reconnecting: connection == nil ? true : nil)
    }

    var sender: ChatSender { ChatSender(sid: sid, identity: identity, name: name) }

    /// Queues a frame, or holds it while the participant's `joined` is being prepared.
    /// Returns false when the connection overflowed.
    @discardableResult
    func deliver(_ text: String, chatSeq: Int64? = nil) -> Bool {
        if heldFrames != nil {
            heldFrames!.append((text, chatSeq))
            return true
        }
        return connection?.send(text) ?? true
    }
}
