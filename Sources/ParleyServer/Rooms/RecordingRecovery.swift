import Foundation
import Logging
import ParleyProtocol

/// At start: the recordings this node left running (it crashed or was killed) are over. Each
/// becomes `interrupted`, with the files its folder holds listed in the store and in a
/// manifest.json, so they can be found and downloaded like a finished recording's.
enum RecordingRecovery {
    static func recover(recordings: RecordingLog, node: String, directory: String, now: Int64, logger: Logger) async {
        let interrupted: [RecordingInfo]
        do {
            interrupted = try await recordings.markInterrupted(node: node, stoppedAt: now)
        } catch {
            logger.warning("could not mark interrupted recordings", metadata: ["error": "\(error)"])
            return
        }
        for var recording in interrupted {
            let folder = (directory as NSString).appendingPathComponent("\(Room.safePathComponent(recording.room))/\(recording.id)")
            recording.files = filesOnDisk(in: folder)
            recording.bytes = recording.files.reduce(0) { $0 + $1.bytes }
            recording.durationMs = max(0, (recording.stoppedAt ?? now) - recording.startedAt)
            try? await recordings.save(recording)
            writeManifest(recording, in: folder)
            logger.notice(
                "recording interrupted by a stop of this node", metadata: ["recording": "\(recording.id)", "files": "\(recording.files.count)"])
        }
    }

    /// What the recorder wrote before it stopped, by name (no track or timing: those were to be
    /// written at the end).
    static func filesOnDisk(in folder: String) -> [RecordingFileInfo] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return names.filter { $0 != "manifest.json" }.sorted().map { name in
            let path = (folder as NSString).appendingPathComponent(name)
            let bytes = ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.int64Value ?? 0
            let format = name.hasSuffix(".ogg") ? "ogg/opus" : name.hasSuffix(".webm") ? "webm/vp8" : "matroska/h264"
            return RecordingFileInfo(
                name: name, track: nil, participant: nil, kind: name.hasSuffix(".ogg") ? "audio" : "video", format: format, bytes: bytes,
                durationMs: 0, offsetMs: 0)
        }
    }

    static func writeManifest(_ recording: RecordingInfo, in folder: String) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard FileManager.default.fileExists(atPath: folder), let manifest = try? encoder.encode(recording) else { return }
        _ = FileManager.default.createFile(atPath: (folder as NSString).appendingPathComponent("manifest.json"), contents: manifest)
    }
}
