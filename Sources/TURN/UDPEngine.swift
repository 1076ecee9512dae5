import CParleyLinux
import NIOConcurrencyHelpers
import STUN

#if canImport(Glibc)
import Glibc
#endif

/// A socket address as the kernel takes it: big enough for IPv6, built once per peer.
struct RawSocketAddress: @unchecked Sendable {
    var storage = sockaddr_in6()
    var length: socklen_t = 0

    init() {}

    init(_ address: TransportAddress) {
        switch address.ip {
        case .v4(let value):
            withUnsafeMutableBytes(of: &storage) { raw in
                let sin = raw.baseAddress!.assumingMemoryBound(to: sockaddr_in.self)
                sin.pointee.sin_family = sa_family_t(AF_INET)
                sin.pointee.sin_port = address.port.bigEndian
                sin.pointee.sin_addr.s_addr = value.bigEndian
            }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
        case .v6:
            storage.sin6_family = sa_family_t(AF_INET6)
            storage.sin6_port = address.port.bigEndian
            let bytes = address.ip.bytes
            withUnsafeMutableBytes(of: &storage.sin6_addr) { raw in
                for index in 0..<16 { raw[index] = bytes[index] }
            }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        }
    }

    var transportAddress: TransportAddress? {
        withUnsafeBytes(of: storage) { raw -> TransportAddress? in
            let family = raw.load(as: sa_family_t.self)
            if family == sa_family_t(AF_INET) {
                let sin = raw.load(as: sockaddr_in.self)
                return TransportAddress(ip: .v4(UInt32(bigEndian: sin.sin_addr.s_addr)), port: UInt16(bigEndian: sin.sin_port))
            }
            if family == sa_family_t(AF_INET6) {
                let sin6 = raw.load(as: sockaddr_in6.self)
                let bytes = withUnsafeBytes(of: sin6.sin6_addr) { Array($0) }
                return TransportAddress(ip: IPAddress(bytes: bytes), port: UInt16(bigEndian: sin6.sin6_port))
            }
            return nil
        }
    }
}

struct SocketError: Error, CustomStringConvertible {
    let operation: String
    let code: Int32
    var description: String { "\(operation): \(String(cString: strerror(code)))" }
}

/// A non-blocking UDP socket bound to `address`.
func bindUDPSocket(_ address: TransportAddress, reusePort: Bool = false, bufferBytes: Int32 = 1 << 20) throws -> Int32 {
    let family = address.ip.isIPv4 ? AF_INET : AF_INET6
    let fd = socket(family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw SocketError(operation: "socket", code: errno) }
    var one: Int32 = 1
    var size = bufferBytes
    if reusePort {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    var raw = RawSocketAddress(address)
    let result = withUnsafePointer(to: &raw.storage) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, raw.length) }
    }
    guard result == 0 else {
        let code = errno
        close(fd)
        throw SocketError(operation: "bind \(address)", code: code)
    }
    return fd
}

func localAddress(of fd: Int32) -> TransportAddress? {
    var raw = RawSocketAddress()
    raw.length = socklen_t(MemoryLayout<sockaddr_in6>.size)
    let result = withUnsafeMutablePointer(to: &raw.storage) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &raw.length) }
    }
    return result == 0 ? raw.transportAddress : nil
}

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
    private var sendHeaders: [parley_mmsghdr]
    private var sendVectors: [iovec]
    private var sendAddresses: [RawSocketAddress]
    private var pendingSends = 0
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
        sendHeaders = Array(repeating: parley_mmsghdr(), count: Self.batch)
        sendVectors = Array(repeating: iovec(), count: Self.batch)
        sendAddresses = Array(repeating: RawSocketAddress(), count: Self.batch)
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
        if pendingSends == Self.batch || (pendingSends > 0 && pendingSendSocket != fd) { flushSends() }
        pendingSendSocket = fd
        sendAddresses[pendingSends] = address
        sendVectors[pendingSends] = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
        pendingSends += 1
    }

    func flushSends() {
        guard pendingSends > 0 else { return }
        let count = pendingSends
        pendingSends = 0
        sendAddresses.withUnsafeMutableBufferPointer { addresses in
            sendVectors.withUnsafeMutableBufferPointer { vectors in
                sendHeaders.withUnsafeMutableBufferPointer { headers in
                    for index in 0..<count {
                        headers[index].msg_hdr = msghdr(
                            msg_name: UnsafeMutableRawPointer(addresses.baseAddress! + index), msg_namelen: addresses[index].length,
                            msg_iov: vectors.baseAddress! + index, msg_iovlen: 1, msg_control: nil, msg_controllen: 0, msg_flags: 0)
                    }
                    var offset = 0
                    while offset < count {
                        let sent = parley_sendmmsg(pendingSendSocket, headers.baseAddress! + offset, UInt32(count - offset), Int32(MSG_DONTWAIT))
                        if sent <= 0 { break }  // a full socket buffer drops the rest, as a router would
                        offset += Int(sent)
                    }
                }
            }
        }
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
