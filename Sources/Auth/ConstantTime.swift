/// Comparing secrets without telling a prober, by the time an answer takes, how much of its guess
/// was right: every byte is looked at whatever the first difference.
public enum ConstantTime {
    /// Equal strings. Only the lengths may show in the time taken.
    public static func equal(_ given: String, _ expected: String) -> Bool {
        guard given.utf8.count == expected.utf8.count else { return false }
        var difference: UInt8 = 0
        for (a, b) in zip(given.utf8, expected.utf8) { difference |= a ^ b }
        return difference == 0
    }
}
