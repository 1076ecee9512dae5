import Addresses
import CParleyLinux
import STUN

#if canImport(Glibc)
import Glibc
#endif

/// A socket address as the kernel takes it: big enough for IPv6, built once per peer.
public struct RawSocketAddress: @unchecked Sendable {
    public var storage = sockaddr_in6()
    public var length: socklen_t = 0

    public init() {}

    public init(_ address: TransportAddress) {
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

    public var transportAddress: TransportAddress? {
        withUnsafeBytes(of: storage) { raw -> TransportAddress? in
            let family = raw.load(as: sa_family_t.self)
            if family == sa_family_t(AF_INET) {
                let sin = raw.load(as: sockaddr_in.self)
                return TransportAddress(ip: .v4(UInt32(bigEndian: sin.sin_addr.s_addr)), port: UInt16(bigEndian: sin.sin_port))
            }
            if family == sa_family_t(AF_INET6) {
                let sin6 = raw.load(as: sockaddr_in6.self)
                return TransportAddress(ip: IPAddress(sin6.sin6_addr), port: UInt16(bigEndian: sin6.sin6_port))
            }
            return nil
        }
    }
}

public struct SocketError: Error, CustomStringConvertible {
    public let operation: String
    public let code: Int32

    public init(operation: String, code: Int32) {
        self.operation = operation
        self.code = code
    }

    public var description: String { "\(operation): \(String(cString: strerror(code)))" }
}

/// A non-blocking UDP socket bound to `address`, with `bufferBytes` of send and receive buffer.
///
/// With `reusePort` and port 0, the kernel may pick a port that another SO_REUSEPORT socket of
/// the same user holds, and the two would share its datagrams (two servers in one test process
/// did). So the port is chosen by a plain bind first, then bound again with the options.
public func bindUDPSocket(_ address: TransportAddress, reusePort: Bool = false, bufferBytes: Int32 = 1 << 20) throws -> Int32 {
    if reusePort, address.port == 0 {
        let probe = try bindUDPSocket(address, bufferBytes: 4096)
        let picked = localAddress(of: probe)?.port ?? 0
        close(probe)
        guard picked != 0 else { throw SocketError(operation: "getsockname", code: errno) }
        return try bindUDPSocket(TransportAddress(ip: address.ip, port: picked), reusePort: true, bufferBytes: bufferBytes)
    }
    let family = address.ip.isIPv4 ? AF_INET : AF_INET6
    let fd = socket(family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw SocketError(operation: "socket", code: errno) }
    var one: Int32 = 1
    var size = bufferBytes
    if reusePort {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
    }
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
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

public func localAddress(of fd: Int32) -> TransportAddress? {
    var raw = RawSocketAddress()
    raw.length = socklen_t(MemoryLayout<sockaddr_in6>.size)
    let result = withUnsafeMutablePointer(to: &raw.storage) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &raw.length) }
    }
    return result == 0 ? raw.transportAddress : nil
}

/// Datagrams queued for one sendmmsg: the TURN engine's relayed packets, a media worker's
/// forwarded copies. The bytes are not copied: they must stay valid until `flush`.
public struct SendBatch {
    public let capacity: Int
    public private(set) var count = 0
    private var headers: [parley_mmsghdr]
    private var vectors: [iovec]
    private var addresses: [RawSocketAddress]

    public init(capacity: Int) {
        self.capacity = capacity
        headers = Array(repeating: parley_mmsghdr(), count: capacity)
        vectors = Array(repeating: iovec(), count: capacity)
        addresses = Array(repeating: RawSocketAddress(), count: capacity)
    }

    public var isFull: Bool { count == capacity }

    /// Queues `bytes` for `address`; the caller flushes first when the batch is full.
    public mutating func append(_ bytes: UnsafeRawBufferPointer, to address: RawSocketAddress) {
        precondition(count < capacity, "flush a full SendBatch before appending")
        addresses[count] = address
        vectors[count] = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
        count += 1
    }

    /// Sends everything queued through `fd` and empties the batch. Returns how many datagrams the
    /// kernel refused (a full socket buffer drops the rest, as a router would).
    @discardableResult
    public mutating func flush(through fd: Int32) -> Int {
        guard count > 0 else { return 0 }
        let total = count
        count = 0
        return addresses.withUnsafeMutableBufferPointer { addresses in
            vectors.withUnsafeMutableBufferPointer { vectors in
                headers.withUnsafeMutableBufferPointer { headers in
                    for index in 0..<total {
                        headers[index].msg_hdr = msghdr(
                            msg_name: UnsafeMutableRawPointer(addresses.baseAddress! + index), msg_namelen: addresses[index].length,
                            msg_iov: vectors.baseAddress! + index, msg_iovlen: 1, msg_control: nil, msg_controllen: 0, msg_flags: 0)
                    }
                    var offset = 0
                    while offset < total {
                        let sent = parley_sendmmsg(fd, headers.baseAddress! + offset, UInt32(total - offset), Int32(MSG_DONTWAIT))
                        if sent <= 0 { break }
                        offset += Int(sent)
                    }
                    return total - offset
                }
            }
        }
    }
}

/// A non-blocking TCP listening socket on `address`. With `reusePort`, several (one per worker
/// thread) listen on the same port and the kernel spreads connections over them; `address`
/// must then name a port, as the caller shares one it already holds for UDP.
public func bindTCPListener(_ address: TransportAddress, reusePort: Bool = false, backlog: Int32 = 256) throws -> Int32 {
    let family = address.ip.isIPv4 ? AF_INET : AF_INET6
    let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw SocketError(operation: "socket", code: errno) }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    if reusePort { setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size)) }
    var raw = RawSocketAddress(address)
    let bound = withUnsafePointer(to: &raw.storage) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, raw.length) }
    }
    guard bound == 0, listen(fd, backlog) == 0 else {
        let code = errno
        close(fd)
        throw SocketError(operation: "listen \(address)", code: code)
    }
    return fd
}

public enum AcceptOutcome {
    /// A new socket (non-blocking, TCP_NODELAY) and its peer.
    case accepted(fd: Int32, peer: TransportAddress)
    /// Nothing waiting, or a connection that went before it was taken.
    case none
    /// Out of descriptors or memory: the pending connection stays queued, so accepting again at
    /// once would spin.
    case exhausted(errno: Int32)
}

/// Accepts one pending connection on a non-blocking listener.
public func acceptTCP(_ listener: Int32) -> AcceptOutcome {
    var raw = RawSocketAddress()
    raw.length = socklen_t(MemoryLayout<sockaddr_in6>.size)
    let fd = withUnsafeMutablePointer(to: &raw.storage) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            parley_accept_nonblocking(listener, $0, &raw.length)
        }
    }
    guard fd >= 0 else {
        let code = errno
        return [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(code) ? .exhausted(errno: code) : .none
    }
    guard let peer = raw.transportAddress else {
        close(fd)
        return .none
    }
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    return .accepted(fd: fd, peer: peer)
}
