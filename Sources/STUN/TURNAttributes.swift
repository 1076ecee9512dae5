import Addresses
/// TURN's own attribute layouts and indications (RFC 8656 §11, §18), written and read alike by
/// the server and the client.
public enum TURNTransport {
    /// The IP protocol number REQUESTED-TRANSPORT names for a UDP relay.
    public static let udpProtocolNumber: UInt8 = 17
}

extension STUNMessageBuilder {
    /// CHANNEL-NUMBER: the number, then two reserved bytes.
    public mutating func append(channelNumber: UInt16) {
        append(.channelNumber, [UInt8(channelNumber >> 8), UInt8(channelNumber & 0xFF), 0, 0])
    }

    /// REQUESTED-TRANSPORT: the protocol number, then three reserved bytes.
    public mutating func append(requestedTransport protocolNumber: UInt8) {
        append(.requestedTransport, [protocolNumber, 0, 0, 0])
    }

    /// A Send indication (client to server) or Data indication (server to client): `data` to or
    /// from `peer`.
    public static func relayIndication(
        _ method: STUNMethod, peer: TransportAddress, data: some Collection<UInt8>, transactionID: STUNTransactionID
    ) -> [UInt8] {
        var indication = STUNMessageBuilder(type: STUNMessageType(method: method, class: .indication), transactionID: transactionID)
        indication.append(.xorPeerAddress, xorAddress: peer)
        indication.append(.data, data)
        return indication.bytes
    }
}

extension STUNMessage {
    /// CHANNEL-NUMBER; nil when absent or not four bytes (the range is the reader's to check).
    public var channelNumber: UInt16? {
        guard let value = value(.channelNumber), value.count == 4 else { return nil }
        return UInt16(value[value.startIndex]) << 8 | UInt16(value[value.startIndex + 1])
    }

    /// REQUESTED-TRANSPORT's protocol number; nil when absent or not four bytes.
    public var requestedTransport: UInt8? {
        guard let value = value(.requestedTransport), value.count == 4 else { return nil }
        return value.first
    }
}
