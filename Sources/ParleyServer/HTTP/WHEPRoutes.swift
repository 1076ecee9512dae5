import Auth
import Hummingbird
import ParleyProtocol

/// WHEP playback: `POST /v1/whep[?participant=IDENTITY]` with a Bearer access token (subscribe
/// grant) and a receive-only SDP offer. The player joins its token's room as a hidden participant
/// that only receives: its first audio and video m-lines carry the active speaker's tracks (or the
/// named participant's), switched as the speaker changes on the same SSRCs; further m-lines carry
/// other participants' tracks. `PATCH` and `DELETE` on the session's URL as for WHIP.
extension WHIPRoutes {
    func play(_ request: Request) async throws -> Response {
        let (claims, offer) = try await readOffer(request, needing: \.subscribe, grant: "subscribe", what: "WHEP", purpose: "receive on")
        let following = request.uri.queryParameters.get("participant").flatMap { $0.isEmpty ? nil : $0 }
        // A player is audience: hidden from the others, no publishing, no chat.
        var player = claims
        player.grants.publish = false
        player.grants.chat = false
        player.grants.hidden = true
        // A player is not its owner's session: joining under the token's own identity would
        // replace that participant (the same person watching on a TV while in the call).
        player.sub = "\(claims.identity)#\(services.ids.make("whep"))"
        return try await admit(player, tokenIdentity: claims.identity, offer: offer, path: "/v1/whep", role: .subscriber) { room, sid throws(ProtocolError) in
            try await room.play(offer: offer, for: sid, following: following)
        }
    }
}
