import Addresses
/// Why bytes are not a STUN message. Each case is a counted drop on the media port.
public enum STUNParseError: Error, Equatable, Sendable, CustomStringConvertible {
    case tooShort(Int)
    case notSTUN
    case badMagicCookie
    case lengthMismatch(declared: Int, actual: Int)
    case lengthNotMultipleOfFour
    case attributeOverrun(STUNAttributeType)
    case tooManyAttributes
    case fingerprintNotLast

    public var description: String {
        switch self {
        case .tooShort(let count): "\(count) bytes is shorter than a STUN header"
        case .notSTUN: "the first two bits are not zero"
        case .badMagicCookie: "no magic cookie"
        case .lengthMismatch(let declared, let actual): "length field says \(declared) bytes of attributes, \(actual) present"
        case .lengthNotMultipleOfFour: "length is not a multiple of 4"
        case .attributeOverrun(let type): "attribute \(type) runs past the end"
        case .tooManyAttributes: "more attributes than a STUN message may reasonably carry"
        case .fingerprintNotLast: "FINGERPRINT is not the last attribute"
        }
    }
}

/// One attribute: its type and where its value sits in the message.
public struct STUNAttribute: Sendable, Equatable {
    public let type: STUNAttributeType
    /// Offset of the attribute's 4-byte header in the message.
    public let offset: Int
    public let length: Int
    public var valueRange: Range<Int> { (offset + 4)..<(offset + 4 + length) }
}

/// A parsed STUN message (RFC 8489). It keeps its own copy of the bytes: STUN is the control path
/// (connectivity checks every few seconds), and integrity checks need the original bytes.
public struct STUNMessage: Sendable {
    public static let magicCookie: UInt32 = 0x2112_A442
    public static let headerLength = 20
    static let maxAttributes = 64

    public let bytes: [UInt8]
    public let type: STUNMessageType
    public let transactionID: STUNTransactionID
    /// Attributes in order, up to MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT: anything after
    /// integrity other than FINGERPRINT must be ignored (RFC 8489 §14.5).
    public let attributes: [STUNAttribute]
    /// The position of MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, if present.
    public let integrityAttribute: STUNAttribute?
    public let integritySHA256Attribute: STUNAttribute?
    public let fingerprintAttribute: STUNAttribute?

    /// A cheap test of whether a datagram could be STUN at all (RFC 7983 and the magic cookie).
    public static func looksLikeSTUN(_ bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.count >= headerLength && bytes[0] & 0xC0 == 0 && bytes[4] == 0x21 && bytes[5] == 0x12 && bytes[6] == 0xA4 && bytes[7] == 0x42
    }

    public init(parsing bytes: UnsafeRawBufferPointer) throws(STUNParseError) {
        try self.init(parsing: Array(bytes))
    }

    public init(parsing bytes: [UInt8]) throws(STUNParseError) {
        guard bytes.count >= Self.headerLength else { throw .tooShort(bytes.count) }
        guard bytes[0] & 0xC0 == 0 else { throw .notSTUN }
        guard bytes.readUInt32(at: 4) == Self.magicCookie else { throw .badMagicCookie }
        let declared = Int(bytes.readUInt16(at: 2))
        guard declared % 4 == 0 else { throw .lengthNotMultipleOfFour }
        guard declared == bytes.count - Self.headerLength else {
            throw .lengthMismatch(declared: declared, actual: bytes.count - Self.headerLength)
        }
        self.bytes = bytes
        self.type = STUNMessageType(rawValue: bytes.readUInt16(at: 0))
        self.transactionID = STUNTransactionID(
            high: bytes.readUInt32(at: 8), middle: bytes.readUInt32(at: 12), low: bytes.readUInt32(at: 16))

        var attributes: [STUNAttribute] = []
        var integrity: STUNAttribute?
        var integritySHA256: STUNAttribute?
        var fingerprint: STUNAttribute?
        var offset = Self.headerLength
        while offset < bytes.count {
            guard offset + 4 <= bytes.count else { throw .attributeOverrun(STUNAttributeType(rawValue: 0)) }
            let type = STUNAttributeType(rawValue: bytes.readUInt16(at: offset))
            let length = Int(bytes.readUInt16(at: offset + 2))
            guard offset + 4 + length <= bytes.count else { throw .attributeOverrun(type) }
            let attribute = STUNAttribute(type: type, offset: offset, length: length)
            guard fingerprint == nil else { throw .fingerprintNotLast }
            guard attributes.count < Self.maxAttributes else { throw .tooManyAttributes }
            switch type {
            case .fingerprint:
                fingerprint = attribute
            case .messageIntegrity where integrity == nil && integritySHA256 == nil:
                integrity = attribute
                attributes.append(attribute)
            case .messageIntegritySHA256 where integritySHA256 == nil:
                integritySHA256 = attribute
                attributes.append(attribute)
            default:
                if integrity == nil && integritySHA256 == nil { attributes.append(attribute) }
            }
            offset += 4 + (length + 3) & ~3
        }
        self.attributes = attributes
        self.integrityAttribute = integrity
        self.integritySHA256Attribute = integritySHA256
        self.fingerprintAttribute = fingerprint
    }

    // MARK: Reading attributes

    public func attribute(_ type: STUNAttributeType) -> STUNAttribute? {
        attributes.first { $0.type == type }
    }

    public func contains(_ type: STUNAttributeType) -> Bool { attribute(type) != nil }

    public func value(_ type: STUNAttributeType) -> ArraySlice<UInt8>? {
        attribute(type).map { bytes[$0.valueRange] }
    }

    /// A UTF-8 attribute (USERNAME, REALM, NONCE, SOFTWARE); nil when absent or not UTF-8.
    public func string(_ type: STUNAttributeType) -> String? {
        guard let value = value(type) else { return nil }
        return String(validating: value, as: UTF8.self)
    }

    public func uint32(_ type: STUNAttributeType) -> UInt32? {
        guard let attribute = attribute(type), attribute.length == 4 else { return nil }
        return bytes.readUInt32(at: attribute.valueRange.lowerBound)
    }

    public func uint64(_ type: STUNAttributeType) -> UInt64? {
        guard let attribute = attribute(type), attribute.length == 8 else { return nil }
        let start = attribute.valueRange.lowerBound
        return UInt64(bytes.readUInt32(at: start)) << 32 | UInt64(bytes.readUInt32(at: start + 4))
    }

    /// An XOR-…-ADDRESS attribute, un-XORed with the cookie and transaction ID (RFC 8489 §14.2).
    public func xorAddress(_ type: STUNAttributeType) -> TransportAddress? {
        guard let value = value(type) else { return nil }
        return STUNAddressCodec.decode(Array(value), xorWith: transactionID)
    }

    /// Every attribute of an XOR address type, in order (CreatePermission may carry several
    /// XOR-PEER-ADDRESS); nil when one of them does not decode.
    public func xorAddresses(_ type: STUNAttributeType) -> [TransportAddress]? {
        var addresses: [TransportAddress] = []
        for attribute in attributes where attribute.type == type {
            guard let address = STUNAddressCodec.decode(Array(bytes[attribute.valueRange]), xorWith: transactionID) else { return nil }
            addresses.append(address)
        }
        return addresses
    }

    /// A plain (MAPPED-ADDRESS style) address attribute.
    public func plainAddress(_ type: STUNAttributeType) -> TransportAddress? {
        guard let value = value(type) else { return nil }
        return STUNAddressCodec.decode(Array(value), xorWith: nil)
    }

    /// The ERROR-CODE attribute of an error response.
    public var errorCode: (code: Int, reason: String)? {
        guard let value = value(.errorCode), value.count >= 4 else { return nil }
        let base = value.startIndex
        let code = Int(value[base + 2] & 0x07) * 100 + Int(value[base + 3])
        return (code, String(decoding: value.dropFirst(4), as: UTF8.self))
    }

    /// Comprehension-required attributes this agent does not understand, for a 420 response.
    public func unknownComprehensionRequired(known: Set<STUNAttributeType>) -> [STUNAttributeType] {
        attributes.map(\.type).filter { $0.isComprehensionRequired && !known.contains($0) }
    }

    // MARK: Integrity

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1 with `key`: the password for short-term credentials,
    /// MD5(user:realm:pass) for long-term ones).
    public func hasValidIntegrity(key: [UInt8]) -> Bool {
        guard let attribute = integrityAttribute, attribute.length == STUNIntegrity.sha1Length else { return false }
        let expected = STUNIntegrity.hmacSHA1(key: key, message: bytes, upTo: attribute.offset)
        return STUNIntegrity.constantTimeEquals(expected, bytes[attribute.valueRange])
    }

    public func hasValidIntegritySHA256(key: [UInt8]) -> Bool {
        guard let attribute = integritySHA256Attribute, (16...32).contains(attribute.length), attribute.length % 4 == 0 else {
            return false
        }
        let expected = STUNIntegrity.hmacSHA256(key: key, message: bytes, upTo: attribute.offset)
        return STUNIntegrity.constantTimeEquals(expected.prefix(attribute.length), bytes[attribute.valueRange])
    }

    /// Checks FINGERPRINT; false when absent.
    public var hasValidFingerprint: Bool {
        guard let attribute = fingerprintAttribute, attribute.length == 4 else { return false }
        return STUNIntegrity.fingerprint(message: bytes, upTo: attribute.offset) == bytes.readUInt32(at: attribute.valueRange.lowerBound)
    }
}

/// The address attribute layout shared by MAPPED-ADDRESS and the XOR forms.
enum STUNAddressCodec {
    static func decode(_ value: [UInt8], xorWith transactionID: STUNTransactionID?) -> TransportAddress? {
        guard value.count >= 4 else { return nil }
        let family = value[1]
        var port = value.readUInt16(at: 2)
        var address = Array(value[4...])
        switch (family, address.count) {
        case (0x01, 4), (0x02, 16): break
        default: return nil
        }
        if let transactionID {
            port ^= UInt16(STUNMessage.magicCookie >> 16)
            let mask = mask(for: transactionID)
            for index in address.indices { address[index] ^= mask[index] }
        }
        return TransportAddress(ip: IPAddress(bytes: address), port: port)
    }

    static func encode(_ address: TransportAddress, xorWith transactionID: STUNTransactionID?) -> [UInt8] {
        var ip = address.ip.bytes
        var port = address.port
        if let transactionID {
            port ^= UInt16(STUNMessage.magicCookie >> 16)
            let mask = mask(for: transactionID)
            for index in ip.indices { ip[index] ^= mask[index] }
        }
        return [0, address.ip.isIPv4 ? 0x01 : 0x02, UInt8(port >> 8), UInt8(port & 0xFF)] + ip
    }

    private static func mask(for transactionID: STUNTransactionID) -> [UInt8] {
        let cookie = STUNMessage.magicCookie
        return [UInt8(cookie >> 24), UInt8((cookie >> 16) & 0xFF), UInt8((cookie >> 8) & 0xFF), UInt8(cookie & 0xFF)] + transactionID.bytes
    }
}

extension Array where Element == UInt8 {
    func readUInt16(at offset: Int) -> UInt16 { UInt16(self[offset]) << 8 | UInt16(self[offset + 1]) }
    func readUInt32(at offset: Int) -> UInt32 {
        UInt32(self[offset]) << 24 | UInt32(self[offset + 1]) << 16 | UInt32(self[offset + 2]) << 8 | UInt32(self[offset + 3])
    }
    mutating func appendUInt16(_ value: UInt16) { append(contentsOf: [UInt8(value >> 8), UInt8(value & 0xFF)]) }
    mutating func appendUInt32(_ value: UInt32) {
        append(contentsOf: [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)])
    }
    mutating func writeUInt16(_ value: UInt16, at offset: Int) {
        self[offset] = UInt8(value >> 8)
        self[offset + 1] = UInt8(value & 0xFF)
    }
}
