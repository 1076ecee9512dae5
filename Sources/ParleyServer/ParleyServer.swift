import Addresses
import Auth
import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ParleyProtocol
import ServiceLifecycle
import HummingbirdTLS
import UnixSignals
import STUN
import Store
import TURN
import WebRTC

/// The Parley server: HTTP API and signaling on one port, rooms on media workers, chat in SQLite.
/// Run it with `run()`; stop it with a signal or `shutdown()`, which closes every room
/// (participants get `room.closed`), then the listener, then the database.
public final class ParleyServer: Sendable {
    public let config: ParleyConfig
    /// Chat and recordings: SQLite, or PostgreSQL when `database.url` is set.
    public let store: any DataStore
    /// This node's lease and its rooms' ownership, when the store is PostgreSQL.
    public let membership: ClusterMembership?
    public let registry: RoomRegistry
    /// In a cluster: empties this node onto the others (`parley node drain`, SIGTERM).
    let drain: NodeDrain?
    public let metrics: ServerMetrics
    public let workers: MediaWorkers
    /// The host candidate addresses every worker binds and advertises.
    public let nodeAddresses: [IPAddress]
    public let services: RoomServices
    /// The built-in STUN/TURN server, unless `turn.enabled` is false.
    public let turn: TURNServer?
    public let logger: Logger
    let verifier: TokenVerifier
    let readiness = Readiness()
    let sessions = SessionCounter()
    private let serviceGroup = NIOLockedValueBox<ServiceGroup?>(nil)
    private let boundPort = NIOLockedValueBox<Int?>(nil)
    /// The HTTPS port once bound (with `tls.certFile`).
    let boundTLSPort = NIOLockedValueBox<Int?>(nil)
    /// `tls.certFile` and `tls.keyFile`, loaded (and reloaded on SIGHUP).
    let certificates: ServerCertificates?
    private let portWaiters = NIOLockedValueBox<[CheckedContinuation<Int, Never>]>([])

    public init(
        config: ParleyConfig, logger: Logger = Logger(label: "parley"), clock: any ServerClock = SystemClock(),
        ids: IDGenerator = IDGenerator()
    ) async throws {
        self.config = config
        self.logger = logger
        if let url = config.databaseURL {
            self.store = try await PostgresDatabase(
                url: url, maxConnections: config.databaseMaxConnections, statementTimeout: config.databaseStatementTimeout,
                logger: Logger(label: "parley.store"))
        } else {
            self.store = try ParleyDatabase(path: config.storePath, durability: config.durability)
        }
        logger.info("store open", metadata: ["kind": "\(store.kind)", "location": "\(store.location)"])
        self.metrics = ServerMetrics()
        self.workers = MediaWorkers(count: config.mediaWorkers, firstPort: config.rtc.port)
        self.nodeAddresses = Self.advertisedAddresses(config)
        let leeway = config.tokenLeeway.components.seconds
        self.verifier = await TokenVerifier(secrets: config.apiKeys, leeway: leeway, now: {
            Date(timeIntervalSince1970: Double(clock.wallMilliseconds()) / 1000)
        })
        var turnCredentials: TURNCredentials?
        if config.turn.enabled {
            let secret = config.turn.secret.isEmpty ? Self.randomSecret() : Array(config.turn.secret.utf8)
            let configuration = config.turn.configuration(secret: secret)
            turnCredentials = configuration.credentials
            self.turn = TURNServer(configuration: configuration, group: workers.group, unixTime: {
                UInt64(max(0, clock.wallMilliseconds() / 1000))
            })
        } else {
            self.turn = nil
        }
        self.certificates = try config.tlsFiles.map { try ServerCertificates(certFile: $0.cert, keyFile: $0.key) }
        let iceServers = Self.iceServers(
            turn: turn, credentials: turnCredentials, host: config.turn.publicHost.isEmpty ? nodeAddresses.first?.description ?? "127.0.0.1" : config.turn.publicHost,
            ttlSeconds: Int64(config.turn.credentialTTL.components.seconds), clock: clock)
        self.services = RoomServices(
            config: config, chat: store.chat, clock: clock, ids: ids, metrics: metrics,
            logger: logger, server: ServerInfo(version: ParleyVersion.current, node: config.nodeName), media: try MediaServices(),
            iceServers: iceServers, recordings: store.recordings)
        let metrics = self.metrics
        let recordingLog = RecordingLog(self.store.recordings)
        let membership = self.store.cluster.map { cluster in
            ClusterMembership(
                nodeName: config.nodeName, repository: cluster, clock: clock, leaseDuration: config.clusterLeaseDuration,
                renewInterval: config.clusterRenewInterval, maxParticipants: config.nodeMaxParticipants, maxCPU: config.nodeMaxCPU,
                secret: config.clusterSecret, recordings: recordingLog,
                metrics: metrics,
                logger: logger)
        }
        self.membership = membership
        let registry = RoomRegistry(services: services, workers: workers, membership: membership)
        self.registry = registry
        let readiness = self.readiness
        self.drain = membership.map { membership in
            NodeDrain(membership: membership, registry: registry, readiness: readiness, metrics: metrics, logger: logger)
        }
    }

    /// Runs until shut down. `signals` lists the Unix signals that start a graceful shutdown;
    /// `drainSignals` those that drain the node first when it is part of a cluster with another
    /// live node (`shutdownAfterDrain`), else shut down as `signals` do.
    public func run(gracefulShutdownSignals signals: [UnixSignal] = [], drainSignals: [UnixSignal] = []) async throws {
        // Recordings a crash left running: their files hold what was flushed, but they are over.
        if let recordings = services.recordings {
            await RecordingRecovery.recover(
                recordings: recordings, node: config.nodeName, directory: config.recordingDir, now: services.clock.wallMilliseconds(),
                logger: logger)
        }
        do {
            try await workers.startMedia(addresses: nodeAddresses)
        } catch {
            try? await workers.shutdown()
            throw error
        }
        logger.info("media ports open", metadata: [
            "addresses": "\(nodeAddresses.map(\.description).joined(separator: ","))",
            "ports": "\(workers.ports.map { port in port.boundPort.map(String.init) ?? "?" }.joined(separator: ","))",
        ])
        if let turn {
            let mediaAddresses = Set(nodeAddresses.flatMap { ip in
                workers.ports.compactMap { port in port.boundPort.map { TransportAddress(ip: ip, port: UInt16($0)) } }
            })
            do {
                try await turn.start(
                    addresses: nodeAddresses, port: config.turn.port, mediaAddresses: mediaAddresses,
                    tls: certificates.map { (config.turn.tlsPort, $0.configuration()) })
            } catch {
                try? await workers.shutdown()
                throw error
            }
            logger.info("STUN/TURN listening", metadata: [
                "addresses": "\(nodeAddresses.map(\.description).joined(separator: ","))", "port": "\(turn.boundPort ?? 0)",
                "transports": turn.boundTLSPort.map { "udp,tcp,tls on \($0)" } ?? "udp,tcp",
            ])
        }
        // One router for plain HTTP and HTTPS: the same routes and the same state behind them.
        let router = httpRouter()
        let signalingRouter = webSocketRouter()
        let webSocketConfiguration = WebSocketServerConfiguration(
            maxFrameSize: config.maxFrameBytes, autoPing: .enabled(timePeriod: config.pingInterval), closeTimeout: .seconds(5))
        let app = Application(
            router: router,
            server: .http1ClosingUnused(webSocketRouter: signalingRouter, configuration: .init(ws: webSocketConfiguration)),
            configuration: .init(address: .hostname(config.host, port: config.port), serverName: "Parley"),
            onServerRunning: { [self] channel in
                let port = channel.localAddress?.port ?? config.port
                membership?.announcedAddress.withLockedValue { $0 = announcedAddress(port: port) }
                readiness.set(.ready)
                let waiters = boundPort.withLockedValue { bound in
                    bound = port
                    return portWaiters.withLockedValue { waiters in
                        defer { waiters.removeAll() }
                        return waiters
                    }
                }
                for waiter in waiters { waiter.resume(returning: port) }
                logger.info("listening", metadata: ["address": "\(config.host):\(port)", "workers": "\(workers.count)"])
            },
            logger: logger)
        var secure: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let certificates {
            let tlsApp = Application(
                router: router,
                server: try .tls(
                    .http1ClosingUnused(webSocketRouter: signalingRouter, configuration: .init(ws: webSocketConfiguration)),
                    tlsConfiguration: certificates.configuration()),
                configuration: .init(address: .hostname(config.host, port: config.tlsPort), serverName: "Parley"),
                onServerRunning: { [self] channel in
                    let port = channel.localAddress?.port ?? config.tlsPort
                    boundTLSPort.withLockedValue { $0 = port }
                    logger.info("listening (HTTPS, WSS)", metadata: [
                        "address": "\(config.host):\(port)", "fingerprint": "\(certificates.fingerprint)",
                    ])
                },
                logger: logger)
            secure.append(.init(service: tlsApp))
        }
        var webhooks: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if !config.webhookURLs.isEmpty, let key = config.webhookKey {
            // After the database closer in the list, so it stops (and flushes into the outbox) first.
            webhooks.append(.init(service: WebhookService(
                urls: config.webhookURLs, node: config.nodeName, outbox: store.webhooks, events: services.events,
                issuer: await TokenIssuer(apiKey: key.key, secret: key.secret), clock: services.clock, metrics: metrics,
                logger: logger)))
        }
        // Graceful shutdown stops them in reverse: rooms close first, the database last.
        var lifecycle: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: DatabaseCloser(store: store, logger: logger))]
        lifecycle += webhooks
        if config.chatRetention > .zero {
            lifecycle.append(.init(service: ChatRetentionService(
                retention: config.chatRetention, chat: store.chat, clock: services.clock, metrics: metrics, logger: logger)))
        }
        if let membership { lifecycle.append(.init(service: ClusterHeartbeat(membership: membership, registry: registry))) }
        lifecycle += secure
        lifecycle.append(.init(service: app))
        lifecycle.append(.init(service: RoomCloser(registry: registry, sessions: sessions, readiness: readiness, logger: logger)))
        let group = ServiceGroup(
            configuration: .init(
                services: lifecycle,
                gracefulShutdownSignals: signals,
                logger: logger))
        serviceGroup.withLockedValue { $0 = group }
        defer { serviceGroup.withLockedValue { $0 = nil } }
        // SIGHUP reads the certificate and key again; handshakes from then on use them.
        let reloadOnHangup = certificates.map { certificates in
            Task { [logger] in
                for await _ in await UnixSignalsSequence(trapping: .sighup) {
                    do {
                        try certificates.reload()
                        logger.notice("TLS certificate reloaded", metadata: ["fingerprint": "\(certificates.fingerprint)"])
                    } catch {
                        logger.error("TLS certificate reload failed; the old one stays", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
        defer { reloadOnHangup?.cancel() }
        let drainOnSignal = drainSignals.isEmpty ? nil : Task { [self] in
            for await _ in await UnixSignalsSequence(trapping: drainSignals) {
                await shutdownAfterDrain()
                break
            }
        }
        defer { drainOnSignal?.cancel() }
        do {
            try await group.run()
        } catch {
            await turn?.stop()
            try? await workers.shutdown()
            throw error
        }
        await turn?.stop()
        try await workers.shutdown()
    }

    /// `joined`'s ICE servers: Parley's STUN/TURN over UDP and TCP, with REST credentials minted
    /// for the participant's identity (read at join time, so a port picked at start is right).
    static func iceServers(
        turn: TURNServer?, credentials: TURNCredentials?, host: String, ttlSeconds: Int64, clock: any ServerClock
    ) -> @Sendable (String) -> [ICEServer] {
        guard let turn, let credentials else { return { _ in [] } }
        let hostPart = host.contains(":") ? "[\(host)]" : host
        return { identity in
            guard let port = turn.boundPort else { return [] }
            let expiry = UInt64(max(0, clock.wallMilliseconds() / 1000 + ttlSeconds))
            let credential = credentials.restCredential(identity: identity, expiry: expiry)
            var relays = ["turn:\(hostPart):\(port)?transport=udp", "turn:\(hostPart):\(port)?transport=tcp"]
            if let tlsPort = turn.boundTLSPort { relays.append("turns:\(hostPart):\(tlsPort)?transport=tcp") }
            return [
                ICEServer(urls: ["stun:\(hostPart):\(port)"]),
                ICEServer(urls: relays, username: credential.username, credential: credential.password),
            ]
        }
    }

    static func randomSecret() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<24).map { _ in UInt8.random(in: 0x61...0x7A, using: &generator) }
    }

    /// The port the server listens on, once it does (useful with `server.port: 0`).
    /// The HTTP port once the listener is bound, without waiting.
    public var boundListeningPort: Int? { boundPort.withLockedValue { $0 } }

    public func listeningPort() async -> Int {
        if let port = boundPort.withLockedValue({ $0 }) { return port }
        return await withCheckedContinuation { continuation in
            let port = boundPort.withLockedValue { bound -> Int? in
                if let bound { return bound }
                portWaiters.withLockedValue { $0.append(continuation) }
                return nil
            }
            if let port { continuation.resume(returning: port) }
        }
    }

    /// The web client's URL on each advertised address.
    public func pageURLs(scheme: String, port: Int) -> [String] {
        nodeAddresses.map { "\(scheme)://\($0.isIPv4 ? $0.description : "[\($0)]"):\(port)/" }
    }

    /// The addresses media and TURN advertise: `rtc.nodeIPs`, or the interfaces' when empty.
    public static func advertisedAddresses(_ config: ParleyConfig) -> [IPAddress] {
        config.rtc.nodeIPs.isEmpty ? MediaWorkers.detectNodeAddresses(dev: config.dev) : config.rtc.nodeIPs.compactMap { IPAddress($0) }
    }

    /// Drains the node onto the others of its cluster (when another node is live), then shuts
    /// down gracefully: SIGTERM, as an orchestrator stopping one node of several sends it.
    public func shutdownAfterDrain() async {
        if let drain, await drain.othersLive() {
            _ = await drain.start(timeout: config.nodeDrainTimeout)
            await drain.finished()
            // `reconnect` frames out before the sockets go.
            await sessions.waitUntilIdle(timeout: SignalingSession.closeGrace + .seconds(1))
        }
        await shutdown()
    }

    /// Starts a graceful shutdown, as SIGINT does.
    public func shutdown() async {
        let group = serviceGroup.withLockedValue { $0 }
        await group?.triggerGracefulShutdown()
    }

    /// The live nodes: from the store in a cluster, else this node as it is now.
    func nodes() async throws -> [NodeInfo] {
        if let membership {
            return try await membership.liveNodes().map(NodeInfo.init)
        }
        let address = announcedAddress(port: boundPort.withLockedValue { $0 } ?? config.port)
        let rooms = await registry.list()
        let now = services.clock.wallMilliseconds()
        return [NodeInfo(
            name: config.nodeName, signalingURL: address.signalingURL, mediaAddresses: address.media, turnAddress: address.turn,
            participants: rooms.reduce(0) { $0 + ($1.numParticipants ?? 0) }, rooms: rooms.count, cpu: 0,
            cores: ProcessInfo.processInfo.activeProcessorCount, maxParticipants: config.nodeMaxParticipants, draining: false, startedAt: now, leaseUntil: now)]
    }

    /// Where this node is reached, as its cluster record says.
    func announcedAddress(port: Int) -> (signalingURL: String, media: [String], turn: String) {
        let first = nodeAddresses.first?.description ?? "127.0.0.1"
        let host = first.contains(":") ? "[\(first)]" : first
        let signaling = config.clusterAdvertiseURL.isEmpty ? "http://\(host):\(port)" : config.clusterAdvertiseURL
        let media = nodeAddresses.flatMap { ip in
            workers.ports.compactMap { worker in worker.boundPort.map { TransportAddress(ip: ip, port: UInt16($0)).description } }
        }
        let turnHost = config.turn.publicHost.isEmpty ? host : config.turn.publicHost
        return (signaling, media, turn?.boundPort.map { "\(turnHost):\($0)" } ?? "")
    }

    // MARK: Routers

    func httpRouter() -> Router<APIRequestContext> {
        let router = Router(context: APIRequestContext.self)
        router.middlewares.add(RequestMetricsMiddleware(metrics: metrics))
        router.middlewares.add(RequestLimitsMiddleware(
            limiter: ClientRateLimiter(perSecond: config.httpRateLimit.perSecond, burst: config.httpRateLimit.burst),
            maxBodyBytes: config.httpMaxBodyBytes, clock: services.clock, metrics: metrics))
        router.middlewares.add(WebClientMiddleware())
        if let membership {
            router.middlewares.add(AdminForwardingMiddleware(membership: membership, registry: registry))
        }
        APIRoutes(
            registry: registry, services: services, auth: AdminAuth(verifier: verifier), store: store,
            readiness: readiness, turn: turn, nodes: { [self] in try await nodes() }
        ).register(on: router)
        RecordingRoutes(registry: registry, services: services, auth: AdminAuth(verifier: verifier)).register(on: router)
        WHIPRoutes(registry: registry, services: services, verifier: verifier).register(on: router)
        DrainRoutes(
            drain: drain, nodeName: config.nodeName, auth: AdminAuth(verifier: verifier), defaultTimeout: config.nodeDrainTimeout,
            shutdown: { [self] in await shutdown() }
        ).register(on: router)
        // A plain GET (no upgrade) learns why its token is refused (401, 403), as JSON.
        let verifier = self.verifier
        router.get("/v1/rtc") { request, _ -> Response in
            _ = try await Self.signalingClaims(request, verifier: verifier)
            throw APIError(.badRequest, "/v1/rtc expects a WebSocket upgrade")
        }
        return router
    }

    func webSocketRouter() -> Router<SignalingRequestContext> {
        let router = Router(context: SignalingRequestContext.self)
        router.middlewares.add(RequestMetricsMiddleware(metrics: metrics))
        let verifier = self.verifier
        let registry = self.registry
        let services = self.services
        let sessions = self.sessions
        let config = self.config
        // Only a node of a cluster relays; a relayed connection is never relayed again.
        let relay = membership.map { membership in
            SignalingRelay(membership: membership, maxMessageBytes: config.maxMessageBytes, metrics: services.metrics)
        }
        // The token is checked before the upgrade: a refused client gets 401 or 403 with a JSON
        // error. Browsers cannot read that status; the web client asks a plain GET for the reason.
        router.ws("/v1/rtc", shouldUpgrade: { request, context in
            do {
                let claims = try await Self.signalingClaims(request, verifier: verifier)
                if let credential = request.headers[SignalingRelay.credentialHeader] {
                    guard let node = ClusterCredential.verify(
                        credential, now: Int64(Date().timeIntervalSince1970), secret: config.clusterSecret)
                    else {
                        throw APIError(.unauthorized, "invalid cluster relay credential")
                    }
                    services.metrics.relayedSessionsIn.increment()
                    context.relayedFrom.withLockedValue { $0 = node }
                }
                context.claims.withLockedValue { $0 = claims }
                // A browser that offered its token as a subprotocol needs one of its offers back.
                return .upgrade(Self.tokenSubprotocol(request) == nil ? [:] : [.secWebSocketProtocol: Self.signalingSubprotocol])
            } catch let refusal as APIError {
                services.metrics.recordError(refusal.error.code)
                context.logger.notice("signaling refused", metadata: ["code": "\(refusal.error.code.rawValue)", "reason": "\(refusal.error.message)"])
                try await UpgradeRefusal.arm(context.channel, with: refusal)
                throw refusal
            }
        }) { inbound, outbound, context in
            guard let claims = context.requestContext.claims.withLockedValue({ $0 }) else { return }
            let resume = context.request.uri.queryParameters.get("resume")
            let relayedFrom = context.requestContext.relayedFrom.withLockedValue { $0 }
            await SignalingSession(
                claims: claims, resume: resume, registry: registry, services: services, sessions: sessions,
                relay: relayedFrom == nil ? relay.map { ($0, context.request.uri.query ?? "", Self.signalingToken(context.request) ?? "") } : nil
            ).run(inbound: inbound, outbound: outbound, logger: context.logger)
        }
        return router
    }

    /// The subprotocol a browser offers beside `parley` to carry its token: `access_token.<JWT>`.
    static let tokenSubprotocolPrefix = "access_token."
    static let signalingSubprotocol = "parley"

    /// A signaling request's token: `?token=`, `Authorization: Bearer`, or the WebSocket
    /// subprotocol `access_token.<JWT>` (what a browser can set), so it stays out of URLs that
    /// proxies log.
    static func signalingToken(_ request: Request) -> String? {
        if let token = request.uri.queryParameters.get("token") { return String(token) }
        if let header = request.headers[.authorization], header.lowercased().hasPrefix("bearer ") {
            return String(header.dropFirst("bearer ".count))
        }
        return tokenSubprotocol(request)
    }

    static func tokenSubprotocol(_ request: Request) -> String? {
        guard let offered = request.headers[.secWebSocketProtocol] else { return nil }
        for item in offered.split(separator: ",") {
            let name = item.trimmingCharacters(in: .whitespaces)
            if name.hasPrefix(tokenSubprotocolPrefix) { return String(name.dropFirst(tokenSubprotocolPrefix.count)) }
        }
        return nil
    }

    /// The claims of a signaling request's token, or the 401/403 to refuse the upgrade with.
    static func signalingClaims(_ request: Request, verifier: TokenVerifier) async throws -> AccessClaims {
        guard let token = signalingToken(request), !token.isEmpty else { throw APIError(.unauthorized, "missing token") }
        let claims: AccessClaims
        do {
            claims = try await verifier.verify(token)
        } catch {
            throw APIError(.unauthorized, error.description)
        }
        guard claims.grants.join else { throw APIError(.forbidden, "token lacks the join grant") }
        guard let room = claims.grants.room, !room.isEmpty else { throw APIError(.forbidden, "token names no room") }
        return claims
    }
}

/// Records latency per route pattern for `/metrics`.
struct RequestMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: ServerMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        do {
            let response = try await next(request, context)
            record(request, context, status: response.status.code, since: start)
            return response
        } catch let error as any HTTPResponseError {
            record(request, context, status: error.status.code, since: start)
            throw error
        } catch {
            record(request, context, status: 500, since: start)
            throw error
        }
    }

    private func record(_ request: Request, _ context: Context, status: Int, since start: ContinuousClock.Instant) {
        let route = context.endpointPath ?? "unmatched"
        metrics.recordRequest(method: request.method.rawValue, route: route, status: status, duration: ContinuousClock.now - start)
    }
}

/// Closes every room when shutdown starts, before the listener stops, so clients hear `room.closed`
/// (after a drain, there are none left).
struct RoomCloser: Service {
    let registry: RoomRegistry
    let sessions: SessionCounter
    let readiness: Readiness
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        readiness.set(.draining)
        logger.info("shutting down: closing rooms")
        await registry.closeAll(reason: "server_shutdown")
        // Let every session write `room.closed` and finish its close handshake (an unresponsive
        // client is cut after the grace period) before the listener tears sockets down.
        await sessions.waitUntilIdle(timeout: SignalingSession.closeGrace + .seconds(1))
    }
}

/// Closes the database last, after every writer is done.
struct DatabaseCloser: Service {
    let store: any DataStore
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        do {
            try await store.close()
            logger.info("store closed", metadata: ["kind": "\(store.kind)", "location": "\(store.location)"])
        } catch {
            logger.error("database close failed", metadata: ["error": "\(error)"])
        }
    }
}
