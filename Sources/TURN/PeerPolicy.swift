import Addresses
import STUN

/// An address prefix such as `10.0.0.0/8` or `fe80::/10`; a bare address is a /32 or /128.
public struct IPRange: Hashable, Sendable, CustomStringConvertible {
    public let base: IPAddress
    public let prefixLength: Int

    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", maxSplits: 1)
        guard let first = parts.first, let base = IPAddress(first) else { return nil }
        let maximum = base.isIPv4 ? 32 : 128
        if parts.count == 2 {
            guard let length = Int(parts[1]), (0...maximum).contains(length) else { return nil }
            self.init(base: base, prefixLength: length)
        } else {
            self.init(base: base, prefixLength: maximum)
        }
    }

    public init(base: IPAddress, prefixLength: Int) {
        self.base = base
        self.prefixLength = prefixLength
    }

    public func contains(_ address: IPAddress) -> Bool {
        switch (base, address) {
        case (.v4(let network), .v4(let value)):
            guard prefixLength > 0 else { return true }
            let mask = UInt32.max << UInt32(32 - prefixLength)
            return network & mask == value & mask
        case (.v6(let networkHigh, let networkLow), .v6(let high, let low)):
            if prefixLength <= 64 {
                guard prefixLength > 0 else { return true }
                let mask = UInt64.max << UInt64(64 - prefixLength)
                return networkHigh & mask == high & mask
            }
            let mask = prefixLength == 128 ? UInt64.max : UInt64.max << UInt64(128 - prefixLength)
            return networkHigh == high && networkLow & mask == low & mask
        default:
            return false
        }
    }

    public var description: String { "\(base)/\(prefixLength)" }
}

/// Which peers a relay may talk to. TURN turns the server into a proxy inside its own network, so
/// every internal, loopback, link-local, multicast and otherwise special address is denied unless
/// the operator opens it, including the IPv6 spellings of IPv4 addresses that reach the same
/// host (the CVE-2020-26262 family: `0.0.0.0`, `[::]`, `[::ffff:127.0.0.1]` and friends).
public struct PeerPolicy: Sendable {
    public enum Decision: Equatable, Sendable {
        case allowed
        /// Denied, except for Parley's own media ports on this address.
        case mediaPortsOnly
        case denied
    }

    public static let deniedIPv4: [IPRange] = [
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
        // TEST-NET-1, -2, -3 (documentation, never routed) and broadcast.
        "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "255.255.255.255/32",
    ].map { IPRange($0)! }
    public static let deniedIPv6: [IPRange] = [
        "::/128", "::1/128", "fe80::/10", "fec0::/10", "fc00::/7", "ff00::/8", "100::/64",
        // Teredo tunnels, the local-use NAT64 prefix (RFC 8215: the operator's own translator),
        // and documentation.
        "2001::/32", "64:ff9b:1::/48", "2001:db8::/32",
    ].map { IPRange($0)! }

    /// Ranges opened by `turn.allowedPeers`; they win over the deny lists.
    public var allowed: [IPRange]
    /// Ranges closed on top of the built-in deny lists (`turn.deniedPeers`).
    public var extraDenied: [IPRange]
    /// Parley's own media sockets: always reachable, so relay-only clients reach the SFU.
    public var mediaAddresses: Set<TransportAddress>

    public init(allowed: [IPRange] = [], extraDenied: [IPRange] = [], mediaAddresses: Set<TransportAddress> = []) {
        self.allowed = allowed
        self.extraDenied = extraDenied
        self.mediaAddresses = mediaAddresses
    }

    /// The IPv4 address an IPv6 address stands for, when it embeds one that a stack may route
    /// to: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, IPv4-translated
    /// `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:aabb:ccdd::` and Teredo
    /// `2001:0:server:flags:port:client` (the client's address inverted).
    public static func embeddedIPv4(_ address: IPAddress) -> IPAddress? {
        guard case .v6(let high, let low) = address else { return nil }
        let tail = IPAddress.v4(UInt32(truncatingIfNeeded: low))
        if high == 0 {
            switch low >> 32 {
            // :: and ::1 are IPv6's own unspecified and loopback addresses (denied as such, and
            // open to an operator who allows them), not IPv4-compatible forms.
            case 0 where low > 1, 0xFFFF: return tail  // compatible and mapped
            default: break
            }
            if low >> 32 == 0xFFFF_0000 { return tail }  // translated
        }
        if high == 0x0064_FF9B_0000_0000, low >> 32 == 0 { return tail }
        if high >> 48 == 0x2002 { return .v4(UInt32(truncatingIfNeeded: high >> 16)) }
        if high >> 32 == 0x2001_0000 { return .v4(~UInt32(truncatingIfNeeded: low)) }
        return nil
    }

    public func decision(for address: IPAddress) -> Decision {
        let forms = [address] + (Self.embeddedIPv4(address).map { [$0] } ?? [])
        let isDenied = forms.contains { form in
            !allowed.contains { $0.contains(form) }
                && (Self.deniedIPv4.contains { $0.contains(form) } || Self.deniedIPv6.contains { $0.contains(form) }
                    || extraDenied.contains { $0.contains(form) })
        }
        guard isDenied else { return .allowed }
        return mediaAddresses.contains { $0.ip == address } ? .mediaPortsOnly : .denied
    }

    /// Whether a datagram may go to (or come from) `peer` under `decision` for its address.
    public func permits(_ peer: TransportAddress, under decision: Decision) -> Bool {
        switch decision {
        case .allowed: true
        case .mediaPortsOnly: mediaAddresses.contains(peer)
        case .denied: false
        }
    }
}
