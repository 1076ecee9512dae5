import Addresses
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NetworkAddress
import STUN

#if canImport(Glibc)
import Glibc
#endif

/// The built-in STUN/TURN server (RFC 8489, RFC 8656): UDP and TCP listeners on every given
/// address, one worker per core, each on its own `UDPEngine` thread. On UDP each worker has its
/// own socket on the shared port (SO_REUSEPORT), so the kernel spreads clients over the workers
/// and a client's datagrams always reach the same one; its relays live there too. TCP works the
/// same way: each worker listens on the shared port and serves its connections on its own thread.
/// TLS connections are accepted by SwiftNIO (NIOSSL) and their frames handed to a worker.
public final class TURNServer: Sendable {
    private let group: any EventLoopGroup
    private let loops: [any EventLoop]
    private let baseConfiguration: TURNConfiguration
    private let now: @Sendable () -> UInt64
    private let unixTime: @Sendable () -> UInt64
    private let state = NIOLockedValueBox(State())
    private let reservations = PortReservations()

    struct State {
        var workers: [TURNWorker] = []
        var channels: [any Channel] = []
        var boundPort: Int?
        var boundTLSPort: Int?
    }

    public init(
        configuration: TURNConfiguration, group: any EventLoopGroup,
        now: @escaping @Sendable () -> UInt64 = { NIODeadline.now().uptimeNanoseconds },
        unixTime: @escaping @Sendable () -> UInt64 = { UInt64(time(nil)) }
    ) {
        self.group = group
        self.loops = Array(group.makeIterator())
        self.baseConfiguration = configuration
        self.now = now
        self.unixTime = unixTime
    }

    /// The port the listeners share (the configured one, or what the system picked for 0).
    public var boundPort: Int? { state.withLockedValue { $0.boundPort } }

    /// The TURN-over-TLS port, when `start` was given TLS.
    public var boundTLSPort: Int? { state.withLockedValue { $0.boundTLSPort } }

    /// Opens UDP and TCP listeners on `port` at each address, and with `tls` a TLS listener on its
    /// port (TURN over TLS, RFC 8656 §3.1: the same framing as TCP inside TLS). `mediaAddresses`
    /// are Parley's own media sockets, which relays may always reach.
    public func start(
        addresses: [IPAddress], port: Int, mediaAddresses: Set<TransportAddress>, tls: (port: Int, configuration: TLSConfiguration)? = nil
    ) async throws {
        let tlsContext = try tls.map { try NIOSSLContext(configuration: $0.configuration) }
        var tlsPort = tls?.port ?? 0
        var configuration = baseConfiguration
        configuration.policy.mediaAddresses.formUnion(mediaAddresses)
        var nonceKey = [UInt8](repeating: 0, count: 32)
        var random = SystemRandomNumberGenerator()
        for index in nonceKey.indices { nonceKey[index] = random.next() }
        let nonces = NonceIssuer(key: nonceKey, lifetimeSeconds: configuration.nonceLifetimeSeconds)
        let quota = AllocationQuota(maxTotal: configuration.maxAllocations, maxPerKey: configuration.maxAllocationsPerUser)
        let admission = StreamAdmission(maxTotal: configuration.maxStreamConnections, maxPerKey: configuration.maxStreamConnectionsPerSource)
        var workers: [TURNWorker] = []
        for _ in loops {
            let engine = try UDPEngine(now: now)
            let worker = TURNWorker(
                engine: engine, configuration: configuration, nonces: nonces, quota: quota, reservations: reservations,
                admission: admission, now: now, unixTime: unixTime)
            worker.attach()
            workers.append(worker)
        }

        var boundPort = port
        var channels: [any Channel] = []
        var listeners: [(Int32, TURNWorker, UDPEngine.Role)] = []
        do {
            for address in addresses {
                if boundPort != 0 { try await probeUDP(TransportAddress(ip: address, port: UInt16(boundPort))) }
                for worker in workers {
                    let local = TransportAddress(ip: address, port: UInt16(boundPort))
                    let socket = try bindUDPSocket(local, reusePort: true, bufferBytes: 4 << 20)
                    if boundPort == 0 { boundPort = Int(NetworkAddress.localAddress(of: socket)?.port ?? 0) }
                    listeners.append((socket, worker, .listener(server: TransportAddress(ip: address, port: UInt16(boundPort)))))
                }
                let local = TransportAddress(ip: address, port: UInt16(boundPort))
                // As for UDP: a port another process listens on, even with SO_REUSEPORT, is refused.
                close(try bindTCPListener(local))
                for worker in workers {
                    listeners.append((try bindTCPListener(local, reusePort: true), worker, .streamListener(server: local)))
                }
                if let tlsContext {
                    let listener = try await tlsListener(
                        workers: workers, address: TransportAddress(ip: address, port: UInt16(tlsPort)), tls: tlsContext)
                    if tlsPort == 0 { tlsPort = listener.localAddress?.port ?? 0 }
                    channels.append(listener)
                }
            }
        } catch {
            for (socket, _, _) in listeners { close(socket) }
            for channel in channels { try? await channel.close() }
            throw error
        }
        for (socket, worker, role) in listeners { worker.engine.register(socket, role: role) }
        for (index, worker) in workers.enumerated() { worker.engine.start(name: "turn-\(index)") }
        let port = boundPort
        state.withLockedValue { state in
            state.workers = workers
            state.channels = channels
            state.boundPort = port
            state.boundTLSPort = tlsContext == nil ? nil : tlsPort
        }
    }

    public func stop() async {
        let (channels, workers) = state.withLockedValue { state in
            defer {
                state.channels = []
                state.workers = []
            }
            return (state.channels, state.workers)
        }
        for channel in channels { try? await channel.close() }
        for worker in workers {
            await worker.engine.submit { worker.stop() }
            worker.engine.stop()
        }
        reservations.closeAll()
    }

    /// Counters summed over the workers, each read on its own loop.
    public func statistics() async -> TURNStatistics {
        var total = TURNStatistics()
        for worker in state.withLockedValue({ $0.workers }) {
            total.add(await worker.engine.submit { worker.snapshot() })
        }
        return total
    }

    /// Runs every worker's expiry pass now, as the one-second timer does (tests drive time).
    func tickAll() async {
        for worker in state.withLockedValue({ $0.workers }) {
            await worker.engine.submit { worker.tick(now: worker.now()) }
        }
    }

    /// Binds the port once without SO_REUSEPORT and lets it go: if another process (a coturn,
    /// another Parley) holds it, even with SO_REUSEPORT, this fails instead of silently sharing
    /// the port's traffic with it.
    private func probeUDP(_ address: TransportAddress) async throws {
        let probe = try await DatagramBootstrap(group: loops[0]).bind(to: SocketAddress(address)).get()
        try await probe.close()
    }

    private func tlsListener(workers: [TURNWorker], address: TransportAddress, tls: NIOSSLContext) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let remote = channel.remoteAddress.flatMap(TransportAddress.init) else {
                        throw ChannelError.inappropriateOperationForState
                    }
                    let worker = workers[Int(remote.port) % workers.count]
                    guard worker.admission.acquire(remote.ip) else {
                        worker.engine.execute { worker.statistics.streamsRefused += 1 }
                        throw ChannelError.inappropriateOperationForState
                    }
                    let key = ClientKey(transport: .tcp, client: remote, server: address)
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(STUNStreamDecoder()))
                    // A quiet client is asked after: one without an allocation is closed.
                    try channel.pipeline.syncOperations.addHandler(
                        IdleStateHandler(readTimeout: .seconds(Int64(worker.configuration.streamIdleSeconds))))
                    try channel.pipeline.syncOperations.addHandler(TLSClientHandler(worker: worker, key: key))
                }
            }
            .bind(to: SocketAddress(address)).get()
    }
}

/// Frames from one TLS client; its allocation ends with the connection.
final class TLSClientHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    private let worker: TURNWorker
    private let key: ClientKey

    init(worker: TURNWorker, key: ClientKey) {
        self.worker = worker
        self.key = key
    }

    /// Frames decoded in one pass of the channel's loop, handed to the worker together.
    private var frames: [ByteBuffer] = []

    /// Frames go to the worker's thread in batches: the first of a batch schedules the hand-over
    /// for the end of this pass of the loop (after everything read in it, TLS's decrypted records
    /// included), so a busy client costs one hop per pass, not one per frame.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        frames.append(unwrapInboundIn(data))
        guard frames.count == 1 else { return }
        let loopBound = NIOLoopBound((self, context.channel), eventLoop: context.eventLoop)
        context.eventLoop.execute { loopBound.value.0.handOver(channel: loopBound.value.1) }
    }

    private func handOver(channel: any Channel) {
        let batch = frames
        frames.removeAll(keepingCapacity: true)
        let (worker, key) = (self.worker, self.key)
        worker.engine.execute {
            for var frame in batch {
                frame.withUnsafeMutableReadableBytes { worker.handleClient($0, key: key, link: .channel(channel)) }
            }
            worker.engine.flushSends()
            worker.flushChannels()
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        let worker = self.worker
        worker.engine.execute { worker.statistics.tcpConnections += 1 }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Frames read before the close go first: the worker runs its tasks in order, so the
        // allocation they touch is not ended under them.
        if !frames.isEmpty { handOver(channel: context.channel) }
        let (worker, key) = (self.worker, self.key)
        worker.admission.release(key.client.ip)
        worker.engine.execute {
            worker.statistics.tcpConnections -= 1
            worker.connectionClosed(key)
        }
        context.fireChannelInactive()
    }

    /// Nothing read for `turn.tcp.idleTimeout`: a client without an allocation is closed, as the
    /// engine does for TCP ones.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is IdleStateHandler.IdleStateEvent else { return context.fireUserInboundEventTriggered(event) }
        let (worker, key, channel) = (self.worker, self.key, context.channel)
        worker.engine.execute {
            guard !worker.hasAllocation(key) else { return }
            worker.statistics.streamsClosedIdle += 1
            channel.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is STUNStreamDecoder.InvalidFrame {
            let worker = self.worker
            worker.engine.execute { worker.statistics.droppedMalformed += 1 }
        }
        context.close(promise: nil)
    }
}
