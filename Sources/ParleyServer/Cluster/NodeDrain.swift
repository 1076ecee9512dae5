import Foundation
import Hummingbird
import Logging
import ParleyProtocol

/// Empties a node of a cluster without cutting its meetings: new rooms go to other nodes at once
/// (the node's record says `draining`, `/readyz` turns 500 so a load balancer stops sending), the
/// rooms it holds run on until they empty or the timeout passes, then the participants left are
/// sent to the least loaded other node (`reconnect` with its URL; the room's lease goes there
/// first). `parley node drain` and SIGTERM in a cluster (`ParleyServer.shutdownAfterDrain`) start it.
actor NodeDrain {
    let membership: ClusterMembership
    let registry: RoomRegistry
    let readiness: Readiness
    let metrics: ServerMetrics
    let logger: Logger

    private var status: DrainStatus
    private var work: Task<Void, Never>?

    init(membership: ClusterMembership, registry: RoomRegistry, readiness: Readiness, metrics: ServerMetrics, logger: Logger) {
        self.membership = membership
        self.registry = registry
        self.readiness = readiness
        self.metrics = metrics
        self.logger = logger
        self.status = DrainStatus(node: membership.nodeName, phase: .serving)
    }

    /// Starts draining (a drain under way goes on; its timeout stands). `then` runs once the node
    /// is empty (a shutdown).
    func start(timeout: Duration, then: (@Sendable () async -> Void)? = nil) async -> DrainStatus {
        guard work == nil else { return await current() }
        membership.draining.withLockedValue { $0 = true }
        readiness.set(.draining)
        metrics.nodeDraining.set(1.0)
        status.phase = .waiting
        status.deadline = Int64(Date().timeIntervalSince1970 * 1000) + timeout.milliseconds
        logger.notice("draining: no new rooms here", metadata: ["timeout": "\(timeout)"])
        // Tell the cluster now rather than at the next renewal.
        try? await membership.renew(registry: registry)
        work = Task { await self.run(timeout: timeout, then: then) }
        return await current()
    }

    /// True when another live node could take this one's rooms (a drain started by the API
    /// counts as one: its node is already on its way out).
    func othersLive() async -> Bool {
        if work != nil { return true }
        return await membership.drainTarget(for: 0, refresh: true) != nil
    }

    /// Waits for the drain under way to end.
    func finished() async {
        await work?.value
    }

    /// Stops a drain still waiting for its rooms to empty: the node takes new rooms again.
    func cancel() async throws(ProtocolError) -> DrainStatus {
        guard status.phase == .waiting || status.phase == .serving else {
            throw ProtocolError(.conflict, "the drain is \(status.phase.rawValue); it cannot be undone")
        }
        work?.cancel()
        work = nil
        membership.draining.withLockedValue { $0 = false }
        readiness.set(.ready)
        metrics.nodeDraining.set(0.0)
        status = DrainStatus(node: membership.nodeName, phase: .serving)
        try? await membership.renew(registry: registry)
        logger.notice("drain cancelled: taking new rooms again")
        return await current()
    }

    /// Where the drain stands, with the rooms and participants still here.
    func current() async -> DrainStatus {
        var now = status
        let rooms = await registry.list()
        now.rooms = rooms.count
        now.participants = rooms.reduce(0) { $0 + ($1.numParticipants ?? 0) }
        return now
    }

    private func run(timeout: Duration, then: (@Sendable () async -> Void)?) async {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        // Waits for people, not rooms: an empty room waiting out room.emptyTimeout is closed below.
        while clock.now < deadline, !Task.isCancelled, metrics.participantsNow > 0 {
            try? await Task.sleep(for: .milliseconds(250))
        }
        guard !Task.isCancelled else { return }
        status.phase = .moving
        let moved = await registry.moveAll(reason: "node_draining")
        status.moved = moved
        metrics.drainedParticipants.increment(by: Double(moved))
        status.phase = .drained
        logger.notice("drained", metadata: ["moved": "\(moved)"])
        try? await membership.renew(registry: registry)
        await then?()
    }
}

/// A drain as the API shows it.
struct DrainStatus: Codable, Sendable, Equatable {
    enum Phase: String, Codable, Sendable {
        /// Not draining: the node takes new rooms.
        case serving
        /// No new rooms; waiting for the rooms here to empty.
        case waiting
        /// Sending the participants left to other nodes.
        case moving
        /// Empty; no new rooms land here until the node restarts.
        case drained
    }
    var node: String
    var phase: Phase
    /// When the node stops waiting and moves the participants left (ms since 1970).
    var deadline: Int64?
    var rooms = 0
    var participants = 0
    /// Participants sent to other nodes at the end.
    var moved = 0
}

/// `POST /v1/nodes/{node}/drain` `{timeout?, shutdown?}` starts a drain (202), `GET` reads it,
/// `DELETE` cancels one still waiting. Another node's name is forwarded there.
struct DrainRoutes: Sendable {
    let drain: NodeDrain?
    let nodeName: String
    let auth: AdminAuth
    let defaultTimeout: Duration
    let shutdown: @Sendable () async -> Void

    struct Start: Decodable {
        var timeout: String?
        var shutdown: Bool?
    }

    func register(on router: Router<APIRequestContext>) {
        router.post("/v1/nodes/:node/drain") { request, context -> Response in try await start(request, context) }
        router.get("/v1/nodes/:node/drain") { request, context -> Response in
            let drain = try await authorize(request, context)
            return JSONResponse.make(await drain.current())
        }
        router.delete("/v1/nodes/:node/drain") { request, context -> Response in
            let drain = try await authorize(request, context)
            do {
                return JSONResponse.make(try await drain.cancel())
            } catch let error as ProtocolError {
                throw APIError(error)
            }
        }
    }

    private func start(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let drain = try await authorize(request, context)
        let body = try await request.body.collect(upTo: APIRoutes.maxBodyBytes)
        let start = body.readableBytes == 0 ? Start() : try decode(body)
        var timeout = defaultTimeout
        if let text = start.timeout {
            guard let parsed = DurationText.parse(text) else {
                throw APIError(.badRequest, "timeout: a duration such as 30s or 2m, got \(text)")
            }
            timeout = parsed
        }
        let shutdown = self.shutdown
        let then: (@Sendable () async -> Void)? = start.shutdown == true ? { @Sendable in await shutdown() } : nil
        let status = await drain.start(timeout: timeout, then: then)
        return JSONResponse.make(status, status: .accepted)
    }

    private func authorize(_ request: Request, _ context: APIRequestContext) async throws -> NodeDrain {
        try await auth.require(request)
        let node = context.parameters.get("node") ?? ""
        guard node == nodeName else { throw APIError(.notFound, "no live node \(node) in the cluster") }
        guard let drain else { throw APIError(.badRequest, "draining moves rooms to other nodes: it needs a cluster (database.url)") }
        return drain
    }

    private func decode(_ body: ByteBuffer) throws -> Start {
        do {
            return try JSONDecoder().decode(Start.self, from: Data(body.readableBytesView))
        } catch {
            throw APIError(SignalCodec.describe(error))
        }
    }
}
