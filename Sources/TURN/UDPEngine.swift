import Addresses
import CParleyLinux
import NIOConcurrencyHelpers
import NetworkAddress
import STUN

#if canImport(Glibc)
import Glibc
#endif

/// The UDP side of one TURN worker, off SwiftNIO: its own thread with an epoll set holding the
/// worker's listening socket and relay sockets. Each ready socket is drained with one recvmmsg
/// into preallocated buffers; datagrams to clients are sent with one sendmmsg per batch, with the
/// ChannelData header written into headroom in front of the received payload. So the relay path
/// allocates nothing and copies nothing per packet. Other threads hand it work through `execute`.
final class UDPEngine: @unchecked Sendable {
    enum Role {
        case listener(server: TransportAddress)
        case relay(Allocation)
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
    var handleDatagram: ((_ fd: Int32, _ role: Role, _ payload: UnsafeMutableRawBufferPointer, _ from: RawSocketAddress) -> Void)?
    let now: @Sendable () -> UInt64
    private var nextTick: UInt64 = 0

    init(now: @escaping @Sendable () -> UInt64) throws {
        self.now = now
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw SocketError(operation: "epoll_create1", code: errno) }
        wakeup = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
        guard wakeup >= 0 else { throw SocketError(operation: "eventfd", code: errno) }
        buffers = UnsafeMutableRawPointer.allocate(byteCount: Self.batch * Self.slotSize, alignment: 16)
        receiveHeaders = Array(repeating: parley_mmsghdr(), count: Self.batch)
        receiveVectors = Array(repeating: iovec(), count: Self.batch)
        receiveAddresses = Array(repeating: RawSocketAddress(), count: Self.batch)
        roles[wakeup] = .wakeup
        watch(wakeup)
    }

    deinit {
        buffers.deallocate()
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

    /// Runs `task` on the engine's thread.
    func execute(_ task: @escaping @Sendable () -> Void) {
        tasks.withLockedValue { $0.append(task) }
        signalWakeup()
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

    private func watch(_ fd: Int32) {
        var event = epoll_event()
        event.events = UInt32(EPOLLIN.rawValue)
        parley_epoll_event_set_fd(&event, fd)
        epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event)
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
                    if case .wakeup = role {
                        var value: UInt64 = 0
                        _ = read(wakeup, &value, 8)
                        runTasks()
                    } else {
                        drain(fd, role: role)
                    }
                }
            }
            let after = now()
            if after >= nextTick {
                nextTick = after + 1_000_000_000
                onTick?(after)
            }
        }
        runTasks()
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
