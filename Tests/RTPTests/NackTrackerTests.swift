import Testing
@testable import RTP

private let millisecond: Int64 = 1_000_000

@Suite struct NackTrackerTests {
    func receive(_ tracker: inout NackTracker, _ sequenceNumbers: [UInt16]) {
        for sequenceNumber in sequenceNumbers { tracker.packetReceived(sequenceNumber: sequenceNumber) }
    }

    @Test func recordsGapsAndRetriesWithInterval() {
        var tracker = NackTracker(maxRetries: 3)
        receive(&tracker, [1, 5])
        #expect(tracker.missingCount == 3)
        #expect(Array(tracker.dueNacks(nowNanoseconds: 0)) == [2, 3, 4])
        #expect(tracker.dueNacks(nowNanoseconds: 10 * millisecond).isEmpty)  // within the interval
        #expect(Array(tracker.dueNacks(nowNanoseconds: 20 * millisecond)) == [2, 3, 4])
        // A custom interval (e.g. the measured RTT).
        #expect(tracker.dueNacks(nowNanoseconds: 50 * millisecond, retryIntervalNanoseconds: 100 * millisecond).isEmpty)
        #expect(Array(tracker.dueNacks(nowNanoseconds: 120 * millisecond, retryIntervalNanoseconds: 100 * millisecond)) == [2, 3, 4])
        // Three attempts made: given up.
        #expect(tracker.dueNacks(nowNanoseconds: 1_000 * millisecond).isEmpty)
        #expect(tracker.missingCount == 0)
    }

    @Test func lateArrivalClears() {
        var tracker = NackTracker()
        receive(&tracker, [10, 14])
        #expect(tracker.isMissing(12))
        receive(&tracker, [12])
        #expect(!tracker.isMissing(12))
        #expect(Array(tracker.dueNacks(nowNanoseconds: 0)) == [11, 13])
        receive(&tracker, [11, 13])
        #expect(tracker.missingCount == 0)
        #expect(tracker.dueNacks(nowNanoseconds: 100 * millisecond).isEmpty)
    }

    @Test func newGapsAfterRetriesStillNacked() {
        var tracker = NackTracker(maxRetries: 1)
        receive(&tracker, [1, 3])
        #expect(Array(tracker.dueNacks(nowNanoseconds: 0)) == [2])
        receive(&tracker, [6])
        #expect(Array(tracker.dueNacks(nowNanoseconds: 1)) == [4, 5])
    }

    @Test func hugeJumpResets() {
        var tracker = NackTracker()
        receive(&tracker, [1, 3])
        receive(&tracker, [3000])
        #expect(tracker.missingCount == 0)
        #expect(tracker.dueNacks(nowNanoseconds: 0).isEmpty)
        receive(&tracker, [3002])
        #expect(Array(tracker.dueNacks(nowNanoseconds: 0)) == [3001])
        // A big backward jump is a restart too.
        receive(&tracker, [100])
        #expect(tracker.missingCount == 0)
    }

    @Test func gapAcrossWrap() {
        var tracker = NackTracker()
        receive(&tracker, [65533, 1])
        #expect(Array(tracker.dueNacks(nowNanoseconds: 0)) == [65534, 65535, 0])
    }

    @Test func batchIsBoundedAndOldestFirst() {
        var tracker = NackTracker()
        receive(&tracker, [0, 101])
        #expect(tracker.missingCount == 100)
        let first = tracker.dueNacks(nowNanoseconds: 0)
        #expect(first.count == NackBatch.capacity)
        #expect(first.first == 1 && first.last == 64)
        let second = tracker.dueNacks(nowNanoseconds: 0)
        #expect(Array(second) == Array(65...100))
        #expect(tracker.dueNacks(nowNanoseconds: 0, limit: 2).isEmpty)
        #expect(tracker.dueNacks(nowNanoseconds: 20 * millisecond, limit: 2).count == 2)
    }

    @Test func gapsOlderThanWindowAreGivenUp() {
        var tracker = NackTracker()
        receive(&tracker, [0, 10])  // 1...9 missing
        for sequence: UInt16 in 11...300 { tracker.packetReceived(sequenceNumber: sequence) }
        #expect(tracker.missingCount == 0)
        #expect(tracker.dueNacks(nowNanoseconds: 0).isEmpty)
    }
}
