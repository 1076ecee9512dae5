/// The receiving side of transport-wide congestion control: the arrival time of each
/// transport-wide sequence number, reported back in feedback packets (every 100 ms or so, as
/// Chromium's and LiveKit's receivers do). Sequence numbers are unwrapped to 64 bits; a packet
/// that arrives after its number was reported is not reported again.
public struct TWCCRecorder: Sendable {
    /// The most packets one feedback packet reports on (its RTCP stays near 1 KB at worst).
    public static let maxPacketsPerFeedback = 400

    public let senderSSRC: UInt32
    public let mediaSSRC: UInt32
    /// Extended sequence number → arrival (µs), for those not yet reported.
    private var arrivals: [Int64: Int64] = [:]
    private var highest: Int64?
    /// The first extended sequence number not yet reported.
    private var nextToReport: Int64?
    private var feedbackCount: UInt8 = 0
    public private(set) var lateArrivals = 0

    public init(senderSSRC: UInt32, mediaSSRC: UInt32) {
        self.senderSSRC = senderSSRC
        self.mediaSSRC = mediaSSRC
    }

    /// Records that `sequenceNumber` arrived at `arrivalMicroseconds` (the receiver's clock).
    public mutating func packetArrived(sequenceNumber: UInt16, arrivalMicroseconds: Int64) {
        let extended = Self.unwrap(sequenceNumber, near: highest)
        if let next = nextToReport, extended < next {
            lateArrivals += 1
            return
        }
        if nextToReport == nil { nextToReport = extended }
        // A jump far ahead (a sender's restart) would leave a huge gap to report: start over.
        if let next = nextToReport, extended - next > Int64(UInt16.max) / 2 {
            arrivals.removeAll()
            nextToReport = extended
        }
        arrivals[extended] = arrivalMicroseconds
        if highest.map({ extended > $0 }) ?? true { highest = extended }
    }

    /// Feedback for everything recorded since the last call (several packets when there is
    /// much, or when an arrival is too far from the previous for one delta), then forgets it.
    public mutating func makeFeedback() -> [TWCCFeedback] {
        guard var next = nextToReport, let highest, next <= highest else { return [] }
        var feedbacks: [TWCCFeedback] = []
        while next <= highest {
            // The reference time is the first arrival's, rounded down to 64 ms.
            let arrivals = self.arrivals
            guard let firstArrival = (next...highest).lazy.compactMap({ arrivals[$0] }).first else { break }
            let reference = Int32(truncatingIfNeeded: Self.floorDivide(firstArrival, TWCCFeedback.referenceTimeMicroseconds))
            var previousTick = Int64(reference) * (TWCCFeedback.referenceTimeMicroseconds / TWCCFeedback.deltaTickMicroseconds)
            var packets: [TWCCFeedback.PacketStatus] = []
            var sequence = next
            while sequence <= highest, packets.count < Self.maxPacketsPerFeedback {
                let arrival = arrivals[sequence]
                if let arrival {
                    let tick = arrival / TWCCFeedback.deltaTickMicroseconds
                    // A delta must fit 16 signed bits of 250 µs ticks; past that, a new packet.
                    if !packets.isEmpty, abs(tick - previousTick) > Int64(Int16.max) { break }
                    previousTick = tick
                }
                packets.append(TWCCFeedback.PacketStatus(sequenceNumber: UInt16(truncatingIfNeeded: sequence), arrivalMicroseconds: arrival))
                sequence += 1
            }
            feedbacks.append(TWCCFeedback(
                senderSSRC: senderSSRC, mediaSSRC: mediaSSRC, baseSequenceNumber: UInt16(truncatingIfNeeded: next),
                referenceTime: reference, feedbackPacketCount: feedbackCount, packets: packets))
            feedbackCount &+= 1
            next = sequence
        }
        for sequence in (nextToReport ?? next)..<next { arrivals[sequence] = nil }
        nextToReport = next
        return feedbacks
    }

    /// The 64-bit sequence number nearest `reference` whose low 16 bits are `sequence`.
    static func unwrap(_ sequence: UInt16, near reference: Int64?) -> Int64 {
        guard let reference else { return Int64(sequence) }
        let delta = Int64(Int16(bitPattern: sequence &- UInt16(truncatingIfNeeded: reference)))
        return reference + delta
    }

    static func floorDivide(_ value: Int64, _ divisor: Int64) -> Int64 {
        value >= 0 ? value / divisor : -((-value + divisor - 1) / divisor)
    }
}
