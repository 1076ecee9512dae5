import Foundation
import Testing
@testable import ParleyServer

/// When a recording stops by itself, and why a new one is refused: the pure rules, and the
/// measures they are given.
@Suite struct RecordingLimitsTests {
    let limits = RecordingLimits(maxDuration: .seconds(3600), roomQuotaBytes: 1_000_000, minFreeBytes: 500_000)

    @Test func eachLimitStopsWithItsReason() {
        #expect(limits.stopReason(elapsed: .seconds(10), roomBytes: 10, freeBytes: 10_000_000) == nil)
        #expect(limits.stopReason(elapsed: .seconds(3600), roomBytes: 10, freeBytes: 10_000_000) == "max_duration")
        #expect(limits.stopReason(elapsed: .seconds(10), roomBytes: 1_000_000, freeBytes: 10_000_000) == "room_quota")
        #expect(limits.stopReason(elapsed: .seconds(10), roomBytes: 10, freeBytes: 500_000) == "disk_full")
        #expect(limits.stopReason(elapsed: .seconds(10), roomBytes: 10, freeBytes: nil) == nil, "an unreadable disk stops nothing")
    }

    @Test func zeroMeansNoLimit() {
        let none = RecordingLimits(maxDuration: .zero, roomQuotaBytes: 0, minFreeBytes: 0)
        #expect(none.stopReason(elapsed: .seconds(1_000_000), roomBytes: .max, freeBytes: 0) == nil)
        #expect(none.refusal(roomBytes: .max, freeBytes: 0) == nil)
    }

    @Test func refusalsNameTheLimit() {
        #expect(limits.refusal(roomBytes: 2_000_000, freeBytes: 10_000_000)?.contains("recording.roomQuota") == true)
        #expect(limits.refusal(roomBytes: 0, freeBytes: 100)?.contains("recording.minFreeDisk") == true)
        #expect(limits.refusal(roomBytes: 0, freeBytes: 10_000_000) == nil)
    }

    @Test func theBytesOfAFolderAndTheFreeSpaceAreMeasured() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("parley-limits-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder + "/a/b", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        #expect(FileManager.default.createFile(atPath: folder + "/one", contents: Data(count: 1000)))
        #expect(FileManager.default.createFile(atPath: folder + "/a/b/two", contents: Data(count: 2345)))
        #expect(RecordingLimits.bytes(under: folder) == 3345)
        #expect(RecordingLimits.bytes(under: folder + "/missing") == 0)
        #expect((RecordingLimits.freeBytes(at: folder + "/not/yet/made") ?? 0) > 0, "measured on the nearest existing folder")
    }
}
