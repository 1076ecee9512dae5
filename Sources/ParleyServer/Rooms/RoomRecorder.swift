import Dispatch
import Foundation
import NIOConcurrencyHelpers
import ParleyProtocol
import RTP
import Recording
import SFU

/// One running recording of a room, in `tracks` mode: a file per published track. It is the
/// SFU's tap, so it runs on the room's loop: a packet's payload is copied and handed to the
/// track's recorder (jitter buffer, depacketizer, container), and once a second what the
/// recorders produced goes to the files, which are written on the recording's own queue.
final class RoomRecorder: PublicationTap, @unchecked Sendable {
    final class Track {
        let publication: Publication
        let name: String
        let format: String
        let file: RecordingFile
        var opus: OpusTrackRecorder?
        var video: VideoTrackRecorder?
        var lastKeyframeRequest: UInt64 = 0

        init(publication: Publication, name: String, format: String, file: RecordingFile) {
            self.publication = publication
            self.name = name
            self.format = format
            self.file = file
        }

        var durationMs: Double { opus?.durationMs ?? video?.durationMs ?? 0 }
        var firstArrival: UInt64? { opus?.firstArrival ?? video?.firstArrival }
    }

    private(set) var info: RecordingInfo
    let directory: String
    let startedAt: UInt64
    private let queue: DispatchQueue
    private weak var sfu: SFURoom?
    private var tracks: [ObjectIdentifier: Track] = [:]
    /// Tracks that ended, finished on the queue; their file entries come back here.
    private let finishedFiles = NIOLockedValueBox<[RecordingFileInfo]>([])
    private var usedNames: Set<String> = []
    private var stopped = false

    init(info: RecordingInfo, directory: String, sfu: SFURoom) throws {
        self.info = info
        self.directory = directory
        self.sfu = sfu
        startedAt = sfu.port.now()
        queue = DispatchQueue(label: "parley.recording.\(info.id)")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for publication in sfu.publications { tap(sfu, published: publication) }
        sfu.port.addTickHandler(owner: self) { [weak self] now in self?.tick(now: now) }
    }

    // MARK: PublicationTap

    func tap(_ room: SFURoom, published publication: Publication) {
        guard !stopped, tracks[ObjectIdentifier(publication)] == nil, let codec = publication.codecs.first else { return }
        let kind = publication.kind == .audio ? "audio" : "video"
        let (format, fileExtension): (String, String)
        switch codec.name.lowercased() {
        case "opus": (format, fileExtension) = ("ogg/opus", "ogg")
        case "vp8": (format, fileExtension) = ("webm/vp8", "webm")
        case "h264": (format, fileExtension) = ("matroska/h264", "mkv")
        default: return
        }
        var name = "\(publication.participantSid)_\(publication.trackSid)_\(kind).\(fileExtension)"
        while usedNames.contains(name) { name = "\(UUID().uuidString.prefix(4))_" + name }
        usedNames.insert(name)
        let track = Track(
            publication: publication, name: name, format: format,
            file: RecordingFile(path: (directory as NSString).appendingPathComponent(name), queue: queue))
        switch format {
        case "ogg/opus": track.opus = OpusTrackRecorder(serial: UInt32.random(in: 1...UInt32.max))
        case "webm/vp8": track.video = VideoTrackRecorder(codec: .vp8)
        default: track.video = VideoTrackRecorder(codec: .h264)
        }
        tracks[ObjectIdentifier(publication)] = track
        if publication.kind == .video { room.requestKeyframe(publication) }
    }

    func tap(_ room: SFURoom, unpublished publication: Publication) {
        guard let track = tracks.removeValue(forKey: ObjectIdentifier(publication)) else { return }
        finish(track)
    }

    func tap(_ room: SFURoom, received packet: UnsafeRawBufferPointer, header: RTPHeader, from publication: Publication, now: UInt64) {
        guard let track = tracks[ObjectIdentifier(publication)], header.payloadLength > 0 else { return }
        let recorded = RecordedPacket(
            ssrc: header.ssrc, sequence: header.sequenceNumber, timestamp: header.timestamp, marker: header.marker,
            payload: Array(UnsafeRawBufferPointer(rebasing: packet[header.payloadRange])), arrival: now)
        if track.opus != nil { track.opus!.receive(recorded) } else { track.video?.receive(recorded) }
    }

    // MARK: Time

    private func tick(now: UInt64) {
        guard !stopped, now >= lastFlush + 1_000_000_000 else { return }
        lastFlush = now
        for track in tracks.values {
            if track.opus != nil {
                track.file.append(track.opus!.takeOutput(now: now))
            } else if track.video != nil {
                track.file.append(track.video!.takeOutput(now: now))
                if track.video!.needsKeyframe, now >= track.lastKeyframeRequest + 1_000_000_000 {
                    track.lastKeyframeRequest = now
                    sfu?.requestKeyframe(track.publication)
                }
            }
        }
    }

    private var lastFlush: UInt64 = 0

    private func finish(_ track: Track) {
        let offsetMs = Int64(((track.firstArrival ?? startedAt) &- startedAt) / 1_000_000)
        var entry = RecordingFileInfo(
            name: track.name, track: track.publication.trackSid, participant: track.publication.participantSid,
            kind: track.publication.kind == .audio ? "audio" : "video", format: track.format, bytes: 0,
            durationMs: Int64(track.durationMs), offsetMs: max(0, offsetMs))
        let tail: [UInt8]
        var patches: [(offset: Int, bytes: [UInt8])] = []
        if track.opus != nil {
            tail = track.opus!.finish()
            entry.durationMs = Int64(track.opus!.durationMs)
        } else {
            let finished = track.video!.finish()
            tail = finished.tail
            patches = finished.patches.map { ($0.offset, $0.bytes) }
            entry.durationMs = track.video!.framesWritten > 0 ? Int64(track.video!.durationMs) : 0
        }
        let box = finishedFiles
        let finishedEntry = entry
        track.file.finish(tail: tail, patches: patches) { result in
            var entry = finishedEntry
            if case .success(let bytes) = result { entry.bytes = bytes }
            box.withLockedValue { $0.append(entry) }
        }
    }

    /// Stops taking packets and hands every track's last bytes to its file. On the room's loop.
    func stopCapturing() {
        guard !stopped else { return }
        stopped = true
        sfu?.port.removeTickHandler(owner: self)
        stoppedAtMonotonic = sfu?.port.now() ?? startedAt
        for track in tracks.values { finish(track) }
        tracks.removeAll()
    }

    private var stoppedAtMonotonic: UInt64 = 0

    /// Waits for the files to be closed (the queue runs the finishes in order), writes
    /// manifest.json and returns the recording as it ended. Anywhere, after `stopCapturing`.
    func finalize(stoppedAt: Int64) async -> RecordingInfo {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in queue.async { continuation.resume() } }
        let files = finishedFiles.withLockedValue { $0 }.sorted { $0.name < $1.name }
        info.state = "stopped"
        info.stoppedAt = stoppedAt
        info.files = files
        info.bytes = files.reduce(0) { $0 + $1.bytes }
        info.durationMs = Int64((stoppedAtMonotonic &- startedAt) / 1_000_000)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        if let manifest = try? encoder.encode(info) {
            FileManager.default.createFile(atPath: (directory as NSString).appendingPathComponent("manifest.json"), contents: manifest)
        }
        return info
    }

    /// Files written so far, for a `recording` event while it runs.
    var activeFiles: [String] { tracks.values.map(\.name).sorted() }
}
