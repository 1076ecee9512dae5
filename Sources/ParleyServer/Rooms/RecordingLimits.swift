#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// When a running recording must stop by itself: it ran its longest, its room's recordings fill
/// their quota, or the disk is nearly full. Stopping then (state `stopped`, the reason given)
/// leaves playable files, where writing on until the store's writes fail would not. Pure: the
/// measures are passed in.
struct RecordingLimits: Sendable, Equatable {
    /// Zero means no limit.
    var maxDuration: Duration
    /// Bytes of one room's recordings on this node's disk; zero means no quota.
    var roomQuotaBytes: Int64
    /// Free bytes the recordings' file system keeps; zero means none kept.
    var minFreeBytes: Int64

    static let checkInterval: Duration = .seconds(2)

    /// `max_duration`, `room_quota` or `disk_full`, or nil to go on.
    func stopReason(elapsed: Duration, roomBytes: Int64, freeBytes: Int64?) -> String? {
        if maxDuration > .zero, elapsed >= maxDuration { return "max_duration" }
        if roomQuotaBytes > 0, roomBytes >= roomQuotaBytes { return "room_quota" }
        if minFreeBytes > 0, let freeBytes, freeBytes <= minFreeBytes { return "disk_full" }
        return nil
    }

    /// Why a new recording may not start, or nil.
    func refusal(roomBytes: Int64, freeBytes: Int64?) -> String? {
        if roomQuotaBytes > 0, roomBytes >= roomQuotaBytes {
            return "the room's recordings fill their quota (\(roomBytes) of \(roomQuotaBytes) bytes; recording.roomQuota)"
        }
        if minFreeBytes > 0, let freeBytes, freeBytes <= minFreeBytes {
            return "the disk is nearly full (\(freeBytes) bytes free, recording.minFreeDisk keeps \(minFreeBytes))"
        }
        return nil
    }

    /// Bytes of the files under `directory`, however deep.
    static func bytes(under directory: String) -> Int64 {
        guard let walker = FileManager.default.enumerator(atPath: directory) else { return 0 }
        var total: Int64 = 0
        while walker.nextObject() != nil {
            let attributes = walker.fileAttributes
            if attributes?[.type] as? FileAttributeType == .typeRegular, let size = attributes?[.size] as? NSNumber {
                total += size.int64Value
            }
        }
        return total
    }

    /// Bytes free to an unprivileged writer on the file system holding `path` (its nearest
    /// existing ancestor), or nil when it cannot be read.
    static func freeBytes(at path: String) -> Int64? {
        var candidate = path
        while !FileManager.default.fileExists(atPath: candidate), candidate != "/", !candidate.isEmpty {
            candidate = (candidate as NSString).deletingLastPathComponent
        }
        var stats = statvfs()
        guard statvfs(candidate.isEmpty ? "." : candidate, &stats) == 0 else { return nil }
        return Int64(stats.f_bavail) * Int64(stats.f_frsize)
    }
}
