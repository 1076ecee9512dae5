import Addresses
import NIOCore
import STUN

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension TransportAddress {
    /// From a NIO socket address; nil for a Unix socket.
    public init?(_ address: SocketAddress) {
        switch address {
        case .v4(let v4):
            self.init(ip: .v4(UInt32(bigEndian: v4.address.sin_addr.s_addr)), port: UInt16(bigEndian: v4.address.sin_port))
        case .v6(let v6):
            self.init(ip: IPAddress(v6.address.sin6_addr), port: UInt16(bigEndian: v6.address.sin6_port))
        case .unixDomainSocket:
            return nil
        }
    }
}

extension TransportAddress {
    /// An IPv4 address as a dual-stack IPv6 socket writes to it (`::ffff:a.b.c.d`); others as they are.
    public var mappingIPv4: TransportAddress {
        guard case .v4(let value) = ip else { return self }
        return TransportAddress(ip: .v6(0, 0x0000_FFFF_0000_0000 | UInt64(value)), port: port)
    }

    /// What a dual-stack socket reports as `::ffff:a.b.c.d` is the IPv4 peer `a.b.c.d`.
    public var unmappingIPv4: TransportAddress {
        guard case .v6(0, let low) = ip, low >> 32 == 0xFFFF else { return self }
        return TransportAddress(ip: .v4(UInt32(truncatingIfNeeded: low)), port: port)
    }
}

extension IPAddress {
    /// From the kernel's form, as two big-endian words: no array per packet on the IPv6 paths.
    @inlinable
    public init(_ address: in6_addr) {
        self = withUnsafeBytes(of: address) { raw in
            .v6(UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
        }
    }
}

extension SocketAddress {
    /// Builds the sockaddr directly from the address words: no text round trip, so it is cheap
    /// enough for a relay to call per packet.
    public init(_ address: TransportAddress) {
        switch address.ip {
        case .v4(let value):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = address.port.bigEndian
            sin.sin_addr.s_addr = value.bigEndian
            self.init(sin, host: "")
        case .v6:
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = address.port.bigEndian
            let bytes = address.ip.bytes
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { raw in
                for index in 0..<16 { raw[index] = bytes[index] }
            }
            self.init(sin6, host: "")
        }
    }
}
