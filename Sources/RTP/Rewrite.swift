/// Incoming → outgoing header extension id table for one down-track (publisher and subscriber
/// negotiate ids independently). Entry 0 means "drop the element".
///
/// Storage is inline (4 × 64 bytes), so a down-track builds it once and per-packet lookups
/// touch no heap memory.
public struct ExtensionIDMap: Hashable, Sendable {
    private var low: SIMD64<UInt8> = .zero
    private var midLow: SIMD64<UInt8> = .zero
    private var midHigh: SIMD64<UInt8> = .zero
    private var high: SIMD64<UInt8> = .zero

    /// Every id maps to 0: all elements are dropped until mappings are added.
    public init() {}

    /// Every id maps to itself (useful when both sides negotiated the same ids).
    public static var identity: ExtensionIDMap {
        var map = ExtensionIDMap()
        for id in 0...255 { map[UInt8(id)] = UInt8(id) }
        return map
    }

    public subscript(incoming: UInt8) -> UInt8 {
        get {
            let index = Int(incoming & 63)
            switch incoming >> 6 {
            case 0: return low[index]
            case 1: return midLow[index]
            case 2: return midHigh[index]
            default: return high[index]
            }
        }
        set {
            let index = Int(incoming & 63)
            switch incoming >> 6 {
            case 0: low[index] = newValue
            case 1: midLow[index] = newValue
            case 2: midHigh[index] = newValue
            default: high[index] = newValue
            }
        }
    }
}

/// Publisher → subscriber payload type table for one down-track; `PayloadTypeMap.drop` (0xFF,
/// no valid payload type) for what the subscriber did not accept. Inline like `ExtensionIDMap`:
/// the forwarding loop reads it for every copy, and a heap table would be one more cold line.
public struct PayloadTypeMap: Hashable, Sendable {
    public static let drop: UInt8 = 0xFF
    private var low = SIMD64<UInt8>(repeating: PayloadTypeMap.drop)
    private var high = SIMD64<UInt8>(repeating: PayloadTypeMap.drop)

    /// Every payload type dropped until mappings are added.
    public init() {}

    /// `drop` for payload types of 128 and up (not valid in RTP).
    public subscript(incoming: UInt8) -> UInt8 {
        get {
            guard incoming < 128 else { return Self.drop }
            return incoming < 64 ? low[Int(incoming)] : high[Int(incoming - 64)]
        }
        set {
            guard incoming < 128 else { return }
            if incoming < 64 { low[Int(incoming)] = newValue } else { high[Int(incoming - 64)] = newValue }
        }
    }
}

/// In-place rewriting of one RTP packet for forwarding: the SFU receives into a buffer, rewrites
/// the header fields for the subscriber and sends the same bytes, with no copy or allocation.
///
/// The initializer validates the packet once; the setters then write at known-good offsets.
public struct RTPPacketRewriter {
    public let packet: UnsafeMutableRawBufferPointer
    /// The header as parsed, kept in sync with the setters.
    public private(set) var header: RTPHeader

    public init?(_ packet: UnsafeMutableRawBufferPointer) {
        guard let header = RTPHeader(UnsafeRawBufferPointer(packet)) else { return nil }
        self.packet = packet
        self.header = header
    }

    public mutating func setSSRC(_ ssrc: UInt32) {
        packet.setUInt32(ssrc, at: 8)
        header.ssrc = ssrc
    }

    public mutating func setSequenceNumber(_ sequenceNumber: UInt16) {
        packet.setUInt16(sequenceNumber, at: 2)
        header.sequenceNumber = sequenceNumber
    }

    public mutating func setTimestamp(_ timestamp: UInt32) {
        packet.setUInt32(timestamp, at: 4)
        header.timestamp = timestamp
    }

    /// Payload types are 7 bits; higher bits of `payloadType` are ignored.
    public mutating func setPayloadType(_ payloadType: UInt8) {
        let value = payloadType & 0x7F
        packet.setUInt8((packet[1] & 0x80) | value, at: 1)
        header.payloadType = value
    }

    public mutating func setMarker(_ marker: Bool) {
        packet.setUInt8((packet[1] & 0x7F) | (marker ? 0x80 : 0), at: 1)
        header.marker = marker
    }

    /// Rewrites every extension element id through `map`. Elements mapped to 0 (or, in the
    /// one-byte form, to an id above 14 which that form cannot carry) are overwritten with zero
    /// padding bytes, which RFC 8285 allows between elements, so the packet length is unchanged.
    /// Returns false (packet untouched) for a missing block or a profile RFC 8285 does not define.
    @discardableResult
    public func remapExtensionIDs(_ map: ExtensionIDMap) -> Bool {
        let elements = header.extensionElements(in: UnsafeRawBufferPointer(packet))
        guard header.hasExtension, let form = elements.form else { return false }
        // Each element's bounds were computed before anything was written; writes only touch
        // that element's own bytes, so the iterator never re-reads a rewritten byte.
        for element in elements {
            let newID = map[element.id]
            switch form {
            case .oneByte:
                if newID == 0 || newID > 14 {
                    packet.zero(element.headerOffset..<element.range.upperBound)
                } else {
                    packet.setUInt8(newID << 4 | (packet[element.headerOffset] & 0x0F), at: element.headerOffset)
                }
            case .twoByte:
                if newID == 0 {
                    packet.zero(element.headerOffset..<element.range.upperBound)
                } else {
                    packet.setUInt8(newID, at: element.headerOffset)
                }
            }
        }
        return true
    }

    /// The data of the element with `id` as a writable view, if present.
    public func extensionData(id: UInt8) -> UnsafeMutableRawBufferPointer? {
        guard let range = header.extensionElement(id: id, in: UnsafeRawBufferPointer(packet)) else { return nil }
        return UnsafeMutableRawBufferPointer(rebasing: packet[range])
    }

    /// Overwrites an existing abs-send-time element; false when absent or shorter than 3 bytes.
    @discardableResult
    public func writeAbsSendTime(_ value: AbsSendTime, id: UInt8) -> Bool {
        guard let data = extensionData(id: id) else { return false }
        return value.write(to: data)
    }

    /// Overwrites an existing transport-wide sequence number element; false when absent or short.
    @discardableResult
    public func writeTransportSequenceNumber(_ sequenceNumber: UInt16, id: UInt8) -> Bool {
        guard let data = extensionData(id: id) else { return false }
        return TransportSequenceNumber.write(sequenceNumber, to: data)
    }
}
