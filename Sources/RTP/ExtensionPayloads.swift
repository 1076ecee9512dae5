// Readers and writers for the extension element payloads an SFU looks at. Readers take the
// element data (see `RTPHeaderExtensionElement.data(in:)`) and return nil when it is too short.

/// Client-to-mixer audio level (RFC 6464): drives active-speaker detection without decoding.
public struct AudioLevel: Hashable, Sendable {
    /// The V bit: the sender's voice activity detector thinks this packet holds speech.
    public var voiceActivity: Bool
    /// Level in −dBov, 0 (loudest) … 127 (silence).
    public var level: UInt8

    public init(voiceActivity: Bool, level: UInt8) {
        self.voiceActivity = voiceActivity
        self.level = min(level, 127)
    }

    public init?(extensionData data: UnsafeRawBufferPointer) {
        guard data.count >= 1 else { return nil }
        let byte = data.uint8(at: 0)
        self.init(voiceActivity: byte & 0x80 != 0, level: byte & 0x7F)
    }

    /// Writes the one-byte payload; false when `data` is empty.
    @discardableResult
    public func write(to data: UnsafeMutableRawBufferPointer) -> Bool {
        guard data.count >= 1 else { return false }
        data.setUInt8((voiceActivity ? 0x80 : 0) | (level & 0x7F), at: 0)
        return true
    }
}

/// abs-send-time: 24-bit 6.18 fixed-point seconds (wraps every 64 s), used by REMB-based
/// bandwidth estimation at the receiver.
public struct AbsSendTime: Hashable, Sendable {
    public static let length = 3
    /// The 24-bit value; the upper 8 bits are always zero.
    public var rawValue: UInt32

    public init(rawValue: UInt32) { self.rawValue = rawValue & 0xFF_FFFF }

    /// From a send time in nanoseconds (any epoch; only the value modulo 64 s survives).
    public init(nanoseconds: Int64) {
        let value = UInt64(bitPattern: nanoseconds)
        let seconds = value / 1_000_000_000
        let remainder = value % 1_000_000_000
        let fraction = (remainder << 18) / 1_000_000_000  // remainder < 2^30: no overflow
        self.init(rawValue: UInt32(truncatingIfNeeded: (seconds << 18) &+ fraction))
    }

    public init?(extensionData data: UnsafeRawBufferPointer) {
        guard data.count >= Self.length else { return nil }
        self.init(rawValue: data.uint24(at: 0))
    }

    /// Nanoseconds within the 64-second window.
    public var nanoseconds: Int64 { Int64((UInt64(rawValue) * 1_000_000_000) >> 18) }

    @discardableResult
    public func write(to data: UnsafeMutableRawBufferPointer) -> Bool {
        guard data.count >= Self.length else { return false }
        data.setUInt24(rawValue, at: 0)
        return true
    }
}

/// Transport-wide sequence number (draft-holmer-rmcat-transport-wide-cc-extensions): one
/// counter across all media of a transport, echoed back in transport-cc feedback.
public enum TransportSequenceNumber {
    public static let length = 2

    public static func read(_ data: UnsafeRawBufferPointer) -> UInt16? {
        guard data.count >= length else { return nil }
        return data.uint16(at: 0)
    }

    @discardableResult
    public static func write(_ sequenceNumber: UInt16, to data: UnsafeMutableRawBufferPointer) -> Bool {
        guard data.count >= length else { return false }
        data.setUInt16(sequenceNumber, at: 0)
        return true
    }
}

/// The BUNDLE mid (RFC 8843 §15.2): which m-line a packet belongs to before SSRCs are known.
public enum MidExtension {
    /// The range of the mid string within `packet`, trailing NUL bytes trimmed (some senders
    /// pad); nil when empty.
    public static func range(of element: RTPHeaderExtensionElement, in packet: UnsafeRawBufferPointer) -> Range<Int>? {
        guard element.range.lowerBound >= 0, element.range.upperBound <= packet.count else { return nil }
        var end = element.range.upperBound
        while end > element.range.lowerBound, packet.uint8(at: end - 1) == 0 { end -= 1 }
        guard end > element.range.lowerBound else { return nil }
        return element.range.lowerBound..<end
    }
}
