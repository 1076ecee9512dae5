/// Per-down-track sequence/timestamp "munger": the subscriber sees one continuous RTP stream
/// with a fixed SSRC while the SFU switches the source behind it (publisher restart with a new
/// SSRC, simulcast layer change, unmute after a pause).
///
/// Rules:
/// - The first packet of a new source continues the outgoing sequence at last + 1 and advances
///   the outgoing timestamp by the wall time since the last forwarded packet × clock rate (at
///   least 1 tick), so jitter buffers and the NACK logic of the receiver stay calm.
/// - Within a source, packets keep their incoming spacing (gaps stay gaps, so the receiver can
///   NACK them). Reordered packets within `reorderWindow` map with the offset in force where
///   their incoming number falls (see skipping); duplicates, packets older than the window and
///   packets from before the latest switch are dropped (nil).
/// - Sequence arithmetic wraps at 16 bits, timestamps at 32 bits.
///
/// Skipping (`skip`): the SFU drops whole frames on purpose (temporal layers above the
/// subscriber's, padding-only packets) without leaving a gap: a skipped packet newer than the
/// newest one hands its outgoing number to the next packet, so the offset of every later packet
/// shrinks by one. Each such change starts an offset epoch at the incoming number after the
/// skip; the last `skipHistoryCapacity` epochs are kept, so reordered packets still map with
/// the offset of their own epoch and the NACK reverse map reaches back across skips. Packets
/// lost before a skip keep their outgoing numbers (the receiver NACKs them as usual). A late
/// packet (older than the newest) cannot be skipped without a gap, because later packets
/// already carry the numbers after it: it is refused as a duplicate afterwards and the NACK
/// map reports its number as not forwardable. When more epochs than the history holds pile up,
/// packets of the forgotten ones are treated like packets from before a switch.
///
/// Source changes: any SSRC other than the current one starts a new source, except the
/// immediately previous SSRC, whose late packets are dropped; to switch back to it on purpose
/// (e.g. a simulcast layer going up again) call `resync()` first. The selector should call
/// `resync()` on every deliberate switch.
///
/// The caller passes arrival times in; this type never reads a clock.
public struct SequenceRewriter: Sendable {
    /// Outgoing sequence number and timestamp for one forwarded packet.
    public struct Output: Hashable, Sendable {
        public var sequenceNumber: UInt16
        public var timestamp: UInt32
    }

    /// How far behind the newest packet a reordered packet is still forwarded (bits in `seen`).
    public static let reorderWindow = 256
    /// How many offset changes (skips) of the current source the reverse map remembers.
    public static let skipHistoryCapacity = OffsetEpochs.capacity

    public let clockRate: UInt32
    /// The SSRC every forwarded packet carries (the caller writes it; kept here for reference).
    public let outgoingSSRC: UInt32

    public private(set) var currentSSRC: UInt32?
    /// The source before the latest switch: its stragglers are dropped rather than switched to.
    public private(set) var previousSSRC: UInt32?
    private var resyncPending = false
    private var timestampOffset: UInt32 = 0
    /// Newest incoming sequence of the current source, extended beyond 16 bits.
    private var highestIncoming: Int64 = 0
    /// Sequence offsets of the current source since it started, one per run of skips.
    private var epochs = OffsetEpochs()
    /// The newest outgoing sequence number given out, or held for a packet still missing before
    /// a skip; a new source continues after it.
    public private(set) var lastOutgoingSequence: UInt16 = 0
    public private(set) var lastOutgoingTimestamp: UInt32 = 0
    private var lastForwardNanoseconds: Int64 = 0
    /// Bit per incoming sequence in (highest − window, highest]: forwarded or skipped already.
    private var seen = SIMD4<UInt64>(repeating: 0)
    /// Bit per incoming sequence in the same window: skipped, so a NACK for it is not answered.
    private var skipped = SIMD4<UInt64>(repeating: 0)

    public init(clockRate: UInt32, outgoingSSRC: UInt32) {
        self.clockRate = clockRate
        self.outgoingSSRC = outgoingSSRC
    }

    /// Forces the next packet to be treated as a new source even if its SSRC is unchanged (e.g.
    /// after a pause or a layer switch that reuses the SSRC with unrelated numbering).
    public mutating func resync() { resyncPending = true }

    /// Maps one incoming packet; nil means drop it (duplicate, too old, or from before a switch).
    public mutating func rewrite(
        ssrc: UInt32, sequenceNumber: UInt16, timestamp: UInt32, arrivalNanoseconds: Int64
    ) -> Output? {
        guard let currentSSRC, currentSSRC == ssrc, !resyncPending else {
            if !resyncPending, ssrc == previousSSRC { return nil }  // straggler from before a switch
            startSource(ssrc: ssrc, sequenceNumber: sequenceNumber, timestamp: timestamp, arrivalNanoseconds: arrivalNanoseconds)
            return Output(sequenceNumber: lastOutgoingSequence, timestamp: lastOutgoingTimestamp)
        }
        let extended = extend(sequenceNumber)
        let outgoingTimestamp = timestamp &+ timestampOffset
        if extended > highestIncoming {
            advance(to: extended)
            Self.set(&seen, extended)
            lastOutgoingSequence = sequenceNumber &+ epochs.newestOffset
            lastOutgoingTimestamp = outgoingTimestamp
            lastForwardNanoseconds = arrivalNanoseconds
            return Output(sequenceNumber: lastOutgoingSequence, timestamp: outgoingTimestamp)
        }
        guard isInWindow(extended), !Self.isSet(seen, extended), let offset = epochs.offset(forIncoming: extended) else { return nil }
        Self.set(&seen, extended)
        return Output(sequenceNumber: sequenceNumber &+ offset, timestamp: outgoingTimestamp)
    }

    /// Consumes a packet of the current source without forwarding it. Returns true when the
    /// outgoing sequence has no gap for it (it was newer than the newest: later packets close
    /// up). A late packet returns false but is still marked, so its duplicates are dropped and
    /// the NACK map does not offer it; other sources, duplicates and packets outside the window
    /// return false and change nothing. See the type documentation.
    @discardableResult
    public mutating func skip(ssrc: UInt32, sequenceNumber: UInt16) -> Bool {
        guard let currentSSRC, currentSSRC == ssrc, !resyncPending else { return false }
        let extended = extend(sequenceNumber)
        guard extended > highestIncoming else {
            guard isInWindow(extended), !Self.isSet(seen, extended), epochs.offset(forIncoming: extended) != nil else { return false }
            Self.set(&seen, extended)
            Self.set(&skipped, extended)
            return false
        }
        advance(to: extended)
        Self.set(&seen, extended)
        Self.set(&skipped, extended)
        let offset = epochs.newestOffset &- 1
        if epochs.newestStart == extended {
            // Nothing was received since the previous skip: one epoch covers the run.
            epochs.replaceNewest(start: extended + 1, offset: offset)
        } else {
            epochs.append(start: extended + 1, offset: offset)
        }
        // Numbers of packets still missing before the skipped one stay theirs.
        lastOutgoingSequence = UInt16(truncatingIfNeeded: extended) &+ offset
        return true
    }

    /// NACK reverse map: the incoming sequence number (of the current source) that was sent as
    /// `outgoingSequence`; nil if it was sent before the latest switch (or before the oldest
    /// remembered skip), not sent yet, or belongs to a packet that was skipped.
    public func incomingSequence(forOutgoing outgoingSequence: UInt16) -> UInt16? {
        guard currentSSRC != nil, Int16(bitPattern: lastOutgoingSequence &- outgoingSequence) >= 0 else { return nil }
        // Newest epoch first: where two epochs claim the number (the one a skip handed on), the
        // packet of the newer epoch carries it.
        for back in 0..<epochs.count {
            let epoch = epochs.fromNewest(back)
            let incoming = extend(outgoingSequence &- epoch.offset)
            guard incoming >= epoch.start else { continue }
            guard incoming <= highestIncoming else { return nil }
            if highestIncoming - incoming < Int64(Self.reorderWindow), Self.isSet(skipped, incoming) { return nil }
            return UInt16(truncatingIfNeeded: incoming)
        }
        return nil
    }

    // MARK: - Internals

    private mutating func startSource(ssrc: UInt32, sequenceNumber: UInt16, timestamp: UInt32, arrivalNanoseconds: Int64) {
        let outgoingSequence: UInt16
        let outgoingTimestamp: UInt32
        if currentSSRC == nil {
            // The very first source passes through unchanged.
            outgoingSequence = sequenceNumber
            outgoingTimestamp = timestamp
        } else {
            outgoingSequence = lastOutgoingSequence &+ 1
            outgoingTimestamp = lastOutgoingTimestamp &+ ticks(since: lastForwardNanoseconds, until: arrivalNanoseconds)
        }
        if currentSSRC != ssrc { previousSSRC = currentSSRC }
        currentSSRC = ssrc
        resyncPending = false
        timestampOffset = outgoingTimestamp &- timestamp
        // Start one cycle up so reordered packets just below stay non-negative when extended.
        highestIncoming = 0x1_0000 + Int64(sequenceNumber)
        epochs.reset(start: highestIncoming, offset: outgoingSequence &- sequenceNumber)
        seen = SIMD4(repeating: 0)
        skipped = SIMD4(repeating: 0)
        Self.set(&seen, highestIncoming)
        lastOutgoingSequence = outgoingSequence
        lastOutgoingTimestamp = outgoingTimestamp
        lastForwardNanoseconds = arrivalNanoseconds
    }

    /// Elapsed wall time in RTP clock ticks, at least 1 so timestamps strictly advance.
    private func ticks(since start: Int64, until end: Int64) -> UInt32 {
        let elapsed = UInt64(max(end &- start, 0))
        let rate = UInt64(clockRate)
        // Split to keep the product in range for any elapsed time.
        let wholeSeconds = elapsed / 1_000_000_000
        let remainder = elapsed % 1_000_000_000
        let ticks = wholeSeconds &* rate &+ (remainder * rate) / 1_000_000_000
        return UInt32(truncatingIfNeeded: max(ticks, 1))
    }

    /// Nearest extension of a 16-bit sequence number to the newest one seen.
    private func extend(_ sequenceNumber: UInt16) -> Int64 {
        let delta = Int16(bitPattern: sequenceNumber &- UInt16(truncatingIfNeeded: highestIncoming))
        return highestIncoming + Int64(delta)
    }

    /// Not newer than the newest, but recent enough for the `seen` bits to speak for it.
    private func isInWindow(_ extended: Int64) -> Bool {
        extended <= highestIncoming && highestIncoming - extended < Int64(Self.reorderWindow)
    }

    private mutating func advance(to extended: Int64) {
        let steps = extended - highestIncoming
        if steps >= Int64(Self.reorderWindow) {
            seen = SIMD4(repeating: 0)
            skipped = SIMD4(repeating: 0)
        } else {
            var next = highestIncoming + 1
            while next <= extended {
                Self.clear(&seen, next)
                Self.clear(&skipped, next)
                next += 1
            }
        }
        highestIncoming = extended
    }

    private static func isSet(_ bits: SIMD4<UInt64>, _ extended: Int64) -> Bool {
        let bit = Int(extended & Int64(Self.reorderWindow - 1))
        return bits[bit >> 6] & (1 << UInt64(bit & 63)) != 0
    }

    private static func set(_ bits: inout SIMD4<UInt64>, _ extended: Int64) {
        let bit = Int(extended & Int64(Self.reorderWindow - 1))
        bits[bit >> 6] |= 1 << UInt64(bit & 63)
    }

    private static func clear(_ bits: inout SIMD4<UInt64>, _ extended: Int64) {
        let bit = Int(extended & Int64(Self.reorderWindow - 1))
        bits[bit >> 6] &= ~(1 << UInt64(bit & 63))
    }
}

/// The sequence offsets of one source, in a fixed ring (no allocation): epoch i maps the
/// extended incoming numbers from its start up to the next epoch's start. The oldest start is
/// where the source begins as far as the rewriter still knows.
struct OffsetEpochs: Sendable {
    static let capacity = 64
    private var starts = SIMD64<Int64>(repeating: 0)
    private var offsets = SIMD64<UInt16>(repeating: 0)
    private var oldest = 0
    private(set) var count = 0

    var newestStart: Int64 { starts[index(fromNewest: 0)] }
    var newestOffset: UInt16 { offsets[index(fromNewest: 0)] }

    mutating func reset(start: Int64, offset: UInt16) {
        oldest = 0
        count = 1
        starts[0] = start
        offsets[0] = offset
    }

    /// Adds the newest epoch; when full, the oldest is forgotten.
    mutating func append(start: Int64, offset: UInt16) {
        if count == Self.capacity {
            oldest = (oldest + 1) % Self.capacity
        } else {
            count += 1
        }
        let newest = index(fromNewest: 0)
        starts[newest] = start
        offsets[newest] = offset
    }

    mutating func replaceNewest(start: Int64, offset: UInt16) {
        let newest = index(fromNewest: 0)
        starts[newest] = start
        offsets[newest] = offset
    }

    func fromNewest(_ back: Int) -> (start: Int64, offset: UInt16) {
        let slot = index(fromNewest: back)
        return (starts[slot], offsets[slot])
    }

    /// The offset of the epoch `extended` falls in; nil before the oldest one.
    func offset(forIncoming extended: Int64) -> UInt16? {
        for back in 0..<count {
            let epoch = fromNewest(back)
            if extended >= epoch.start { return epoch.offset }
        }
        return nil
    }

    private func index(fromNewest back: Int) -> Int { (oldest + count - 1 - back) % Self.capacity }
}
