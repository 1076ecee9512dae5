// Big-endian loads and stores at byte offsets. Callers validate bounds first; these helpers
// only exist so the parsers read like the RFC diagrams.

extension UnsafeRawBufferPointer {
    @inline(__always) func uint8(at offset: Int) -> UInt8 { self[offset] }

    @inline(__always) func uint16(at offset: Int) -> UInt16 {
        UInt16(self[offset]) << 8 | UInt16(self[offset + 1])
    }

    @inline(__always) func uint24(at offset: Int) -> UInt32 {
        UInt32(self[offset]) << 16 | UInt32(self[offset + 1]) << 8 | UInt32(self[offset + 2])
    }

    @inline(__always) func uint32(at offset: Int) -> UInt32 {
        UInt32(uint16(at: offset)) << 16 | UInt32(uint16(at: offset + 2))
    }

    @inline(__always) func uint64(at offset: Int) -> UInt64 {
        UInt64(uint32(at: offset)) << 32 | UInt64(uint32(at: offset + 4))
    }

    /// A zero-copy view of `range`, or nil when the range does not lie inside the buffer.
    @inline(__always) func slice(_ range: Range<Int>) -> UnsafeRawBufferPointer? {
        guard range.lowerBound >= 0, range.upperBound <= count else { return nil }
        return UnsafeRawBufferPointer(rebasing: self[range])
    }
}

extension UnsafeMutableRawBufferPointer {
    @inline(__always) func setUInt8(_ value: UInt8, at offset: Int) { self[offset] = value }

    @inline(__always) func setUInt16(_ value: UInt16, at offset: Int) {
        self[offset] = UInt8(truncatingIfNeeded: value >> 8)
        self[offset + 1] = UInt8(truncatingIfNeeded: value)
    }

    @inline(__always) func setUInt24(_ value: UInt32, at offset: Int) {
        self[offset] = UInt8(truncatingIfNeeded: value >> 16)
        self[offset + 1] = UInt8(truncatingIfNeeded: value >> 8)
        self[offset + 2] = UInt8(truncatingIfNeeded: value)
    }

    @inline(__always) func setUInt32(_ value: UInt32, at offset: Int) {
        setUInt16(UInt16(truncatingIfNeeded: value >> 16), at: offset)
        setUInt16(UInt16(truncatingIfNeeded: value), at: offset + 2)
    }

    @inline(__always) func setUInt64(_ value: UInt64, at offset: Int) {
        setUInt32(UInt32(truncatingIfNeeded: value >> 32), at: offset)
        setUInt32(UInt32(truncatingIfNeeded: value), at: offset + 4)
    }

    @inline(__always) func zero(_ range: Range<Int>) {
        for index in range { self[index] = 0 }
    }
}
