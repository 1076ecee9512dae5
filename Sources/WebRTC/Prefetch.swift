import CParleyLinux

/// Cache prefetch for state a loop is about to touch. The forwarding loop uses it: each
/// subscriber's objects were last touched a packet interval ago and are cold, and asking for all
/// of them before using any lets the misses overlap instead of queueing one after another.
public enum Prefetch {
    /// The first `lines` 64-byte lines of a class instance (its header and stored properties).
    @inlinable @inline(__always)
    public static func object(_ object: AnyObject, lines: Int32) {
        parley_prefetch(UnsafeRawPointer(Unmanaged.passUnretained(object).toOpaque()), lines)
    }

    @inlinable @inline(__always)
    public static func memory(_ address: UnsafeRawPointer?, lines: Int32) {
        guard let address else { return }
        parley_prefetch(address, lines)
    }
}
