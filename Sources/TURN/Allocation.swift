import Addresses
import NIOConcurrencyHelpers
import NIOCore
import NetworkAddress
import STUN

#if canImport(Glibc)
import Glibc
#endif

/// The 5-tuple that names an allocation (RFC 8656 §2.2): client and server address and the
/// transport between them. A TCP connection is its own 5-tuple.
struct ClientKey: Hashable, Sendable {
    enum Transport: UInt8, Sendable { case udp, tcp }
    let transport: Transport
    let client: TransportAddress
    let server: TransportAddress
}

/// How to reach a client: the listening UDP socket and its address, its TCP connection (served
/// by the worker's engine), or its TLS channel (SwiftNIO with NIOSSL).
enum ClientLink {
    case udp(Int32, RawSocketAddress)
    case stream(StreamConnection)
    case channel(any Channel)
}

/// One client's relay: its socket on the relayed address, permissions, channels, lifetime and
/// bandwidth allowance. Lives on its worker's loop.
final class Allocation {
    struct Permission {
        var expiresAt: UInt64
        var decision: PeerPolicy.Decision
    }

    struct ChannelBinding {
        let peer: TransportAddress
        let socketAddress: RawSocketAddress
        var expiresAt: UInt64
    }

    let key: ClientKey
    let link: ClientLink
    let username: String
    let identity: String
    let integrityKey: [UInt8]
    let relayed: TransportAddress
    /// The relay's UDP socket, in the worker's engine.
    let relaySocket: Int32
    var expiresAt: UInt64
    var permissions: [IPAddress: Permission] = [:]
    var channels: [UInt16: ChannelBinding] = [:]
    var channelByPeer: [TransportAddress: UInt16] = [:]
    var allowance: Allowance?
    /// The Allocate that made it and our answer, to answer a retransmission alike.
    let allocateTransaction: STUNTransactionID
    var allocateResponse: [UInt8] = []

    init(
        key: ClientKey, link: ClientLink, username: String, identity: String, integrityKey: [UInt8], relayed: TransportAddress,
        relaySocket: Int32, expiresAt: UInt64, allocateTransaction: STUNTransactionID, allowance: Allowance?
    ) {
        self.key = key
        self.link = link
        self.username = username
        self.identity = identity
        self.integrityKey = integrityKey
        self.relayed = relayed
        self.relaySocket = relaySocket
        self.expiresAt = expiresAt
        self.allocateTransaction = allocateTransaction
        self.allowance = allowance
    }

    /// Whether `peer` has a live permission that the policy lets through.
    func permits(_ peer: TransportAddress, policy: PeerPolicy, now: UInt64) -> Bool {
        guard let permission = permissions[peer.ip], permission.expiresAt > now else { return false }
        return permission.decision == .allowed || policy.permits(peer, under: permission.decision)
    }

    /// Drops expired permissions and channel bindings (RFC 8656 §9, §12).
    func expire(now: UInt64) {
        permissions = permissions.filter { $0.value.expiresAt > now }
        for (number, binding) in channels where binding.expiresAt <= now {
            channels[number] = nil
            channelByPeer[binding.peer] = nil
        }
    }
}

/// A budget refilled at a fixed rate up to a burst: bytes for an allocation's bandwidth cap,
/// requests for the unauthenticated rate limit. A non-positive rate means no limit.
struct Allowance {
    let perNanosecond: Double
    let burst: Double
    var available: Double
    var updatedAt: UInt64

    init(perSecond: Double, burst: Double, now: UInt64) {
        perNanosecond = perSecond / 1e9
        self.burst = max(1, burst)
        available = self.burst
        updatedAt = now
    }

    /// An allocation's bandwidth in bytes: a quarter second of burst, at least 64 KiB.
    init(bitsPerSecond: Int, now: UInt64) {
        let bytesPerSecond = Double(bitsPerSecond) / 8
        self.init(perSecond: bytesPerSecond, burst: max(64 * 1024, bytesPerSecond / 4), now: now)
    }

    /// Refilled to its burst by `now`: the same as a fresh one, so it need not be kept.
    func isFull(now: UInt64) -> Bool {
        perNanosecond <= 0 || available + Double(now &- updatedAt) * perNanosecond >= burst
    }

    mutating func take(_ amount: Int = 1, now: UInt64) -> Bool {
        guard perNanosecond > 0 else { return true }
        if now > updatedAt {
            available = min(burst, available + Double(now - updatedAt) * perNanosecond)
            updatedAt = now
        }
        guard available >= Double(amount) else { return false }
        available -= Double(amount)
        return true
    }
}

/// Counts across the workers, capped in total and per key, touched only when something is made or
/// removed (never per packet): allocations per user (`AllocationQuota`) and TCP and TLS clients per
/// source address (`StreamAdmission`; the kernel spreads one source's connections over workers).
final class CappedCounter<Key: Hashable & Sendable>: Sendable {
    private let counts = NIOLockedValueBox((total: 0, perKey: [Key: Int]()))
    let maxTotal: Int
    /// 0 means no cap per key.
    let maxPerKey: Int

    init(maxTotal: Int, maxPerKey: Int) {
        self.maxTotal = maxTotal
        self.maxPerKey = maxPerKey
    }

    func acquire(_ key: Key) -> Bool {
        counts.withLockedValue { counts in
            let mine = counts.perKey[key, default: 0]
            guard counts.total < maxTotal, maxPerKey <= 0 || mine < maxPerKey else { return false }
            counts.total += 1
            counts.perKey[key] = mine + 1
            return true
        }
    }

    func release(_ key: Key) {
        counts.withLockedValue { counts in
            counts.total = max(0, counts.total - 1)
            let left = counts.perKey[key, default: 1] - 1
            counts.perKey[key] = left > 0 ? left : nil
        }
    }
}

typealias AllocationQuota = CappedCounter<String>
typealias StreamAdmission = CappedCounter<IPAddress>

/// Ports held for a later Allocate with RESERVATION-TOKEN (EVEN-PORT with the R bit, RFC 8656
/// §7.2): the odd port after an even relay, for RTCP. Shared because the second Allocate may
/// come from another source port and so land on another worker.
final class PortReservations: Sendable {
    struct Reservation {
        let address: TransportAddress
        /// The bound socket holding the port; the worker that redeems the token adopts it.
        let socket: Int32
        let expiresAt: UInt64
    }

    private let reservations = NIOLockedValueBox([UInt64: Reservation]())
    static let lifetimeNanoseconds: UInt64 = 30_000_000_000

    func add(token: UInt64, _ reservation: Reservation) {
        reservations.withLockedValue { $0[token] = reservation }
    }

    func take(token: UInt64) -> Reservation? {
        reservations.withLockedValue { $0.removeValue(forKey: token) }
    }

    func expire(now: UInt64) {
        let expired = reservations.withLockedValue { reservations -> [Reservation] in
            let gone = reservations.values.filter { $0.expiresAt <= now }
            reservations = reservations.filter { $0.value.expiresAt > now }
            return gone
        }
        for reservation in expired { close(reservation.socket) }
    }

    func closeAll() {
        let all = reservations.withLockedValue { reservations in
            defer { reservations.removeAll() }
            return Array(reservations.values)
        }
        for reservation in all { close(reservation.socket) }
    }
}
