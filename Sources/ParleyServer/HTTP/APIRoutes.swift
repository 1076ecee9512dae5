import Auth
import Foundation
import Hummingbird
import NIOConcurrencyHelpers
import ParleyProtocol
import Store
import TURN

/// The HTTP API of PROTOCOL.md: health, metrics, rooms, participants, messages and dev tokens.
struct APIRoutes: Sendable {
    let registry: RoomRegistry
    let services: RoomServices
    let auth: AdminAuth
    let store: any DataStore
    let readiness: Readiness
    let turn: TURNServer?
    /// The cluster's live nodes (this node alone without PostgreSQL).
    let nodes: @Sendable () async throws -> [NodeInfo]
    static let maxBodyBytes = 64 * 1024

    func register(on router: Router<APIRequestContext>) {
        router.get("/healthz") { _, _ in JSONResponse.make(["status": "ok"]) }
        router.get("/readyz") { _, _ in try await ready() }
        router.get("/metrics") { request, _ in try await metrics(request) }

        router.get("/v1/nodes") { request, _ in
            try await auth.require(request)
            do {
                return JSONResponse.make(["nodes": try await nodes()])
            } catch {
                throw APIError(.unavailable, "the cluster's nodes cannot be read now: \(error)")
            }
        }

        let rooms = router.group("/v1/rooms")
        rooms.get { request, _ in
            try await auth.require(request)
            return JSONResponse.make(["rooms": await registry.list()])
        }
        rooms.post { request, context in try await createRoom(request, context) }
        rooms.get(":room") { request, context in
            let room = try roomName(context)
            try await auth.require(request, room: room)
            return JSONResponse.make(try await open(room).info())
        }
        rooms.delete(":room") { request, context in
            let room = try roomName(context)
            try await auth.require(request, room: room)
            try await open(room).close(reason: "deleted")
            return Response(status: .noContent)
        }
        rooms.get(":room/participants") { request, context in
            let room = try roomName(context)
            try await auth.require(request, room: room)
            return JSONResponse.make(["participants": try await open(room).participantInfos()])
        }
        rooms.get(":room/participants/:identity") { request, context in
            let room = try roomName(context)
            try await auth.require(request, room: room)
            let identity = try parameter("identity", context)
            guard let info = try await open(room).mediaInfo(identity: identity) else {
                throw APIError(.notFound, "no participant \(identity) in room \(room)")
            }
            return JSONResponse.make(info)
        }
        rooms.delete(":room/participants/:identity") { request, context in
            let room = try roomName(context)
            try await auth.require(request, room: room)
            let identity = try parameter("identity", context)
            // `?ban=10m`: the identity may not join again for that long (a kick alone is undone
            // by rejoining with the same token).
            var ban: Duration?
            if let text = request.uri.queryParameters.get("ban") {
                guard let parsed = DurationText.parse(String(text)), parsed > .zero, parsed <= .seconds(30 * 86_400) else {
                    throw APIError(.badRequest, "ban must be a duration from 1s to 30d, such as 10m")
                }
                ban = parsed
            }
            guard try await open(room).kick(identity: identity, banFor: ban) else {
                throw APIError(.notFound, "no participant \(identity) in room \(room)")
            }
            return Response(status: .noContent)
        }
        rooms.post(":room/participants/:identity/mute") { request, context -> Response in
            let room = try roomName(context)
            try await auth.require(request, room: room)
            let identity = try parameter("identity", context)
            struct Mute: Decodable { let track: String; let muted: Bool }
            let mute = try await decode(Mute.self, request)
            if !mute.muted, !services.config.roomAllowRemoteUnmute {
                throw APIError(.forbidden, "remote unmute is off: a participant unmutes itself (room.allowRemoteUnmute enables it)")
            }
            do {
                return JSONResponse.make(try await open(room).setMuted(mute.muted, track: mute.track, ofIdentity: identity))
            } catch let error as ProtocolError {
                throw APIError(error)
            }
        }
        rooms.get(":room/messages") { request, context in
            let room = try roomName(context)
            try await auth.require(request, room: room)
            let query = request.uri.queryParameters
            let limit = query.get("limit").map { Int($0) } ?? 50
            guard let limit, (1...ChatPaging.maxPageSize).contains(limit) else {
                throw APIError(.badRequest, "limit must be a whole number from 1 to \(ChatPaging.maxPageSize)")
            }
            let before = try integer("before", query.get("before"))
            let after = try integer("after", query.get("after"))
            let page = try await services.chat.page(room: room, viewer: nil, before: before, after: after, limit: limit)
            return JSONResponse.make(page)
        }
        rooms.post(":room/messages") { request, context in try await postSystemMessage(request, context) }

        router.get("/v1/dev/token") { request, _ in try await devToken(request) }
    }

    // MARK: Handlers

    private func ready() async throws -> Response {
        guard readiness.isReady else { throw APIError(.internal, "not ready: \(readiness.state)") }
        do {
            try await store.checkReadable()
        } catch {
            throw APIError(.internal, "database is not readable: \(error)")
        }
        return JSONResponse.make(["status": "ready"])
    }

    private func metrics(_ request: Request) async throws -> Response {
        let token = services.config.metricsToken
        // Compared in constant time: a byte-by-byte compare tells a prober how much it got right.
        if !token.isEmpty, !ConstantTime.equal(request.headers[.authorization] ?? "", "Bearer \(token)") {
            throw APIError(.unauthorized, "metrics need Authorization: Bearer <metrics.token>")
        }
        return Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: services.metrics.render() + MediaMetrics.render(await registry.mediaSnapshot())
                + Self.renderRoomEvents(services.events.counts)
                + (turn == nil ? "" : TURNMetrics.render(await turn!.statistics())))))
    }

    static func renderRoomEvents(_ counts: (emitted: UInt64, dropped: UInt64)) -> String {
        """
        # HELP parley_room_events_total Room events emitted (room, participant, track and recording lifecycle)
        # TYPE parley_room_events_total counter
        parley_room_events_total \(counts.emitted)
        # HELP parley_room_events_dropped_total Room event copies dropped because a subscriber fell behind its buffer
        # TYPE parley_room_events_dropped_total counter
        parley_room_events_dropped_total \(counts.dropped)

        """
    }

    private func createRoom(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        struct Create: Decodable {
            let name: String
            let maxParticipants: Int?
            let emptyTimeout: Int?
            let metadata: String?
            let autoRecord: String?
        }
        let body = try await decode(Create.self, request)
        try await auth.require(request, room: body.name)
        var options = await registry.defaultOptions
        if let max = body.maxParticipants {
            guard max >= 0 else { throw APIError(.badRequest, "maxParticipants must be 0 (no cap) or more") }
            options.maxParticipants = max
        }
        if let timeout = body.emptyTimeout {
            guard timeout > 0 else { throw APIError(.badRequest, "emptyTimeout must be a positive number of seconds") }
            options.emptyTimeout = .seconds(timeout)
        }
        options.metadata = body.metadata ?? ""
        if let mode = body.autoRecord {
            guard ["tracks", "mix", "both"].contains(mode) else { throw APIError(.badRequest, "autoRecord must be tracks, mix or both") }
            options.autoRecord = mode
        }
        do {
            let room = try await registry.create(body.name, options: options)
            return JSONResponse.make(await room.info(), status: .created)
        } catch {
            throw APIError(error)
        }
    }

    private func postSystemMessage(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let room = try roomName(context)
        try await auth.require(request, room: room)
        struct Post: Decodable {
            let text: String
            let name: String?
            let to: [String]?
        }
        let body = try await decode(Post.self, request)
        guard !body.text.isEmpty else { throw APIError(.badRequest, "text is empty") }
        guard body.text.count <= services.config.chatMaxTextLength else {
            throw APIError(.tooLarge, "text is longer than \(services.config.chatMaxTextLength) characters")
        }
        let draft = ChatDraft(
            id: services.ids.message(), room: room, from: ChatAuthor(sid: "", identity: "", name: body.name ?? "System"),
            text: body.text, to: body.to, ts: services.clock.wallMilliseconds(), clientMsgId: nil, system: true)
        let stored: (message: ChatMessage, duplicate: Bool)
        do {
            stored = try await services.chat.append(draft)
        } catch {
            throw APIError(.unavailable, "the message could not be stored (\(error)); it was not sent")
        }
        services.metrics.chatMessages.increment()
        if let open = await registry.room(named: room) {
            await open.deliverSystemMessage(stored.message)
        }
        return JSONResponse.make(["message": stored.message], status: .created)
    }

    private func devToken(_ request: Request) async throws -> Response {
        guard services.config.dev else { throw APIError(.notFound, "dev tokens exist only in dev mode") }
        let query = request.uri.queryParameters
        guard let room = query.get("room"), !room.isEmpty else { throw APIError(.badRequest, "room is required") }
        guard let identity = query.get("identity"), !identity.isEmpty else { throw APIError(.badRequest, "identity is required") }
        guard let (key, secret) = services.config.apiKeys.sorted(by: { $0.key < $1.key }).first else {
            throw APIError(.internal, "no API key configured")
        }
        let issuer = await TokenIssuer(apiKey: key, secret: secret)
        let token = try await issuer.mint(
            identity: identity,
            grants: Grants(room: room, join: true, publish: true, subscribe: true, chat: true),
            name: query.get("name"))
        return JSONResponse.make(["token": token])
    }

    // MARK: Helpers

    private func open(_ name: String) async throws -> Room {
        guard let room = await registry.room(named: name), await !room.isClosed else {
            throw APIError(.notFound, "room \(name) is not open")
        }
        return room
    }

    private func roomName(_ context: APIRequestContext) throws -> String {
        try parameter("room", context)
    }

    private func parameter(_ name: String, _ context: APIRequestContext) throws -> String {
        guard let raw = context.parameters.get(name) else { throw APIError(.badRequest, "missing \(name)") }
        return raw.removingPercentEncoding ?? raw
    }

    private func integer(_ name: String, _ text: String?) throws -> Int64? {
        guard let text else { return nil }
        guard let value = Int64(text) else { throw APIError(.badRequest, "\(name) must be a whole number") }
        return value
    }

    private func decode<T: Decodable>(_ type: T.Type, _ request: Request) async throws -> T {
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: Self.maxBodyBytes)
        } catch {
            throw APIError(.tooLarge, "request body exceeds \(Self.maxBodyBytes) bytes")
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(body.readableBytesView))
        } catch {
            throw APIError(SignalCodec.describe(error))
        }
    }
}

/// Whether the server takes traffic: not before it listens, not once it is shutting down.
final class Readiness: Sendable {
    enum State: String { case starting, ready, draining }
    private let box = NIOLockedValueBox(State.starting)

    var state: State { box.withLockedValue { $0 } }
    var isReady: Bool { state == .ready }
    func set(_ state: State) { box.withLockedValue { $0 = state } }
}
