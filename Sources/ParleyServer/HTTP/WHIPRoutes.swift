import Auth
import Foundation
import HTTPTypes
import Hummingbird
import NIOConcurrencyHelpers
import ParleyProtocol
import SFU
import WebRTC

/// WHIP ingest (RFC 9725): `POST /v1/whip` with an SDP offer and a Bearer access token makes an
/// ordinary participant of the publisher (`participant.joined`, tracks, recording, speakers), with
/// the room and identity of its token; the session's URL takes `PATCH` (trickle ICE, ICE restart)
/// and `DELETE` (leave). `OPTIONS` answers CORS and the ICE servers.
///
/// WHEP playback works the same way on `/v1/whep` (WHEPRoutes.swift): a hidden participant that
/// only receives.
struct WHIPRoutes: Sendable {
    let registry: RoomRegistry
    let services: RoomServices
    let verifier: TokenVerifier
    let sessions = WHIPSessions()

    static let maxOfferBytes = 64 * 1024

    func register(on router: Router<APIRequestContext>) {
        router.post("/v1/whip") { request, _ -> Response in try await create(request) }
        router.on("/v1/whip", method: .options) { request, _ -> Response in try await options(request) }
        router.on("/v1/whip/:session", method: .options) { request, _ -> Response in try await options(request) }
        router.patch("/v1/whip/:session") { request, context -> Response in try await patch(request, context, role: .publisher) }
        router.delete("/v1/whip/:session") { request, context -> Response in try await delete(request, context, role: .publisher) }
        router.post("/v1/whep") { request, _ -> Response in try await play(request) }
        router.on("/v1/whep", method: .options) { request, _ -> Response in try await options(request) }
        router.on("/v1/whep/:session", method: .options) { request, _ -> Response in try await options(request) }
        router.patch("/v1/whep/:session") { request, context -> Response in try await patch(request, context, role: .subscriber) }
        router.delete("/v1/whep/:session") { request, context -> Response in try await delete(request, context, role: .subscriber) }
    }

    // MARK: Handlers

    private func create(_ request: Request) async throws -> Response {
        let (claims, offer) = try await readOffer(request, needing: \.publish, grant: "publish", what: "WHIP", purpose: "publish")
        // A WHIP client only sends: no subscriptions, no chat.
        var publisher = claims
        publisher.grants.subscribe = false
        publisher.grants.chat = false
        return try await admit(publisher, offer: offer, path: "/v1/whip", role: .publisher) { room, sid throws(ProtocolError) in
            try await room.publish(offer: offer, from: sid).sdp
        }
    }

    /// The token's claims (with the grant `needed`) and the SDP offer of a POST, or the error
    /// the RFC names.
    func readOffer(_ request: Request, needing needed: KeyPath<Grants, Bool>, grant: String, what: String, purpose: String) async throws
        -> (AccessClaims, String)
    {
        let claims = try await ParleyServer.signalingClaims(request, verifier: verifier)
        guard claims.grants[keyPath: needed] else { throw APIError(.forbidden, "token lacks the \(grant) grant") }
        guard Self.mediaType(request) == "application/sdp" else {
            throw WHIPError(.unsupportedMediaType, "a \(what) offer is application/sdp")
        }
        let offer = try await body(request, limit: Self.maxOfferBytes)
        guard offer.contains("\nm=audio") || offer.contains("\nm=video") else {
            throw WHIPError(.unprocessableContent, "the offer has no audio or video m-line to \(purpose)")
        }
        return (claims, offer)
    }

    /// Joins `claims` to its room on an HTTP session's channel and answers `offer` with
    /// `negotiate`; a failed negotiation leaves again. 201 with the session's Location, its ETag
    /// and the ICE servers, or a redirect to the node that serves the room.
    /// `tokenIdentity`: whom PATCH and DELETE must name when the participant joins under
    /// another identity (a WHEP player beside its owner's own session).
    func admit(
        _ claims: AccessClaims, tokenIdentity: String? = nil, offer: String, path: String, role: TransportRole,
        negotiate: (Room, String) async throws(ProtocolError) -> String
    ) async throws -> Response {
        let roomName = claims.grants.room ?? ""
        let room: Room
        do {
            switch try await registry.roomForJoin(roomName, anywhere: true) {
            case .room(let found): room = found
            case .elsewhere(_, let url):
                // RFC 9725 §4.5: the client follows a redirect to the endpoint that serves the room.
                var headers = Self.cors
                headers[.location] = url + path
                return Response(status: .temporaryRedirect, headers: headers)
            }
        } catch {
            throw APIError(error)
        }
        let sid: String
        let answer: String
        do {
            sid = try await room.join(claims: claims, resume: nil, connection: WHIPChannel())
        } catch {
            throw APIError(error)
        }
        do {
            answer = try await negotiate(room, sid)
        } catch {
            await room.leave(sid: sid)
            throw error.code == .badRequest ? WHIPError(.badRequest, error.message) : APIError(error)
        }
        let etag = Self.newETag()
        sessions.add(WHIPSessions.Session(
            sid: sid, room: roomName, identity: tokenIdentity ?? claims.identity, role: role, etag: etag, remoteUfrag: Self.attribute("ice-ufrag", in: offer)))
        var headers = Self.cors
        headers[.contentType] = "application/sdp"
        headers[.location] = "\(path)/\(sid)"
        headers[.eTag] = etag
        for link in Self.links(services.iceServers(claims.identity)) { headers.append(HTTPField(name: Self.linkField, value: link)) }
        (role == .publisher ? services.metrics.whipSessions : services.metrics.whepSessions).increment()
        await pruneEndedSessions()
        return Response(status: .created, headers: headers, body: .init(byteBuffer: ByteBuffer(string: answer)))
    }

    /// A session whose media ended, or that was kicked, leaves its participant without a DELETE:
    /// its entry goes once the table has doubled since the last sweep, so the sweeps cost O(1)
    /// per session admitted.
    private func pruneEndedSessions() async {
        guard sessions.isDueForSweep() else { return }
        for session in sessions.all() {
            let live = await registry.room(named: session.room)?.hasParticipant(sid: session.sid) ?? false
            if !live { sessions.remove(session.sid) }
        }
        sessions.swept()
    }

    private func options(_ request: Request) async throws -> Response {
        var headers = Self.cors
        headers[.allow] = "POST, PATCH, DELETE, OPTIONS"
        // The ICE servers for whoever the token names (RFC 9725 §4.4); none without a token.
        if let claims = try? await ParleyServer.signalingClaims(request, verifier: verifier) {
            for link in Self.links(services.iceServers(claims.identity)) { headers.append(HTTPField(name: Self.linkField, value: link)) }
        }
        return Response(status: .noContent, headers: headers)
    }

    private func patch(_ request: Request, _ context: APIRequestContext, role: TransportRole) async throws -> Response {
        let (session, room) = try await owned(request, context, role: role)
        guard Self.mediaType(request) == "application/trickle-ice-sdpfrag" else {
            throw WHIPError(.unsupportedMediaType, "PATCH takes application/trickle-ice-sdpfrag")
        }
        // RFC 9725 §4.3.1: If-Match must name the session's current ETag ("*" matches any).
        guard let match = request.headers[.ifMatch], match == "*" || match == session.etag else {
            throw WHIPError(.preconditionFailed, "If-Match does not name the session's current ETag \(session.etag)")
        }
        let fragment = try await body(request, limit: Self.maxOfferBytes)
        let ufrag = Self.attribute("ice-ufrag", in: fragment)
        let password = Self.attribute("ice-pwd", in: fragment)
        guard let ufrag, let password, ufrag != session.remoteUfrag else {
            // Trickled candidates: Parley is ICE-lite and learns the client's addresses from its
            // checks, so there is nothing to apply.
            return Response(status: .noContent, headers: Self.cors)
        }
        let restarted: (local: ICECredentials, candidates: [String])
        do {
            restarted = try await room.restartICE(of: session.sid, role: role, remote: ICECredentials(ufrag: ufrag, password: password))
        } catch {
            throw APIError(error)
        }
        let etag = Self.newETag()
        sessions.update(session.sid) {
            $0.etag = etag
            $0.remoteUfrag = ufrag
        }
        let mid = Self.attribute("mid", in: fragment) ?? "0"
        var answer = "a=ice-lite\r\na=ice-ufrag:\(restarted.local.ufrag)\r\na=ice-pwd:\(restarted.local.password)\r\n"
        answer += "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:\(mid)\r\n"
        for line in restarted.candidates { answer += "a=\(line)\r\n" }
        answer += "a=end-of-candidates\r\n"
        var headers = Self.cors
        headers[.contentType] = "application/trickle-ice-sdpfrag"
        headers[.eTag] = etag
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: answer)))
    }

    private func delete(_ request: Request, _ context: APIRequestContext, role: TransportRole) async throws -> Response {
        let (session, room) = try await owned(request, context, role: role)
        await room.leave(sid: session.sid)
        sessions.remove(session.sid)
        return Response(status: .ok, headers: Self.cors)
    }

    /// The session named in the path, if the caller's token is for its identity and room.
    private func owned(_ request: Request, _ context: APIRequestContext, role: TransportRole) async throws -> (WHIPSessions.Session, Room) {
        let claims = try await ParleyServer.signalingClaims(request, verifier: verifier)
        guard let sid = context.parameters.get("session"), let session = sessions.get(sid), session.role == role else {
            throw APIError(.notFound, "no such \(role == .publisher ? "WHIP" : "WHEP") session")
        }
        guard session.identity == claims.identity, session.room == claims.grants.room else {
            throw APIError(.forbidden, "the token is not for this session's identity and room")
        }
        guard let room = await registry.room(named: session.room), await room.hasParticipant(sid: sid) else {
            sessions.remove(sid)
            throw APIError(.notFound, "the session has ended")
        }
        return (session, room)
    }

    // MARK: Helpers

    func body(_ request: Request, limit: Int) async throws -> String {
        do {
            let buffer = try await request.body.collect(upTo: limit)
            return String(buffer: buffer)
        } catch {
            throw APIError(.tooLarge, "the body exceeds \(limit) bytes")
        }
    }

    static func mediaType(_ request: Request) -> String? {
        request.headers[.contentType]?.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
    }

    static func attribute(_ name: String, in sdp: String) -> String? {
        for line in sdp.split(whereSeparator: \.isNewline) where line.hasPrefix("a=\(name):") {
            return String(line.dropFirst("a=\(name):".count)).trimmingCharacters(in: .whitespaces)
        }
        return nil
    }

    /// RFC 9725 §4.4: one `Link: <url>; rel="ice-server"` per URL, with the TURN credentials.
    static func links(_ servers: [ICEServer]) -> [String] {
        servers.flatMap { server in
            server.urls.map { url in
                var link = "<\(url)>; rel=\"ice-server\""
                if let username = server.username, let credential = server.credential {
                    link += "; username=\"\(username)\"; credential=\"\(credential)\"; credential-type=\"password\""
                }
                return link
            }
        }
    }

    static let linkField = HTTPField.Name("Link")!

    static func newETag() -> String { "\"\(UUID().uuidString.prefix(13).lowercased())\"" }

    /// Browsers publish by WHIP with fetch from other origins.
    static var cors: HTTPFields {
        var headers = HTTPFields()
        headers[.accessControlAllowOrigin] = "*"
        headers[.accessControlAllowMethods] = "POST, PATCH, DELETE, OPTIONS"
        headers[.accessControlAllowHeaders] = "Authorization, Content-Type, If-Match"
        headers[.accessControlExposeHeaders] = "Location, ETag, Link"
        return headers
    }
}

/// The status codes RFC 9725 names beyond the API's own, with the API's JSON body.
struct WHIPError: HTTPResponseError {
    let status: HTTPResponse.Status
    let message: String

    init(_ status: HTTPResponse.Status, _ message: String) {
        self.status = status
        self.message = message
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers = WHIPRoutes.cors
        headers[.contentType] = JSONResponse.contentType
        let code: ErrorCode = status == .preconditionFailed ? .conflict : .badRequest
        return Response(
            status: status, headers: headers,
            body: .init(byteBuffer: ByteBuffer(bytes: JSONResponse.encode(ErrorBody(error: .init(code: code, message: message))))))
    }
}

/// The live WHIP and WHEP sessions by participant sid.
final class WHIPSessions: Sendable {
    struct Session: Sendable {
        var sid: String
        var room: String
        var identity: String
        /// Publisher for WHIP, subscriber for WHEP.
        var role: TransportRole
        var etag: String
        var remoteUfrag: String?
    }

    private let state = NIOLockedValueBox((sessions: [String: Session](), countAfterSweep: 0))

    func add(_ session: Session) { state.withLockedValue { $0.sessions[session.sid] = session } }
    func get(_ sid: String) -> Session? { state.withLockedValue { $0.sessions[sid] } }
    func remove(_ sid: String) { state.withLockedValue { _ = $0.sessions.removeValue(forKey: sid) } }
    func all() -> [Session] { state.withLockedValue { Array($0.sessions.values) } }
    func isDueForSweep() -> Bool { state.withLockedValue { $0.sessions.count >= max(64, 2 * $0.countAfterSweep) } }
    func swept() { state.withLockedValue { $0.countAfterSweep = $0.sessions.count } }
    func update(_ sid: String, _ change: (inout Session) -> Void) {
        state.withLockedValue { if var session = $0.sessions[sid] { change(&session); $0.sessions[sid] = session } }
    }
}

/// A WHIP or WHEP participant's channel: it has no signaling, so the room's frames go nowhere;
/// the session ends with its media or a DELETE.
final class WHIPChannel: ParticipantChannel {
    func send(_ frame: String) -> Bool { true }
    func close(_ reason: ChannelCloseReason) {}
    var endsWithMedia: Bool { true }
}
