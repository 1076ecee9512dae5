/// The two RFC 8285 header extension layouts, told apart by the profile field.
public enum RTPHeaderExtensionForm: Hashable, Sendable {
    /// Profile 0xBEDE: 4-bit id (1–14), 4-bit length − 1.
    case oneByte
    /// Profile 0x100X: 8-bit id, 8-bit length; X is the 4 "appbits".
    case twoByte(appBits: UInt8)

    public static let oneByteProfile: UInt16 = 0xBEDE
    public static let twoByteProfile: UInt16 = 0x1000

    /// Nil for profiles RFC 8285 does not define (their contents are opaque).
    public init?(profile: UInt16) {
        if profile == Self.oneByteProfile {
            self = .oneByte
        } else if profile & 0xFFF0 == Self.twoByteProfile {
            self = .twoByte(appBits: UInt8(profile & 0x0F))
        } else {
            return nil
        }
    }
}

/// One extension element: its id and the byte range of its data within the packet.
public struct RTPHeaderExtensionElement: Hashable, Sendable {
    public var id: UInt8
    public var range: Range<Int>
    /// Offset of the element's own header byte(s); rewriting needs it.
    public var headerOffset: Int

    /// A zero-copy view of the element data (nil only if `packet` is not the parsed buffer).
    public func data(in packet: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? { packet.slice(range) }
}

/// Allocation-free sequence of the elements in an RTP header extension block.
///
/// Iteration stops at the end of the block, at a one-byte id 15 (RFC 8285 §4.2 says stop), or at
/// an element whose length runs past the block (malformed; the rest is not trusted).
public struct RTPHeaderExtensionElements: Sequence {
    public let packet: UnsafeRawBufferPointer
    public let form: RTPHeaderExtensionForm?
    public let range: Range<Int>

    /// `range` must lie in `packet` (as `RTPHeader.extensionRange` does); otherwise it is empty.
    public init(packet: UnsafeRawBufferPointer, profile: UInt16, range: Range<Int>) {
        self.packet = packet
        self.form = RTPHeaderExtensionForm(profile: profile)
        self.range = (range.lowerBound >= 0 && range.upperBound <= packet.count) ? range : 0..<0
    }

    public func makeIterator() -> Iterator {
        Iterator(packet: packet, form: form, cursor: range.lowerBound, end: form == nil ? range.lowerBound : range.upperBound)
    }

    /// The first element with `id`; ids are unique per packet in well-formed streams.
    public func first(id: UInt8) -> RTPHeaderExtensionElement? {
        var iterator = makeIterator()
        while let element = iterator.next() {
            if element.id == id { return element }
        }
        return nil
    }

    public struct Iterator: IteratorProtocol {
        let packet: UnsafeRawBufferPointer
        let form: RTPHeaderExtensionForm?
        var cursor: Int
        let end: Int

        public mutating func next() -> RTPHeaderExtensionElement? {
            guard let form else { return nil }
            while cursor < end {
                let headerOffset = cursor
                let first = packet.uint8(at: cursor)
                // Id 0 marks a padding byte between elements (its length bits are ignored, as
                // libwebrtc does); a dropped element is rewritten into such bytes.
                let isPadding: Bool
                switch form {
                case .oneByte: isPadding = first >> 4 == 0
                case .twoByte: isPadding = first == 0
                }
                if isPadding {
                    cursor += 1
                    continue
                }
                let id: UInt8
                let dataStart: Int
                let length: Int
                switch form {
                case .oneByte:
                    id = first >> 4
                    if id == 15 {
                        cursor = end
                        return nil
                    }
                    length = Int(first & 0x0F) + 1
                    dataStart = cursor + 1
                case .twoByte:
                    guard cursor + 2 <= end else {
                        cursor = end
                        return nil
                    }
                    id = first
                    length = Int(packet.uint8(at: cursor + 1))
                    dataStart = cursor + 2
                }
                guard dataStart + length <= end else {
                    cursor = end
                    return nil
                }
                cursor = dataStart + length
                return RTPHeaderExtensionElement(id: id, range: dataStart..<(dataStart + length), headerOffset: headerOffset)
            }
            return nil
        }
    }
}
