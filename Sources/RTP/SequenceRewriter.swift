/// Per-down-track sequence/timestamp "munger": the subscriber sees one continuous RTP stream
/// with a fixed SSRC while the SFU switches the source behind it (publisher restart with a new
/// SSRC, simulcast layer change, unmute after a pause).
///
/// Rules:
/// - The first packet of a new source continues the outgoing sequence at last + 1 and advances
///   the outgoing timestamp by the wall time since the last forwarded packet × clock rate (at
///   least 1 tick), so jitter buffers and the NACK logic of the receiver stay calm.
/// - Within a source, packets keep their incoming spacing (gaps stay gaps, so the receiver can
///   NACK them). Reordered packets within `reorderWindow` map with the current offsets;
///   duplicates, packets older than the window and packets from before the latest switch are
///   dropped (nil).
/// - Sequence arithmetic wraps at 16 bits, timestamps at 32 bits.
///
/// Skipping (`skip`): the SFU may drop a packet on purpose (e.g. padding-only) without leaving a
/// gap, but only the packet that directly follows the newest forwarded one (incoming highest + 1).
/// The skip starts a new offset epoch: late packets from before it are then dropped and the NACK
/// reverse map no longer reaches before it, because their outgoing numbers can no longer be
/// derived from a single offset. Anything else passed to `skip` returns false and should be
/// forwarded (or dropped, leaving a gap the receiver will NACK in vain).
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

    public let clockRate: UInt32
    /// The SSRC every forwarded packet carries (the caller writes it; kept here for reference).
    public let outgoingSSRC: UInt32

    public private(set) var currentSSRC: UInt32?
    /// The source before the latest switch: its stragglers are dropped rather than switched to.
    public private(set) var previousSSRC: UInt32?
    private var resyncPending = false
    private var sequenceOffset: UInt16 = 0
    private var timestampOffset: UInt32 = 0
    /// Newest incoming sequence of the current source, extended beyond 16 bits.
    private var highestIncoming: Int64 = 0
    /// Incoming packets below this (extended) belong to an earlier epoch and are dropped.
    private var epochStartIncoming: Int64 = 0
    /// First outgoing sequence number of the current epoch, for the reverse map.
    private var epochStartOutgoing: UInt16 = 0
    public private(set) var lastOutgoingSequence: UInt16 = 0
    public private(set) var lastOutgoingTimestamp: UInt32 = 0
    private var lastForwardNanoseconds: Int64 = 0
    /// Bit per incoming sequence in (highest − window, highest]: forwarded already.
    private var seen = SIMD4<UInt64>(repeating: 0)

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
        let output = Output(sequenceNumber: sequenceNumber &+ sequenceOffset, timestamp: timestamp &+ timestampOffset)
        if extended > highestIncoming {
            advance(to: extended)
            markSeen(extended)
            lastOutgoingSequence = output.sequenceNumber
            lastOutgoingTimestamp = output.timestamp
            lastForwardNanoseconds = arrivalNanoseconds
            return output
        }
        guard extended >= epochStartIncoming, highestIncoming - extended < Int64(Self.reorderWindow),
            !isSeen(extended)
        else { return nil }
        markSeen(extended)
        return output
    }

    /// Consumes the next in-order packet without forwarding it and without leaving a gap in the
    /// outgoing sequence. Returns false (nothing changed) unless the packet is from the current
    /// source and directly follows the newest one; see the type documentation.
    public mutating func skip(ssrc: UInt32, sequenceNumber: UInt16) -> Bool {
        guard let currentSSRC, currentSSRC == ssrc, !resyncPending else { return false }
        let extended = extend(sequenceNumber)
        guard extended == highestIncoming + 1 else { return false }
        advance(to: extended)
        markSeen(extended)
        sequenceOffset &-= 1
        epochStartIncoming = extended + 1
        epochStartOutgoing = lastOutgoingSequence &+ 1
        return true
    }

    /// NACK reverse map: the incoming sequence number (of the current source) that was sent as
    /// `outgoingSequence`; nil if it was sent before the latest switch/skip or not sent yet.
    public func incomingSequence(forOutgoing outgoingSequence: UInt16) -> UInt16? {
        guard currentSSRC != nil else { return nil }
        let sinceEpochStart = Int16(bitPattern: outgoingSequence &- epochStartOutgoing)
        let beforeLast = Int16(bitPattern: lastOutgoingSequence &- outgoingSequence)
        guard sinceEpochStart >= 0, beforeLast >= 0 else { return nil }
        return outgoingSequence &- sequenceOffset
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
        sequenceOffset = outgoingSequence &- sequenceNumber
        timestampOffset = outgoingTimestamp &- timestamp
        // Start one cycle up so reordered packets just below stay non-negative when extended.
        highestIncoming = 0x1_0000 + Int64(sequenceNumber)
        epochStartIncoming = highestIncoming
        epochStartOutgoing = outgoingSequence
        seen = SIMD4(repeating: 0)
        markSeen(highestIncoming)
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

    private mutating func advance(to extended: Int64) {
        let steps = extended - highestIncoming
        if steps >= Int64(Self.reorderWindow) {
            seen = SIMD4(repeating: 0)
        } else {
            var next = highestIncoming + 1
            while next <= extended {
                setSeen(next, false)
                next += 1
            }
        }
        highestIncoming = extended
    }

    private func isSeen(_ extended: Int64) -> Bool {
        let bit = Int(extended & Int64(Self.reorderWindow - 1))
        return seen[bit >> 6] & (1 << UInt64(bit & 63)) != 0
    }

    private mutating func markSeen(_ extended: Int64) { setSeen(extended, true) }

    private mutating func setSeen(_ extended: Int64, _ value: Bool) {
        let bit = Int(extended & Int64(Self.reorderWindow - 1))
        let mask: UInt64 = 1 << UInt64(bit & 63)
        if value { seen[bit >> 6] |= mask } else { seen[bit >> 6] &= ~mask }
    }
}
