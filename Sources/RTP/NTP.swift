/// A 64-bit NTP timestamp (RFC 5905): seconds since 1900-01-01 in the high 32 bits, binary
/// fraction of a second in the low 32. RTCP sender reports carry it, and LSR echoes its middle.
public struct NTPTimestamp: Hashable, Sendable {
    /// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
    public static let unixEpochOffsetSeconds: UInt64 = 2_208_988_800

    public var seconds: UInt32
    public var fraction: UInt32

    public init(seconds: UInt32, fraction: UInt32) {
        self.seconds = seconds
        self.fraction = fraction
    }

    public init(rawValue: UInt64) {
        self.init(seconds: UInt32(truncatingIfNeeded: rawValue >> 32), fraction: UInt32(truncatingIfNeeded: rawValue))
    }

    /// From Unix time in nanoseconds (the caller reads the clock; this module never does).
    /// Times before 1970 clamp to the Unix epoch; seconds wrap modulo 2^32 like NTP eras do.
    public init(unixNanoseconds: Int64) {
        let nanoseconds = UInt64(max(unixNanoseconds, 0))
        let wholeSeconds = nanoseconds / 1_000_000_000
        let remainder = nanoseconds % 1_000_000_000
        // remainder < 1e9 < 2^30, so remainder << 32 < 2^62: no overflow.
        let fraction = (remainder << 32) / 1_000_000_000
        self.init(
            seconds: UInt32(truncatingIfNeeded: wholeSeconds &+ Self.unixEpochOffsetSeconds),
            fraction: UInt32(truncatingIfNeeded: fraction))
    }

    public var rawValue: UInt64 { UInt64(seconds) << 32 | UInt64(fraction) }

    /// The middle 32 bits (16.16 fixed point seconds): the LSR field of a report block.
    public var middle32: UInt32 { UInt32(truncatingIfNeeded: rawValue >> 16) }

    /// Unix time in nanoseconds, assuming the current NTP era (1900–2036).
    public var unixNanoseconds: Int64 {
        let unixSeconds = Int64(seconds) - Int64(Self.unixEpochOffsetSeconds)
        let nanos = Int64((UInt64(fraction) * 1_000_000_000) >> 32)
        return unixSeconds * 1_000_000_000 + nanos
    }
}
