/// Reception statistics for one incoming SSRC, following RFC 3550 appendix A.1 (sequence
/// validation with cycles and optional probation), A.3 (expected/lost/fraction) and A.8
/// (interarrival jitter). Produces the report block the SFU sends upstream in RR/SR packets.
///
/// Times are passed in by the caller: arrival times in RTP clock units for jitter, and
/// nanoseconds on any monotonic clock for the DLSR delay.
public struct ReceiveStatistics: Sendable {
    static let sequenceModulus: UInt32 = 1 << 16
    /// RFC 3550 A.1: a jump of up to this many packets ahead is accepted as loss.
    static let maxDropout: UInt16 = 3000
    /// RFC 3550 A.1: packets up to this many behind count as reordered, not a restart.
    static let maxMisorder: UInt16 = 100

    public let ssrc: UInt32
    /// Packets needed in sequence before a new source is trusted (RFC 3550 suggests 2; 0 or 1
    /// accepts the first packet immediately, which suits SRTP-authenticated streams).
    public let minSequential: Int

    private var started = false
    private var probation = 0
    private var maxSequence: UInt16 = 0
    private var cycles: UInt32 = 0
    private var baseSequence: UInt32 = 0
    /// RFC 3550 `bad_seq`: the sequence that would confirm a restart after a large jump.
    private var badSequence: UInt32 = sequenceModulus + 1
    public private(set) var received: UInt32 = 0
    private var expectedPrior: UInt32 = 0
    private var receivedPrior: UInt32 = 0

    private var lastTransit: UInt32 = 0
    private var hasTransit = false
    /// Jitter × 16 (A.8's integer form keeps four fractional bits).
    private var scaledJitter: UInt32 = 0

    private var lastSenderReport: UInt32 = 0
    private var lastSenderReportArrival: Int64 = 0
    private var hasSenderReport = false

    public init(ssrc: UInt32, minSequential: Int = 0) {
        self.ssrc = ssrc
        self.minSequential = max(minSequential, 0)
    }

    /// Highest sequence number received, with the wrap count in the upper 16 bits.
    public var extendedHighestSequence: UInt32 { cycles &+ UInt32(maxSequence) }

    /// Packets expected since the base sequence (RFC 3550 A.3).
    public var expected: UInt32 { started && probation == 0 ? extendedHighestSequence &- baseSequence &+ 1 : 0 }

    /// Cumulative packets lost, clamped to the 24-bit signed field (negative with duplicates).
    public var cumulativeLost: Int32 {
        let lost = Int64(expected) - Int64(received)
        return Int32(min(max(lost, -0x80_0000), 0x7F_FFFF))
    }

    /// Interarrival jitter in RTP clock units.
    public var jitter: UInt32 { scaledJitter >> 4 }

    /// Records one received packet. Returns false when the packet was not counted (probation,
    /// or a large jump not yet confirmed as a restart).
    @discardableResult
    public mutating func packetReceived(sequenceNumber: UInt16, rtpTimestamp: UInt32, arrival: UInt32) -> Bool {
        guard updateSequence(sequenceNumber) else { return false }
        updateJitter(rtpTimestamp: rtpTimestamp, arrival: arrival)
        return true
    }

    /// Remembers the NTP time of the latest SR from this source for LSR/DLSR.
    public mutating func senderReportReceived(ntp: NTPTimestamp, arrivalNanoseconds: Int64) {
        lastSenderReport = ntp.middle32
        lastSenderReportArrival = arrivalNanoseconds
        hasSenderReport = true
    }

    /// Builds the report block and starts a new interval for `fractionLost`.
    public mutating func makeReportBlock(nowNanoseconds: Int64) -> ReportBlock {
        let expectedNow = expected
        let expectedInterval = expectedNow &- expectedPrior
        let receivedInterval = received &- receivedPrior
        expectedPrior = expectedNow
        receivedPrior = received
        let lostInterval = Int64(expectedInterval) - Int64(receivedInterval)
        let fraction: UInt8 =
            (expectedInterval == 0 || lostInterval <= 0)
            ? 0 : UInt8(truncatingIfNeeded: min((lostInterval << 8) / Int64(expectedInterval), 255))

        var delay: UInt32 = 0
        if hasSenderReport {
            // Delay in 1/65536 s; the split keeps the multiplication in range.
            let elapsed = UInt64(max(nowNanoseconds &- lastSenderReportArrival, 0))
            let units = (elapsed / 1_000_000_000) &* 65536 &+ ((elapsed % 1_000_000_000) << 16) / 1_000_000_000
            delay = UInt32(min(units, UInt64(UInt32.max)))
        }
        return ReportBlock(
            ssrc: ssrc, fractionLost: fraction, cumulativeLost: cumulativeLost,
            extendedHighestSequence: extendedHighestSequence, jitter: jitter,
            lastSenderReport: hasSenderReport ? lastSenderReport : 0, delaySinceLastSenderReport: delay)
    }

    // MARK: - RFC 3550 A.1

    private mutating func initSequence(_ sequenceNumber: UInt16) {
        baseSequence = UInt32(sequenceNumber)
        maxSequence = sequenceNumber
        badSequence = Self.sequenceModulus + 1
        cycles = 0
        received = 0
        receivedPrior = 0
        expectedPrior = 0
        hasTransit = false
    }

    private mutating func updateSequence(_ sequenceNumber: UInt16) -> Bool {
        if !started {
            started = true
            initSequence(sequenceNumber)
            if minSequential <= 1 {
                received = 1
                return true
            }
            maxSequence = sequenceNumber &- 1
            probation = minSequential
        }
        let delta = sequenceNumber &- maxSequence
        if probation > 0 {
            if sequenceNumber == maxSequence &+ 1 {
                probation -= 1
                maxSequence = sequenceNumber
                if probation == 0 {
                    initSequence(sequenceNumber)
                    received = 1
                    return true
                }
            } else {
                probation = minSequential - 1
                maxSequence = sequenceNumber
            }
            return false
        } else if delta < Self.maxDropout {
            if sequenceNumber < maxSequence { cycles &+= Self.sequenceModulus }  // wrapped
            maxSequence = sequenceNumber
        } else if delta <= UInt16(Self.sequenceModulus - UInt32(Self.maxMisorder)) {
            // A very large jump: accept it as a restart only if the next packet follows it.
            if UInt32(sequenceNumber) == badSequence {
                initSequence(sequenceNumber)
            } else {
                badSequence = (UInt32(sequenceNumber) &+ 1) & (Self.sequenceModulus - 1)
                return false
            }
        }  // else: duplicate or reordered, counted below
        received &+= 1
        return true
    }

    // MARK: - RFC 3550 A.8

    private mutating func updateJitter(rtpTimestamp: UInt32, arrival: UInt32) {
        let transit = arrival &- rtpTimestamp
        defer {
            lastTransit = transit
            hasTransit = true
        }
        guard hasTransit else { return }
        let difference = Int32(bitPattern: transit &- lastTransit).magnitude
        // J += (|D| − J) / 16, in the ×16 integer form of A.8.
        scaledJitter = scaledJitter &+ difference &- ((scaledJitter &+ 8) >> 4)
    }
}
