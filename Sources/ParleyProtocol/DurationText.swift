import Foundation

/// Durations as people write them in config files and flags: `250ms`, `20s`, `5m`, `6h`, `2d`,
/// or a bare number of seconds.
public enum DurationText {
    public static func parse(_ text: String) -> Duration? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (suffix, millis) in units where trimmed.hasSuffix(suffix) {
            guard let value = Int64(trimmed.dropLast(suffix.count)), value >= 0 else { return nil }
            return .milliseconds(value * millis)
        }
        guard let seconds = Int64(trimmed), seconds >= 0 else { return nil }
        return .seconds(seconds)
    }

    /// The shortest exact text for a duration, e.g. `20s`, `250ms`, `6h`.
    public static func format(_ duration: Duration) -> String {
        let millis = duration.milliseconds
        for (suffix, unit) in [("d", Int64(86_400_000)), ("h", 3_600_000), ("m", 60_000), ("s", 1000)]
        where millis != 0 && millis % unit == 0 {
            return "\(millis / unit)\(suffix)"
        }
        return "\(millis)ms"
    }
}

extension Duration {
    /// Whole milliseconds, rounded toward zero.
    public var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    /// Whole nanoseconds, rounded toward zero (clamped at zero for negative durations).
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return max(0, seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
