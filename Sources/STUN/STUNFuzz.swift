/// One fuzz iteration over every STUN entry point; a libFuzzer target calls it with raw bytes.
public enum STUNFuzz {
    public static func run(_ data: UnsafeRawBufferPointer) {
        _ = STUNMessage.looksLikeSTUN(data)
        _ = ChannelData(data)
        _ = STUNFraming.nextFrame(data)
        guard let message = try? STUNMessage(parsing: data) else { return }
        _ = message.hasValidFingerprint
        _ = message.hasValidIntegrity(key: Array("fuzz".utf8))
        _ = message.hasValidIntegritySHA256(key: Array("fuzz".utf8))
        for type in [STUNAttributeType.username, .realm, .nonce, .software] { _ = message.string(type) }
        for type in [STUNAttributeType.xorMappedAddress, .xorPeerAddress, .xorRelayedAddress] { _ = message.xorAddress(type) }
        _ = message.xorAddresses(.xorPeerAddress)
        _ = message.requestedTransport
        _ = message.channelNumber
        _ = message.uint32(.lifetime)
        _ = message.plainAddress(.mappedAddress)
        _ = message.uint32(.priority)
        _ = message.uint64(.iceControlling)
        _ = message.errorCode
        _ = message.unknownComprehensionRequired(known: [])
        // Rebuilding what was parsed must give a message that parses again (room left for the
        // two attributes the rebuild adds).
        guard message.attributes.count < STUNMessage.maxAttributes - 2, message.bytes.count < 0xFFFF - 64 else { return }
        var builder = STUNMessageBuilder(type: message.type, transactionID: message.transactionID)
        for attribute in message.attributes where attribute.type != .messageIntegrity && attribute.type != .messageIntegritySHA256 {
            builder.append(attribute.type, message.bytes[attribute.valueRange])
        }
        builder.appendMessageIntegrity(key: Array("fuzz".utf8))
        builder.appendFingerprint()
        guard let again = try? STUNMessage(parsing: builder.bytes), again.hasValidFingerprint,
            again.hasValidIntegrity(key: Array("fuzz".utf8))
        else { fatalError("a rebuilt STUN message does not verify") }
    }
}
