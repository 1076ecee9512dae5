/// What SRTP keeps per SSRC: the highest packet index seen or sent (RFC 3711's ROC and s_l in
/// one number), the replay window, and for SRTCP the next index to send.
struct SRTPStream {
    static let windowSize: UInt64 = 1024
    static let windowWords = Int(windowSize / 64)
    let ssrc: UInt32
    private(set) var highest: UInt64 = 0
    private var started = false
    private var nextIndex: UInt32 = 1
    /// Bit `i % windowSize` says index i (within windowSize of `highest`) has been accepted.
    /// Only inbound streams accept, so the first `accept` allocates it; the table frees it. Kept
    /// out of line so that a subscriber session's streams share a cache line.
    fileprivate var window: UnsafeMutablePointer<UInt64>?

    init(ssrc: UInt32) { self.ssrc = ssrc }

    /// RFC 3711 3.3.1 and appendix A: the packet index a sequence number most likely stands for,
    /// guessing the rollover counter from the highest index so far.
    func estimate(_ sequence: UInt16) -> UInt64 {
        guard started else { return UInt64(sequence) }
        let rollover = highest >> 16
        let highestSequence = Int(highest & 0xFFFF)
        var guess = rollover
        if highestSequence < 0x8000 {
            if Int(sequence) - highestSequence > 0x8000, rollover > 0 { guess = rollover - 1 }
        } else if highestSequence - 0x8000 > Int(sequence) {
            guess = rollover + 1
        }
        return guess << 16 | UInt64(sequence)
    }

    /// Outbound: the index becomes the newest if it is (a retransmission is not).
    mutating func advance(to index: UInt64) {
        if !started || index > highest {
            highest = index
            started = true
        }
    }

    /// Not yet accepted and not older than the window.
    func isFresh(_ index: UInt64) -> Bool {
        guard started, index <= highest else { return true }
        guard highest - index < Self.windowSize else { return false }
        guard let window else { return true }
        let slot = index % Self.windowSize
        return window[Int(slot / 64)] & (1 << (slot % 64)) == 0
    }

    /// Inbound, after authentication: marks `index` seen, sliding the window forward.
    mutating func accept(_ index: UInt64) {
        let window: UnsafeMutablePointer<UInt64>
        if let existing = self.window {
            window = existing
        } else {
            window = .allocate(capacity: Self.windowWords)
            window.initialize(repeating: 0, count: Self.windowWords)
            self.window = window
        }
        if !started {
            started = true
            highest = index
        } else if index > highest {
            if index - highest >= Self.windowSize {
                window.update(repeating: 0, count: Self.windowWords)
            } else {
                var cleared = highest + 1
                while cleared < index {
                    let slot = cleared % Self.windowSize
                    window[Int(slot / 64)] &= ~(1 << (slot % 64))
                    cleared += 1
                }
            }
            highest = index
        }
        let slot = index % Self.windowSize
        window[Int(slot / 64)] |= 1 << (slot % 64)
    }

    /// SRTCP's 31-bit index for the next packet sent.
    mutating func nextRTCPIndex() -> UInt32 {
        let index = nextIndex
        nextIndex = nextIndex == 0x7FFF_FFFF ? 0 : nextIndex + 1
        return index
    }
}

/// The streams of one SRTP session by SSRC. A subscriber's session carries one SSRC per track
/// it receives; the last one used is checked first since packets come in runs. The streams sit
/// in memory of the table's own, not an array: the packet path then takes no reference count and
/// makes no uniqueness check on a line that is usually cold.
struct SRTPStreams: ~Copyable {
    private var streams: UnsafeMutablePointer<SRTPStream>
    private var count = 0
    private var capacity: Int
    private var slots: [UInt32: Int] = [:]
    private var lastSlot = 0

    init() {
        capacity = 4
        streams = .allocate(capacity: capacity)
    }

    deinit {
        for slot in 0..<count { streams[slot].window?.deallocate() }
        streams.deinitialize(count: count)
        streams.deallocate()
    }

    private mutating func slot(of ssrc: UInt32) -> Int? {
        if lastSlot < count, streams[lastSlot].ssrc == ssrc { return lastSlot }
        // A few streams (the usual case) are found faster by looking than by hashing.
        if count <= 8 {
            for slot in 0..<count where streams[slot].ssrc == ssrc {
                lastSlot = slot
                return slot
            }
            return nil
        }
        guard let slot = slots[ssrc] else { return nil }
        lastSlot = slot
        return slot
    }

    /// The table's first lines (a subscriber session's few streams), for the forwarding loop.
    @inline(__always)
    func prefetch() { Prefetch.memory(streams, lines: 2) }

    /// Runs `body` on the stream of `ssrc`, making it if it is new.
    mutating func withStream<Result>(_ ssrc: UInt32, _ body: (inout SRTPStream) -> Result) -> Result {
        let slot: Int
        if let known = self.slot(of: ssrc) {
            slot = known
        } else {
            if count == capacity { grow() }
            slot = count
            (streams + slot).initialize(to: SRTPStream(ssrc: ssrc))
            count += 1
            slots[ssrc] = slot
            lastSlot = slot
        }
        return body(&streams[slot])
    }

    /// Runs `body` on the stream of `ssrc` if there is one.
    mutating func peek<Result>(_ ssrc: UInt32, _ body: (SRTPStream) -> Result) -> Result? {
        guard let slot = slot(of: ssrc) else { return nil }
        return body(streams[slot])
    }

    private mutating func grow() {
        let larger = UnsafeMutablePointer<SRTPStream>.allocate(capacity: capacity * 2)
        larger.moveInitialize(from: streams, count: count)
        streams.deallocate()
        streams = larger
        capacity *= 2
    }
}
