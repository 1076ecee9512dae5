import Addresses
/// Builds a STUN message attribute by attribute; MESSAGE-INTEGRITY and FINGERPRINT are computed
/// over what precedes them, so append them last, in that order.
public struct STUNMessageBuilder: Sendable {
    public private(set) var bytes: [UInt8]
    public let transactionID: STUNTransactionID

    public init(type: STUNMessageType, transactionID: STUNTransactionID) {
        self.transactionID = transactionID
        var header: [UInt8] = []
        header.reserveCapacity(128)
        header.appendUInt16(type.rawValue)
        header.appendUInt16(0)
        header.appendUInt32(STUNMessage.magicCookie)
        header += transactionID.bytes
        bytes = header
    }

    /// A response to `request`: same method and transaction ID.
    public init(responding request: STUNMessage, class messageClass: STUNClass) {
        self.init(type: STUNMessageType(method: request.type.method, class: messageClass), transactionID: request.transactionID)
    }

    public mutating func append(_ type: STUNAttributeType, _ value: some Collection<UInt8>) {
        precondition(value.count <= 0xFFFF, "a STUN attribute holds at most 65535 bytes")
        bytes.appendUInt16(type.rawValue)
        bytes.appendUInt16(UInt16(value.count))
        bytes.append(contentsOf: value)
        let padding = (4 - value.count % 4) % 4
        bytes.append(contentsOf: repeatElement(0, count: padding))
        updateLength()
    }

    public mutating func append(_ type: STUNAttributeType, string: String) { append(type, Array(string.utf8)) }

    public mutating func append(_ type: STUNAttributeType, uint32 value: UInt32) {
        var encoded: [UInt8] = []
        encoded.appendUInt32(value)
        append(type, encoded)
    }

    public mutating func append(_ type: STUNAttributeType, uint64 value: UInt64) {
        var encoded: [UInt8] = []
        encoded.appendUInt32(UInt32(value >> 32))
        encoded.appendUInt32(UInt32(value & 0xFFFF_FFFF))
        append(type, encoded)
    }

    /// A flag attribute such as USE-CANDIDATE or DONT-FRAGMENT.
    public mutating func appendFlag(_ type: STUNAttributeType) { append(type, [UInt8]()) }

    public mutating func append(_ type: STUNAttributeType, xorAddress address: TransportAddress) {
        append(type, STUNAddressCodec.encode(address, xorWith: transactionID))
    }

    public mutating func append(_ type: STUNAttributeType, plainAddress address: TransportAddress) {
        append(type, STUNAddressCodec.encode(address, xorWith: nil))
    }

    public mutating func appendErrorCode(_ code: Int, reason: String) {
        precondition((300...699).contains(code), "STUN error codes are 300–699")
        append(.errorCode, [0, 0, UInt8(code / 100), UInt8(code % 100)] + Array(reason.utf8))
    }

    public mutating func appendUnknownAttributes(_ types: [STUNAttributeType]) {
        var value: [UInt8] = []
        for type in types { value.appendUInt16(type.rawValue) }
        append(.unknownAttributes, value)
    }

    public mutating func appendMessageIntegrity(key: [UInt8]) {
        let offset = bytes.count
        let mac = STUNIntegrity.hmacSHA1(key: key, message: bytes, upTo: offset)
        append(.messageIntegrity, mac)
    }

    public mutating func appendMessageIntegritySHA256(key: [UInt8]) {
        let offset = bytes.count
        let mac = STUNIntegrity.hmacSHA256(key: key, message: bytes, upTo: offset)
        append(.messageIntegritySHA256, mac)
    }

    public mutating func appendFingerprint() {
        let offset = bytes.count
        append(.fingerprint, uint32: STUNIntegrity.fingerprint(message: bytes, upTo: offset))
    }

    private mutating func updateLength() {
        bytes.writeUInt16(UInt16(bytes.count - STUNMessage.headerLength), at: 2)
    }
}
