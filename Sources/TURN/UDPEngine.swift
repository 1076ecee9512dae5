import Addresses
import CParleyLinux
import NIOConcurrencyHelpers
import NetworkAddress
import STUN

#if canImport(Glibc)
import Glibc
#endif

/// The sockets of one TURN worker, off SwiftNIO: its own thread with an epoll set holding the
/// worker's listening UDP and TCP sockets, its TCP clients and its relay sockets. Each ready UDP
/// socket is drained with one recvmmsg into preallocated buffers; datagrams to clients are sent
/// with one sendmmsg per batch, with the ChannelData header written into headroom in front of the
/// received payload. So the UDP relay path allocates nothing and copies nothing per packet. A TCP
/// client's frames are split in place in one read buffer, and what is relayed to it in a round
/// goes out in one write at the round's end. Other threads hand it work through `execute`.
final class UDPEngine: @unchecked Sendable {
    enum Role {
        case listener(server: TransportAddress)
        case relay(Allocation)
        case streamListener(server: TransportAddress)
        case stream(StreamConnection)
        case wakeup
    }

    static let batch = 32
    static let slotSize = 2048 + 4
    static let headroom = 4

    private let epoll: Int32
    private let wakeup: Int32
    private var roles: [Int32: Role] = [:]
    private let tasks = NIOLockedValueBox<[@Sendable () -> Void]>([])
    private let running = NIOLockedValueBox(true)
    private var thread: pthread_t?
    /// Receive slots: `headroom` bytes, then up to 2048 bytes of datagram.
    private let buffers: UnsafeMutableRawPointer
    private var receiveHeaders: [parley_mmsghdr]
    private var receiveVectors: [iovec]
    private var receiveAddresses: [RawSocketAddress]
    private var pendingSends = SendBatch(capacity: UDPEngine.batch)
    private var pendingSendSocket: Int32 = -1
    /// Called with the worker's time every second.
    var onTick: ((UInt64) -> Void)?
    /// Called after each round of ready sockets and tasks: what was gathered goes out.
    var onRoundEnd: (() -> Void)?
    /// TCP clients: accepted (a connection to register), one whole frame read, closed.
    var handleStreamAccepted: ((_ fd: Int32, _ client: TransportAddress, _ server: TransportAddress) -> StreamConnection?)?
    var handleStreamFrame: ((_ connection: StreamConnection, _ frame: UnsafeMutableRawBufferPointer) -> Void)?
    var handleStreamClosed: ((_ connection: StreamConnection, _ malformed: Bool) -> Void)?
    /// One read of a TCP client lands here after the bytes of its unfinished frame.
    private let streamBuffer: UnsafeMutableRawPointer
    static let streamBufferSize = 128 * 1024
    /// Connections with bytes queued this round.
    private var streamsToFlush: [StreamConnection] = []
    var handleDatagram: ((_ fd: Int32, _ role: Role, _ payload: UnsafeMutableRawBufferPointer, _ from: RawSocketAddress) -> Void)?
    let now: @Sendable () -> UInt64
    private var nextTick: UInt64 = 0
    /// TCP listeners not watched until the next tick: accepting failed for want of descriptors.
    private var pausedListeners: [Int32] = []
    /// Called when accepting fails for want of descriptors or memory.
    var onAcceptExhausted: (() -> Void)?

    init(now: @escaping @Sendable () -> UInt64) throws {
        self.now = now
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw SocketError(operation: "epoll_create1", code: errno) }
        wakeup = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
        guard wakeup >= 0 else { throw SocketError(operation: "eventfd", code: errno) }
        buffers = UnsafeMutableRawPointer.allocate(byteCount: Self.batch * Self.slotSize, alignment: 16)
        streamBuffer = UnsafeMutableRawPointer.allocate(byteCount: Self.streamBufferSize, alignment: 16)
        receiveHeaders = Array(repeating: parley_mmsghdr(), count: Self.batch)
        receiveVectors = Array(repeating: iovec(), count: Self.batch)
        receiveAddresses = Array(repeating: RawSocketAddress(), count: Self.batch)
        roles[wakeup] = .wakeup
        watch(wakeup)
    }

    deinit {
        buffers.deallocate()
        streamBuffer.deallocate()
        close(epoll)
        close(wakeup)
    }

    // MARK: Threads

    func start(name: String) {
        let box = Unmanaged.passRetained(self)
        var handle = pthread_t()
        pthread_create(&handle, nil, { argument in
            let engine = Unmanaged<UDPEngine>.fromOpaque(argument!).takeRetainedValue()
            engine.run()
            return nil
        }, box.toOpaque())
        thread = handle
        _ = name
    }

    /// Stops the thread after closing every socket it holds; waits for it.
    func stop() {
        running.withLockedValue { $0 = false }
        signalWakeup()
        if let thread { pthread_join(thread, nil) }
        thread = nil
    }

    /// Runs `task` on the engine's thread. Only the first task of a batch wakes the engine: it
    /// clears the wakeup before taking the tasks, so later ones are taken with it (a TCP client's
    /// frames would otherwise cost an eventfd write each).
    func execute(_ task: @escaping @Sendable () -> Void) {
        let wasEmpty = tasks.withLockedValue { tasks in
            tasks.append(task)
            return tasks.count == 1
        }
        if wasEmpty { signalWakeup() }
    }

    func submit<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            execute { continuation.resume(returning: body()) }
        }
    }

    private func signalWakeup() {
        var one: UInt64 = 1
        _ = write(wakeup, &one, 8)
    }

    // MARK: Sockets

    func register(_ fd: Int32, role: Role) {
        roles[fd] = role
        watch(fd)
    }

    func unregister(_ fd: Int32) {
        guard roles.removeValue(forKey: fd) != nil else { return }
        epoll_ctl(epoll, EPOLL_CTL_DEL, fd, nil)
        close(fd)
    }

    private func watch(_ fd: Int32, writable: Bool = false, operation: Int32 = EPOLL_CTL_ADD) {
        var event = epoll_event()
        event.events = UInt32(EPOLLIN.rawValue) | (writable ? UInt32(EPOLLOUT.rawValue) : 0)
        parley_epoll_event_set_fd(&event, fd)
        epoll_ctl(epoll, operation, fd, &event)
    }

    // MARK: TCP clients

    /// Queues bytes for a TCP client, written at the end of the round; false when dropped (the
    /// client is too far behind or gone).
    func appendToStream(_ connection: StreamConnection, count: Int, _ write: (inout [UInt8]) -> Void) -> Bool {
        let wasEmpty = !connection.hasOutbound
        guard connection.append(count: count, write) else { return false }
        if wasEmpty, !connection.waitsForWritable { streamsToFlush.append(connection) }
        return true
    }

    private func flushStreams() {
        guard !streamsToFlush.isEmpty else { return }
        for connection in streamsToFlush where !connection.isClosed { flush(connection) }
        streamsToFlush.removeAll(keepingCapacity: true)
    }

    private func flush(_ connection: StreamConnection) {
        guard connection.flush() else { return closeStream(connection, malformed: false) }
        // What the socket did not take waits for it to drain; then the next round writes it.
        let waits = connection.hasOutbound
        if waits != connection.waitsForWritable {
            connection.waitsForWritable = waits
            watch(connection.fd, writable: waits, operation: EPOLL_CTL_MOD)
        }
    }

    private func accept(on listener: Int32, server: TransportAddress) {
        // A bounded number per round, so a flood of connections does not starve the relays.
        for _ in 0..<64 {
            let fd: Int32, client: TransportAddress
            switch acceptTCP(listener) {
            case .accepted(let accepted, let peer): (fd, client) = (accepted, peer)
            case .none: return
            case .exhausted:
                // The connection stays queued and the listener stays readable: stop watching it
                // until the next tick instead of spinning on the same failure.
                onAcceptExhausted?()
                epoll_ctl(epoll, EPOLL_CTL_DEL, listener, nil)
                pausedListeners.append(listener)
                return
            }
            guard let connection = handleStreamAccepted?(fd, client, server) else {
                close(fd)
                continue
            }
            roles[fd] = .stream(connection)
            watch(fd)
        }
    }

    /// One read: the unfinished frame's bytes go first in the read buffer, then what arrived;
    /// every whole frame is handled in place, the rest kept for the next read.
    private func read(_ connection: StreamConnection) {
        let kept = connection.partial.count
        if kept > 0 { connection.partial.withUnsafeBytes { streamBuffer.copyMemory(from: $0.baseAddress!, byteCount: kept) } }
        let received = recv(connection.fd, streamBuffer + kept, Self.streamBufferSize - kept, Int32(MSG_DONTWAIT))
        if received == 0 || (received < 0 && errno != EAGAIN && errno != EWOULDBLOCK) { return closeStream(connection, malformed: false) }
        guard received > 0 else { return }
        let total = kept + received
        var offset = 0
        while offset < total, !connection.isClosed {
            switch STUNFraming.nextFrame(UnsafeRawBufferPointer(start: streamBuffer + offset, count: total - offset)) {
            case .complete(let length) where length <= total - offset:
                handleStreamFrame?(connection, UnsafeMutableRawBufferPointer(start: streamBuffer + offset, count: length))
                offset += length
            case .complete(let length) where length > Self.streamBufferSize:
                return closeStream(connection, malformed: true)
            case .complete, .needMore:
                // Into the connection's own storage: no new array per read.
                connection.partial.removeAll(keepingCapacity: true)
                connection.partial.append(contentsOf: UnsafeRawBufferPointer(start: streamBuffer + offset, count: total - offset))
                return
            case .invalid:
                return closeStream(connection, malformed: true)
            }
        }
        connection.partial.removeAll(keepingCapacity: true)
    }

    func closeStream(_ connection: StreamConnection, malformed: Bool) {
        guard !connection.isClosed else { return }
        connection.isClosed = true
        roles.removeValue(forKey: connection.fd)
        epoll_ctl(epoll, EPOLL_CTL_DEL, connection.fd, nil)
        close(connection.fd)
        handleStreamClosed?(connection, malformed)
    }

    /// Sends one datagram now (control messages, relayed payloads to peers).
    func send(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, to address: RawSocketAddress) -> Bool {
        var address = address
        let sent = withUnsafePointer(to: &address.storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, bytes.baseAddress, bytes.count, Int32(MSG_DONTWAIT), $0, address.length)
            }
        }
        return sent >= 0
    }

    /// Queues a datagram whose bytes stay valid until the current batch is flushed (they point
    /// into the receive slots); all queued datagrams go to `fd` in one sendmmsg.
    func enqueue(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, to address: RawSocketAddress) {
        if pendingSends.isFull || (pendingSends.count > 0 && pendingSendSocket != fd) { flushSends() }
        pendingSendSocket = fd
        pendingSends.append(bytes, to: address)
    }

    func flushSends() {
        pendingSends.flush(through: pendingSendSocket)
    }

    // MARK: The loop

    private func run() {
        var events = [epoll_event](repeating: epoll_event(), count: 64)
        nextTick = now() + 1_000_000_000
        while running.withLockedValue({ $0 }) {
            let current = now()
            let timeout = current >= nextTick ? 0 : Int32(min(1000, (nextTick - current) / 1_000_000 + 1))
            let ready = events.withUnsafeMutableBufferPointer { epoll_wait(epoll, $0.baseAddress, 64, timeout) }
            if ready > 0 {
                for index in 0..<Int(ready) {
                    let fd = parley_epoll_event_fd(&events[index])
                    guard let role = roles[fd] else { continue }
                    switch role {
                    case .wakeup:
                        var value: UInt64 = 0
                        _ = Glibc.read(wakeup, &value, 8)
                        runTasks()
                    case .streamListener(let server):
                        accept(on: fd, server: server)
                    case .stream(let connection):
                        let ready = events[index].events
                        if ready & UInt32(EPOLLOUT.rawValue) != 0 { flush(connection) }
                        if ready & (UInt32(EPOLLIN.rawValue) | UInt32(EPOLLHUP.rawValue) | UInt32(EPOLLERR.rawValue)) != 0, !connection.isClosed {
                            read(connection)
                        }
                    case .listener, .relay:
                        drain(fd, role: role)
                    }
                }
                flushStreams()
                onRoundEnd?()
            }
            let after = now()
            if after >= nextTick {
                nextTick = after + 1_000_000_000
                for listener in pausedListeners {
                    if case .streamListener = roles[listener] { watch(listener) }
                }
                pausedListeners.removeAll()
                onTick?(after)
            }
        }
        runTasks()
        for case .stream(let connection) in Array(roles.values) { closeStream(connection, malformed: false) }
        for fd in Array(roles.keys) where fd != wakeup { unregister(fd) }
    }

    private func runTasks() {
        let pending = tasks.withLockedValue { tasks in
            defer { tasks.removeAll() }
            return tasks
        }
        for task in pending { task() }
    }

    /// One recvmmsg: level-triggered epoll brings us back if more is waiting.
    private func drain(_ fd: Int32, role: Role) {
        let received: Int32 = receiveAddresses.withUnsafeMutableBufferPointer { addresses in
            receiveVectors.withUnsafeMutableBufferPointer { vectors in
                receiveHeaders.withUnsafeMutableBufferPointer { headers in
                    for index in 0..<Self.batch {
                        vectors[index] = iovec(iov_base: buffers + index * Self.slotSize + Self.headroom, iov_len: Self.slotSize - Self.headroom)
                        headers[index].msg_hdr = msghdr(
                            msg_name: UnsafeMutableRawPointer(addresses.baseAddress! + index),
                            msg_namelen: socklen_t(MemoryLayout<sockaddr_in6>.size), msg_iov: vectors.baseAddress! + index,
                            msg_iovlen: 1, msg_control: nil, msg_controllen: 0, msg_flags: 0)
                        headers[index].msg_len = 0
                    }
                    return parley_recvmmsg(fd, headers.baseAddress, UInt32(Self.batch), Int32(MSG_DONTWAIT))
                }
            }
        }
        guard received > 0 else { return }
        for index in 0..<Int(received) {
            let length = Int(receiveHeaders[index].msg_len)
            // A datagram longer than the slot was truncated: not something TURN relays.
            guard receiveHeaders[index].msg_hdr.msg_flags & Int32(MSG_TRUNC) == 0 else { continue }
            receiveAddresses[index].length = receiveHeaders[index].msg_hdr.msg_namelen
            let payload = UnsafeMutableRawBufferPointer(start: buffers + index * Self.slotSize + Self.headroom, count: length)
            handleDatagram?(fd, role, payload, receiveAddresses[index])
        }
        flushSends()
    }
}
