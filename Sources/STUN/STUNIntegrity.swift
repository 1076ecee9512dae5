import Crypto

/// MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT (RFC 8489 §14.5–14.7), and the
/// long-term key. Each covers the message up to its own attribute with the header's length field
/// rewritten to end just after it.
public enum STUNIntegrity {
    public static let sha1Length = 20
    static let fingerprintXOR: UInt32 = 0x5354_554E

    /// The long-term credential key: MD5(username ":" realm ":" password) (RFC 8489 §9.2.2).
    /// The password is used as given; SASLprep of non-ASCII passwords is the caller's concern.
    public static func longTermKey(username: String, realm: String, password: String) -> [UInt8] {
        Array(Insecure.MD5.hash(data: Array("\(username):\(realm):\(password)".utf8)))
    }

    /// The short-term credential key is the password itself.
    public static func shortTermKey(password: String) -> [UInt8] { Array(password.utf8) }

    static func hmacSHA1(key: [UInt8], message: [UInt8], upTo offset: Int) -> [UInt8] {
        var hmac = HMAC<Insecure.SHA1>(key: SymmetricKey(data: key))
        feed(&hmac, message: message, upTo: offset, attributeLength: sha1Length)
        return Array(hmac.finalize())
    }

    static func hmacSHA256(key: [UInt8], message: [UInt8], upTo offset: Int) -> [UInt8] {
        var hmac = HMAC<SHA256>(key: SymmetricKey(data: key))
        feed(&hmac, message: message, upTo: offset, attributeLength: 32)
        return Array(hmac.finalize())
    }

    private static func feed<H: HashFunction>(_ hmac: inout HMAC<H>, message: [UInt8], upTo offset: Int, attributeLength: Int) {
        var header = Array(message[0..<STUNMessage.headerLength])
        header.writeUInt16(UInt16(offset - STUNMessage.headerLength + 4 + attributeLength), at: 2)
        hmac.update(data: header)
        hmac.update(data: message[STUNMessage.headerLength..<offset])
    }

    static func fingerprint(message: [UInt8], upTo offset: Int) -> UInt32 {
        var header = Array(message[0..<STUNMessage.headerLength])
        header.writeUInt16(UInt16(offset - STUNMessage.headerLength + 8), at: 2)
        var crc = CRC32()
        crc.update(header)
        crc.update(message[STUNMessage.headerLength..<offset])
        return crc.value ^ fingerprintXOR
    }

    static func constantTimeEquals(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }
}

/// CRC-32 (ISO 3309 / IEEE 802.3, reflected, polynomial 0xEDB88320), as FINGERPRINT uses.
public struct CRC32: Sendable {
    private static let table: [UInt32] = (0..<256).map { index -> UInt32 in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 == 1 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1 }
        return value
    }

    private var state: UInt32 = 0xFFFF_FFFF

    public init() {}

    public mutating func update(_ bytes: some Sequence<UInt8>) {
        let table = Self.table
        for byte in bytes { state = table[Int((state ^ UInt32(byte)) & 0xFF)] ^ (state >> 8) }
    }

    public var value: UInt32 { state ^ 0xFFFF_FFFF }

    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc = CRC32()
        crc.update(bytes)
        return crc.value
    }
}
