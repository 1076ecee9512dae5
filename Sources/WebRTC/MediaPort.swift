import Addresses
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
@_exported import NetworkAddress
import STUN

/// One media worker's UDP sockets (one per advertised IP, all on the worker's port) and the
/// demultiplexer in front of its transports: STUN checks are routed by the ufrag in USERNAME,
/// everything else by the sender's address once ICE has validated it. It lives on the worker's
/// event loop, as do the rooms it serves, so a datagram reaches its transport with no hop or lock;
/// `@unchecked Sendable` only so the worker can be handed around, every use asserts the loop.
///
/// NIO reads the sockets (recvmmsg, a batch per wakeup) so the loop stays the rooms' executor.
/// Sends bypass NIO's pipeline: each datagram goes into a preallocated slot (a forwarded copy is
/// built and encrypted there, `sendSlot`) and a read burst's (or a tick's) datagrams leave in one
/// sendmmsg per socket, so forwarding allocates nothing.
public final class MediaPort: @unchecked Sendable {
    public let loop: any EventLoop
    public let port: Int
    public private(set) var localAddresses: [TransportAddress] = []
    /// The UDP port bound (the configured one, or the one the system picked for port 0).
    public var boundPort: Int? { _boundPort.withLockedValue { $0 } }
    private let _boundPort = NIOLockedValueBox<Int?>(nil)
    private var channels: [any Channel] = []
    /// One per channel, same index: the socket's descriptor and its queued sends.
    private var outboxes: [Outbox] = []
    private var byUfrag: [String: WebRTCTransport] = [:]
    /// Every registered transport once (an ICE restart leaves one under two ufrags for a while);
    /// kept as a list so the 50 Hz tick does not rebuild it.
    private var transports: [WebRTCTransport] = []
    /// Which transport a validated peer address belongs to, and the way back to it (kept apart:
    /// copying a route on every send then retains nothing).
    private var byAddress: [TransportAddress: WebRTCTransport] = [:]
    private var sendRoutes: [TransportAddress: DatagramRoute] = [:]
    /// The socket the datagram being handled came in on; replies go out the same way (aioice
    /// drops a response from another address).
    private var currentSocket = 0
    /// True while a read burst or a tick runs: it flushes at its end. Otherwise a send schedules
    /// one flush on the loop.
    private var flushPending = false
    /// Where a received datagram is handled, so decrypting in place never touches NIO's buffer
    /// (a slice of a vector read, which writing would copy).
    private let receiveScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: Outbox.slotSize, alignment: 16)
    /// Datagrams one recvmmsg takes.
    static let readBatch = 32
    private var tickTask: RepeatedTask?
    private var tickCount = 0
    /// From this many transports on, a tick runs a slice of them.
    static let slicedTickThreshold = 256
    private var tickInterval: TimeAmount = .milliseconds(20)
    private var tickHandlers: [ObjectIdentifier: (UInt64) -> Void] = [:]
    public let now: @Sendable () -> UInt64
    public private(set) var counters = PortCounters()
    /// Counters of transports that have been removed, so totals never go backwards.
    private var retiredTransportCounters = TransportCounters()

    private func addRoute(_ address: TransportAddress, to transport: WebRTCTransport, socket: Int) {
        byAddress[address] = transport
        sendRoutes[address] = DatagramRoute(address: address, socket: socket, rawAddress: RawSocketAddress(address))
    }

    public struct PortCounters: Sendable, Equatable {
        public var datagramsIn: UInt64 = 0
        public var datagramsOut: UInt64 = 0
        public var droppedMalformed: UInt64 = 0
        public var droppedUnknownUfrag: UInt64 = 0
        public var droppedUnknownSource: UInt64 = 0
        public var sendFailures: UInt64 = 0
    }

    public init(loop: any EventLoop, port: Int, now: @escaping @Sendable () -> UInt64 = { NIODeadline.now().uptimeNanoseconds }) {
        self.loop = loop
        self.port = port
        self.now = now
    }

    deinit { receiveScratch.deallocate() }

    /// Binds one socket per address on `port` (0 picks a free port, shared by the rest) and
    /// starts the worker's tick.
    public func start(addresses: [IPAddress], tickInterval: TimeAmount = .milliseconds(20)) async throws {
        var boundPort = port
        for (index, address) in addresses.enumerated() {
            let handler = MediaPortHandler(port: self, socket: index)
            let fd = try bindUDPSocket(TransportAddress(ip: address, port: UInt16(boundPort)), reusePort: true, bufferBytes: 4 << 20)
            // NIO owns the descriptor from here (reads, close); the outbox only sends through it.
            let channel = try await DatagramBootstrap(group: loop)
                // A vector read splits one buffer evenly between its messages.
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: Outbox.slotSize * Self.readBatch))
                .channelOption(.datagramVectorReadMessageCount, value: Self.readBatch)
                .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) } }
                .withBoundSocket(fd).get()
            if boundPort == 0 { boundPort = channel.localAddress?.port ?? 0 }
            _boundPort.withLockedValue { $0 = boundPort }
            let local = TransportAddress(ip: address, port: UInt16(boundPort))
            try await loop.submit {
                self.channels.append(channel)
                self.outboxes.append(Outbox(fd: fd))
                self.localAddresses.append(local)
            }.get()
        }
        try await loop.submit { self.tickInterval = tickInterval }.get()
    }

    /// The tick runs only while there is something to tick (transports, rooms): an idle worker
    /// does not wake 50 times a second.
    private func ensureTicking() {
        guard tickTask == nil, !channels.isEmpty else { return }
        tickTask = loop.scheduleRepeatedTask(initialDelay: tickInterval, delay: tickInterval) { _ in self.tick() }
    }

    public func stop() async {
        let channels = try? await loop.submit { () -> [any Channel] in
            self.tickTask?.cancel()
            self.tickTask = nil
            for transport in self.transports { transport.close() }
            self.flush()
            defer {
                self.channels = []
                self.outboxes = []
            }
            return self.channels
        }.get()
        for channel in channels ?? [] { try? await channel.close() }
    }

    // MARK: Transports

    /// Makes checks addressed to the transport's local ufrag reach it.
    public func register(_ transport: WebRTCTransport) {
        loop.preconditionInEventLoop()
        transport.sink = self
        byUfrag[transport.localICE.ufrag] = transport
        if !transports.contains(where: { $0 === transport }) { transports.append(transport) }
        ensureTicking()
    }

    /// After an ICE restart: the new ufrag routes to the transport, the old one no longer does.
    public func reregister(_ transport: WebRTCTransport, previousUfrag: String) {
        loop.preconditionInEventLoop()
        if byUfrag[previousUfrag] === transport { byUfrag[previousUfrag] = nil }
        byUfrag[transport.localICE.ufrag] = transport
    }

    public func unregister(_ transport: WebRTCTransport) {
        loop.preconditionInEventLoop()
        byUfrag = byUfrag.filter { $0.value !== transport }
        transports.removeAll { $0 === transport }
        for (address, owner) in byAddress where owner === transport {
            byAddress[address] = nil
            sendRoutes[address] = nil
        }
        retiredTransportCounters.add(transport.counters)
        transport.sink = nil
    }

    public var transportCount: Int {
        loop.preconditionInEventLoop()
        return transports.count
    }


    /// Totals over live and removed transports, for metrics.
    public func transportTotals() -> TransportCounters {
        loop.preconditionInEventLoop()
        var totals = retiredTransportCounters
        for transport in transports { totals.add(transport.counters) }
        return totals
    }

    /// The worker's figures for `/metrics`; call on the loop.
    public func snapshot() -> MediaSnapshot {
        loop.preconditionInEventLoop()
        var snapshot = MediaSnapshot()
        snapshot.port = counters
        snapshot.transports = transportTotals()
        snapshot.activeTransports = transports.count
        snapshot.connectedTransports = transports.filter(\.isConnected).count
        return snapshot
    }

    /// Runs `handler` on every tick with the current time, until `removeTickHandler(owner)`.
    public func addTickHandler(owner: AnyObject, _ handler: @escaping (UInt64) -> Void) {
        loop.preconditionInEventLoop()
        tickHandlers[ObjectIdentifier(owner)] = handler
        ensureTicking()
    }

    public func removeTickHandler(owner: AnyObject) {
        loop.preconditionInEventLoop()
        tickHandlers[ObjectIdentifier(owner)] = nil
    }

    // MARK: Datagrams

    func receive(_ envelope: AddressedEnvelope<ByteBuffer>, socket: Int) {
        counters.datagramsIn += 1
        flushPending = true
        guard let source = TransportAddress(envelope.remoteAddress), envelope.data.readableBytes <= receiveScratch.count else {
            return counters.droppedMalformed += 1
        }
        currentSocket = socket
        let bytes = UnsafeMutableRawBufferPointer(rebasing: receiveScratch[0..<envelope.data.readableBytes])
        envelope.data.withUnsafeReadableBytes { bytes.copyMemory(from: $0) }
        let now = now()
        do {
            switch PacketKind(UnsafeRawBufferPointer(bytes)) {
            case .stun:
                guard let message = try? STUNMessage(parsing: UnsafeRawBufferPointer(bytes)) else { return counters.droppedMalformed += 1 }
                guard let ufrag = ICELiteAgent.localUfrag(of: message), let transport = byUfrag[String(ufrag)] else {
                    return counters.droppedUnknownUfrag += 1
                }
                transport.handleSTUN(message, from: source, now: now)
                if transport.ice.accepts(source), byAddress[source] == nil {
                    addRoute(source, to: transport, socket: socket)
                }
            case .dtls, .rtp, .rtcp:
                guard let transport = byAddress[source] else { return counters.droppedUnknownSource += 1 }
                transport.receive(bytes, from: source, now: now)
            case .turnChannelData, .unknown:
                counters.droppedMalformed += 1
            }
        }
    }

    func readComplete() { flush() }

    private func flush() {
        flushPending = false
        for outbox in outboxes { counters.sendFailures += UInt64(outbox.flush()) }
    }

    private func tick() {
        flushPending = true
        let now = now()
        // A busy worker ticks a fifth of its transports each time (each every 100 ms at 50 Hz):
        // consent and DTLS retransmission timers tolerate that, and touching a thousand cold
        // transports 50 times a second costs cache the forwarding path needs.
        let slices = transports.count >= Self.slicedTickThreshold ? 5 : 1
        tickCount &+= 1
        var index = tickCount % slices
        while index < transports.count {
            transports[index].tick(now: now)
            index += slices
        }
        for handler in Array(tickHandlers.values) { handler(now) }
        flush()
        if transports.isEmpty, tickHandlers.isEmpty, byUfrag.isEmpty {
            tickTask?.cancel()
            tickTask = nil
        }
    }
}

extension MediaPort: DatagramSink {
    /// To a known peer by its route; to another (a check's answer) out of the socket the
    /// datagram being handled came in on.
    public func send(_ datagram: UnsafeRawBufferPointer, to address: TransportAddress) {
        send(datagram, via: sendRoutes[address] ?? DatagramRoute(address: address, socket: currentSocket, rawAddress: RawSocketAddress(address)))
    }

    public func route(to address: TransportAddress) -> DatagramRoute? { sendRoutes[address] }

    public func send(_ datagram: UnsafeRawBufferPointer, via route: DatagramRoute) {
        guard let slot = sendSlot(via: route), datagram.count <= slot.count else { return counters.sendFailures += 1 }
        if let bytes = datagram.baseAddress { slot.baseAddress!.copyMemory(from: bytes, byteCount: datagram.count) }
        commitSendSlot(length: datagram.count, via: route)
    }

    public func sendSlot(via route: DatagramRoute) -> UnsafeMutableRawBufferPointer? {
        guard route.socket < outboxes.count else { return nil }
        let (slot, dropped) = outboxes[route.socket].nextSlot()
        counters.sendFailures += UInt64(dropped)
        return slot
    }

    public func commitSendSlot(length: Int, via route: DatagramRoute) {
        outboxes[route.socket].commit(length: length, to: route.rawAddress)
        counters.datagramsOut += 1
        scheduleFlush()
    }

    private func scheduleFlush() {
        if !flushPending {
            flushPending = true
            loop.execute { self.flush() }
        }
    }

    public func transport(_ transport: WebRTCTransport, didSelect address: TransportAddress, previous: TransportAddress?) {
        addRoute(address, to: transport, socket: currentSocket)
    }
}

/// A socket's queued sends: each datagram written into one of `capacity` preallocated slots (in
/// place by the forwarding path, or copied), all sent with one sendmmsg when the batch fills or
/// the port flushes.
final class Outbox {
    static let capacity = 64
    static let slotSize = 2048
    let fd: Int32
    private var batch = SendBatch(capacity: Outbox.capacity)
    private let slots = UnsafeMutableRawPointer.allocate(byteCount: Outbox.capacity * Outbox.slotSize, alignment: 16)

    init(fd: Int32) { self.fd = fd }

    deinit { slots.deallocate() }

    /// The slot the next datagram is written to, after a flush when the batch is full (with how
    /// many datagrams that flush lost). Nothing is queued until `commit`.
    func nextSlot() -> (slot: UnsafeMutableRawBufferPointer, dropped: Int) {
        let dropped = batch.isFull ? flush() : 0
        return (UnsafeMutableRawBufferPointer(start: slots + batch.count * Self.slotSize, count: Self.slotSize), dropped)
    }

    /// Queues the `length` bytes written to the slot `nextSlot` gave.
    func commit(length: Int, to address: RawSocketAddress) {
        precondition(length <= Self.slotSize, "a datagram longer than its slot")
        batch.append(UnsafeRawBufferPointer(start: slots + batch.count * Self.slotSize, count: length), to: address)
    }

    /// Sends what is queued; returns how many datagrams the kernel refused (a full send buffer).
    func flush() -> Int { batch.flush(through: fd) }
}

/// The channel handler: hands each datagram to the port and flushes replies after a read burst,
/// so several writes go out in one sendmmsg.
final class MediaPortHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    private let port: MediaPort
    private let socket: Int

    init(port: MediaPort, socket: Int) {
        self.port = port
        self.socket = socket
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        port.receive(unwrapInboundIn(data), socket: socket)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        port.readComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ICMP port unreachable and the like surface here on UDP; a media socket stays open.
    }
}

extension TransportCounters {
    public mutating func add(_ other: TransportCounters) {
        rtpPacketsIn += other.rtpPacketsIn
        rtpBytesIn += other.rtpBytesIn
        rtpPacketsOut += other.rtpPacketsOut
        rtpBytesOut += other.rtpBytesOut
        rtcpPacketsIn += other.rtcpPacketsIn
        rtcpBytesIn += other.rtcpBytesIn
        rtcpPacketsOut += other.rtcpPacketsOut
        rtcpBytesOut += other.rtcpBytesOut
        dtlsPacketsIn += other.dtlsPacketsIn
        dtlsPacketsOut += other.dtlsPacketsOut
        stunChecks += other.stunChecks
        stunRejected += other.stunRejected
        srtpFailures += other.srtpFailures
        srtcpFailures += other.srtcpFailures
        dtlsFailures += other.dtlsFailures
        droppedUnknownSource += other.droppedUnknownSource
        droppedBeforeKeys += other.droppedBeforeKeys
        droppedMalformed += other.droppedMalformed
    }
}
