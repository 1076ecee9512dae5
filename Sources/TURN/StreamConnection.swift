import Addresses
import STUN

#if canImport(Glibc)
import Glibc
#endif

/// One TURN-over-TCP client, served by its worker's engine thread like the UDP sockets: its
/// frames are read, split and relayed where they arrive, and what is relayed to it is gathered
/// over an engine round and written once, so a TCP client costs no thread hop per packet.
final class StreamConnection {
    let fd: Int32
    let key: ClientKey
    /// Bytes of a frame not yet complete, kept between reads.
    var partial: [UInt8] = []
    /// Bytes waiting to be written (what the socket did not take, and this round's frames).
    private(set) var outbound: [UInt8] = []
    /// Whether the engine waits for the socket to take more (EPOLLOUT armed).
    var waitsForWritable = false
    var isClosed = false
    /// Since when the client has had no allocation (its accept, or its allocation's end).
    var idleSince: UInt64 = 0

    /// What a client that does not read may have waiting before frames to it are dropped.
    static let maxOutbound = 512 * 1024

    init(fd: Int32, key: ClientKey) {
        self.fd = fd
        self.key = key
        outbound.reserveCapacity(4096)
    }

    /// Queues bytes to write; false (dropped) when the client is too far behind.
    func append(count: Int, _ write: (inout [UInt8]) -> Void) -> Bool {
        guard !isClosed, outbound.count + count <= Self.maxOutbound else { return false }
        write(&outbound)
        return true
    }

    var hasOutbound: Bool { !outbound.isEmpty }

    /// Writes what is queued; returns false when the connection failed. What the socket did not
    /// take stays queued.
    func flush() -> Bool {
        guard !outbound.isEmpty else { return true }
        let written = outbound.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
        if written < 0 { return errno == EAGAIN || errno == EWOULDBLOCK }
        if written == outbound.count {
            outbound.removeAll(keepingCapacity: true)
        } else {
            outbound.removeFirst(written)
        }
        return true
    }
}
