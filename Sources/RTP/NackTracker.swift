/// Up to `capacity` sequence numbers held inline, so producing a NACK batch never allocates.
public struct NackBatch: RandomAccessCollection, Sendable {
    public static let capacity = 64
    private var storage = SIMD64<UInt16>.zero
    public private(set) var count = 0

    public init() {}

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }
    public var isFull: Bool { count == Self.capacity }

    public subscript(position: Int) -> UInt16 {
        precondition(position >= 0 && position < count, "NackBatch index out of range")
        return storage[position]
    }

    /// Appends unless full; returns false when full.
    @discardableResult
    public mutating func append(_ sequenceNumber: UInt16) -> Bool {
        guard count < Self.capacity else { return false }
        storage[count] = sequenceNumber
        count += 1
        return true
    }
}

/// Tracks missing sequence numbers of one incoming stream and decides when to NACK them.
///
/// Gaps are recorded as packets arrive; `dueNacks` returns the ones to request now, each at most
/// `maxRetries` times, spaced by at least the retry interval the caller passes (about one RTT).
/// A packet that arrives late is removed. State lives in a ring of `windowSize` (256) entries
/// allocated once at init: at most 256 numbers behind the newest are tracked, older ones are
/// given up, and a forward jump larger than the window (or a backward one beyond
/// `resetDistance`) resets the tracker instead of flooding NACKs after a stream restart.
public struct NackTracker: Sendable {
    public static let windowSize = 256
    /// A backward jump this large is a restart of the sequence, not a late packet.
    public static let resetDistance = 1024

    private struct Entry {
        var sequenceNumber: UInt16 = 0
        var missing = false
        var retries: UInt8 = 0
        var lastSentNanoseconds: Int64 = 0
    }

    public let maxRetries: Int
    private var entries: [Entry]
    private var started = false
    private var highest: UInt16 = 0
    public private(set) var missingCount = 0

    public init(maxRetries: Int = 3) {
        self.maxRetries = max(maxRetries, 1)
        entries = Array(repeating: Entry(), count: Self.windowSize)
    }

    /// Records an arrival: newer numbers open gaps, older ones fill them.
    public mutating func packetReceived(sequenceNumber: UInt16) {
        guard started else {
            started = true
            highest = sequenceNumber
            return
        }
        let delta = Int(Int16(bitPattern: sequenceNumber &- highest))
        if delta > 0 {
            if delta > Self.windowSize {
                reset(to: sequenceNumber)
                return
            }
            var next = highest &+ 1
            while next != sequenceNumber {
                setEntry(Entry(sequenceNumber: next, missing: true))
                next &+= 1
            }
            setEntry(Entry(sequenceNumber: sequenceNumber, missing: false))
            highest = sequenceNumber
        } else if delta < 0 {
            if -delta >= Self.resetDistance {
                reset(to: sequenceNumber)
                return
            }
            let slot = Int(sequenceNumber) & (Self.windowSize - 1)
            if entries[slot].sequenceNumber == sequenceNumber, entries[slot].missing {
                entries[slot].missing = false
                missingCount -= 1
            }
        }
    }

    /// Missing numbers to NACK now, oldest first, at most `limit` (≤ `NackBatch.capacity`).
    /// A number is due when never requested, or when `retryIntervalNanoseconds` passed since the
    /// last request; after `maxRetries` requests it is given up.
    public mutating func dueNacks(
        nowNanoseconds: Int64, retryIntervalNanoseconds: Int64 = 20_000_000, limit: Int = NackBatch.capacity
    ) -> NackBatch {
        var batch = NackBatch()
        guard started, missingCount > 0 else { return batch }
        let limit = min(max(limit, 0), NackBatch.capacity)
        var sequenceNumber = highest &- UInt16(Self.windowSize - 1)
        for _ in 0..<Self.windowSize {
            defer { sequenceNumber &+= 1 }
            guard batch.count < limit else { break }
            let slot = Int(sequenceNumber) & (Self.windowSize - 1)
            guard entries[slot].missing, entries[slot].sequenceNumber == sequenceNumber else { continue }
            if entries[slot].retries > 0,
                nowNanoseconds &- entries[slot].lastSentNanoseconds < retryIntervalNanoseconds
            {
                continue
            }
            batch.append(sequenceNumber)
            entries[slot].retries += 1
            entries[slot].lastSentNanoseconds = nowNanoseconds
            if Int(entries[slot].retries) >= maxRetries {
                entries[slot].missing = false  // final attempt: give up afterwards
                missingCount -= 1
            }
        }
        return batch
    }

    /// Whether `sequenceNumber` is currently tracked as missing.
    public func isMissing(_ sequenceNumber: UInt16) -> Bool {
        let slot = Int(sequenceNumber) & (Self.windowSize - 1)
        return entries[slot].missing && entries[slot].sequenceNumber == sequenceNumber
    }

    private mutating func setEntry(_ entry: Entry) {
        let slot = Int(entry.sequenceNumber) & (Self.windowSize - 1)
        if entries[slot].missing { missingCount -= 1 }  // evicts an entry 256 behind: given up
        if entry.missing { missingCount += 1 }
        entries[slot] = entry
    }

    private mutating func reset(to sequenceNumber: UInt16) {
        for index in entries.indices { entries[index] = Entry() }
        missingCount = 0
        highest = sequenceNumber
    }
}
