import NIOConcurrencyHelpers

/// Makes sids such as `RM_3kTq9ZpL0aXw`. Randomness is injected: tests pass a seeded generator.
public final class IDGenerator: Sendable {
    private static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    private let generator: NIOLockedValueBox<any RandomNumberGenerator & Sendable>

    public init(_ generator: any RandomNumberGenerator & Sendable = SystemRandomNumberGenerator()) {
        self.generator = NIOLockedValueBox(generator)
    }

    /// `prefix` + `_` + 12 base-62 characters (71 bits).
    public func make(_ prefix: String) -> String {
        generator.withLockedValue { generator in
            var id = prefix + "_"
            for _ in 0..<12 {
                id.append(Self.alphabet[Int(generator.next(upperBound: UInt8(Self.alphabet.count)))])
            }
            return id
        }
    }

    public func room() -> String { make("RM") }
    public func participant() -> String { make("PA") }
    public func track() -> String { make("TR") }
    public func message() -> String { make("MS") }
}

/// A deterministic generator for tests (SplitMix64).
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
