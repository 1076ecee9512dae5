import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NetworkAddress
import STUN

#if canImport(Glibc)
import Glibc
#endif

/// The built-in STUN/TURN server (RFC 8489, RFC 8656): UDP and TCP listeners on every given
/// address, one worker per event loop. On UDP each loop has its own socket on the shared port
/// (SO_REUSEPORT), so the kernel spreads clients over the loops and a client's datagrams always
/// reach the same one; a TCP connection stays on the loop it was accepted on. Allocations and
/// their relays live on that loop too.
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

    /// Opens UDP and TCP listeners on `port` at each address. `mediaAddresses` are Parley's own
    /// media sockets, which relays may always reach.
    public func start(addresses: [IPAddress], port: Int, mediaAddresses: Set<TransportAddress>) async throws {
        var configuration = baseConfiguration
        configuration.policy.mediaAddresses.formUnion(mediaAddresses)
        var nonceKey = [UInt8](repeating: 0, count: 32)
        var random = SystemRandomNumberGenerator()
        for index in nonceKey.indices { nonceKey[index] = random.next() }
        let nonces = NonceIssuer(key: nonceKey, lifetimeSeconds: configuration.nonceLifetimeSeconds)
        let quota = AllocationQuota(maxTotal: configuration.maxAllocations, maxPerUser: configuration.maxAllocationsPerUser)
        let workers = loops.map { loop in
            TURNWorker(
                loop: loop, configuration: configuration, nonces: nonces, quota: quota, reservations: reservations, now: now,
                unixTime: unixTime)
        }
        state.withLockedValue { $0.workers = workers }
        for worker in workers { try await worker.loop.submit { worker.startTicking() }.get() }

        var boundPort = port
        var channels: [any Channel] = []
        do {
            for address in addresses {
                if boundPort != 0 { try await probeUDP(TransportAddress(ip: address, port: UInt16(boundPort))) }
                for worker in workers {
                    let channel = try await udpListener(worker: worker, address: TransportAddress(ip: address, port: UInt16(boundPort)))
                    if boundPort == 0 { boundPort = channel.localAddress?.port ?? 0 }
                    channels.append(channel)
                }
                channels.append(try await tcpListener(workers: workers, address: TransportAddress(ip: address, port: UInt16(boundPort))))
            }
        } catch {
            for channel in channels { try? await channel.close() }
            throw error
        }
        let port = boundPort
        state.withLockedValue { state in
            state.channels = channels
            state.boundPort = port
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
        for worker in workers { try? await worker.loop.submit { worker.stop() }.get() }
        reservations.closeAll()
    }

    /// Counters summed over the workers, each read on its own loop.
    public func statistics() async -> TURNStatistics {
        var total = TURNStatistics()
        for worker in state.withLockedValue({ $0.workers }) {
            if let snapshot = try? await worker.loop.submit({ worker.snapshot() }).get() { total.add(snapshot) }
        }
        return total
    }

    /// Runs every worker's expiry pass now, as the one-second timer does (tests drive time).
    func tickAll() async {
        for worker in state.withLockedValue({ $0.workers }) {
            try? await worker.loop.submit { worker.tick(now: worker.now()) }.get()
        }
    }

    /// Binds the port once without SO_REUSEPORT and lets it go: if another process (a coturn,
    /// another Parley) holds it, even with SO_REUSEPORT, this fails instead of silently sharing
    /// the port's traffic with it.
    private func probeUDP(_ address: TransportAddress) async throws {
        let probe = try await DatagramBootstrap(group: loops[0]).bind(to: SocketAddress(address)).get()
        try await probe.close()
    }

    private func udpListener(worker: TURNWorker, address: TransportAddress) async throws -> any Channel {
        try await DatagramBootstrap(group: worker.loop)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: 1)
            .channelOption(.socketOption(.so_rcvbuf), value: 4 << 20)
            .channelOption(.socketOption(.so_sndbuf), value: 4 << 20)
            .channelOption(.datagramVectorReadMessageCount, value: 16)
            // One vectored read per wakeup: epoll is level-triggered, so NIO's default of reading
            // again until EAGAIN costs an empty recvmmsg per datagram at moderate rates.
            .channelOption(.maxMessagesPerRead, value: 1)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 16 * 2048))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(UDPListenerHandler(worker: worker, server: address))
                }
            }
            .bind(to: SocketAddress(address)).get()
    }

    private func tcpListener(workers: [TURNWorker], address: TransportAddress) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Accepted connections are spread over the loops; the worker is the one here.
                    guard let worker = workers.first(where: { $0.loop.inEventLoop }),
                        let remote = channel.remoteAddress.flatMap(TransportAddress.init)
                    else { throw ChannelError.inappropriateOperationForState }
                    let key = ClientKey(transport: .tcp, client: remote, server: address)
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(STUNStreamDecoder()))
                    try channel.pipeline.syncOperations.addHandler(TCPClientHandler(worker: worker, key: key))
                }
            }
            .bind(to: SocketAddress(address)).get()
    }
}

/// Datagrams from clients on one UDP listener.
final class UDPListenerHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    private let worker: TURNWorker
    private let server: TransportAddress

    init(worker: TURNWorker, server: TransportAddress) {
        self.worker = worker
        self.server = server
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let client = TransportAddress(envelope.remoteAddress) else { return }
        let key = ClientKey(transport: .udp, client: client, server: server)
        worker.handleClient(envelope.data, key: key, link: .udp(context.channel, envelope.remoteAddress))
    }

    func channelReadComplete(context: ChannelHandlerContext) { worker.flush() }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ICMP errors from clients that left; the listener stays open.
    }
}

/// Frames from one TCP client; its allocation ends with the connection.
final class TCPClientHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    private let worker: TURNWorker
    private let key: ClientKey

    init(worker: TURNWorker, key: ClientKey) {
        self.worker = worker
        self.key = key
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        worker.handleClient(unwrapInboundIn(data), key: key, link: .tcp(context.channel))
    }

    func channelReadComplete(context: ChannelHandlerContext) { worker.flush() }

    func channelInactive(context: ChannelHandlerContext) {
        worker.connectionClosed(key)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is STUNStreamDecoder.InvalidFrame { worker.statistics.droppedMalformed += 1 }
        context.close(promise: nil)
    }
}

/// Splits a TCP byte stream into STUN messages and padded ChannelData frames (RFC 8656 §12.5).
struct STUNStreamDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    struct InvalidFrame: Error {}

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let frame = buffer.withUnsafeReadableBytes { STUNFraming.nextFrame($0) }
        switch frame {
        case .needMore:
            return .needMoreData
        case .invalid:
            throw InvalidFrame()
        case .complete(let length):
            guard let slice = buffer.readSlice(length: length) else { return .needMoreData }
            context.fireChannelRead(wrapInboundOut(slice))
            return .continue
        }
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try decode(context: context, buffer: &buffer)
    }
}
