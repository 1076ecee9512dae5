/// Puts one track's RTP packets back in order before they are written: reorders, waits a bounded
/// time for a late packet, then gives up on it (the writer conceals the gap from timestamps).
/// Pure: time is passed in; a packet is whatever the caller keeps (bytes, a frame).
public struct JitterBuffer<Packet> {
    public struct Entry {
        public let sequence: UInt16
        public let timestamp: UInt32
        public let packet: Packet
        public let arrival: UInt64
    }

    public enum Output {
        case packet(Entry)
        /// `count` packets will never come; the next one follows them.
        case lost(count: Int)
    }

    /// How long a gap is waited on before the packets after it are released.
    public let maxWaitNanoseconds: UInt64
    /// Packets held at most; beyond, the oldest gap is given up at once.
    public let capacity: Int
    private var pending: [Int64: Entry] = [:]
    /// Extended sequence number of the next packet to release, once the first packet came.
    private var next: Int64?
    private var highest: Int64 = 0
    public private(set) var duplicates = 0
    public private(set) var late = 0
    public private(set) var lostTotal = 0

    public init(maxWaitNanoseconds: UInt64 = 200_000_000, capacity: Int = 512) {
        self.maxWaitNanoseconds = maxWaitNanoseconds
        self.capacity = capacity
    }

    public var count: Int { pending.count }

    /// Forgets the stream (the publisher restarted with a new SSRC): the next packet starts afresh.
    public mutating func reset() {
        pending.removeAll()
        next = nil
    }

    public mutating func insert(sequence: UInt16, timestamp: UInt32, packet: Packet, arrival: UInt64) {
        let extended = extend(sequence)
        if let next, extended < next { return late += 1 }
        guard pending[extended] == nil else { return duplicates += 1 }
        pending[extended] = Entry(sequence: sequence, timestamp: timestamp, packet: packet, arrival: arrival)
        if next == nil { next = extended }
        highest = max(highest, extended)
    }

    /// What can be released at `now`, in order.
    public mutating func pop(now: UInt64) -> [Output] {
        guard var cursor = next else { return [] }
        var out: [Output] = []
        while !pending.isEmpty {
            if let entry = pending.removeValue(forKey: cursor) {
                out.append(.packet(entry))
                cursor += 1
                continue
            }
            // A gap: give up on it when the packet after it has waited long enough, or when full.
            guard let (after, entry) = pending.min(by: { $0.key < $1.key }) else { break }
            let waited = now >= entry.arrival ? now - entry.arrival : 0
            guard waited >= maxWaitNanoseconds || pending.count >= capacity else { break }
            let missing = Int(after - cursor)
            lostTotal += missing
            out.append(.lost(count: missing))
            cursor = after
        }
        next = cursor
        return out
    }

    /// Everything still held, gaps given up (at stop).
    public mutating func drain() -> [Output] { pop(now: UInt64.max) }

    /// Unwraps a 16-bit sequence number next to the highest seen.
    private func extend(_ sequence: UInt16) -> Int64 {
        guard next != nil else { return Int64(sequence) + (1 << 16) }
        let base = highest & ~0xFFFF
        var candidate = base | Int64(sequence)
        if candidate - highest > 0x8000 { candidate -= 0x10000 } else if highest - candidate > 0x8000 { candidate += 0x10000 }
        return candidate
    }
}

extension JitterBuffer: Sendable where Packet: Sendable {}
extension JitterBuffer.Entry: Sendable where Packet: Sendable {}
extension JitterBuffer.Output: Sendable where Packet: Sendable {}
