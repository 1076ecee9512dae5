import Dispatch
import Foundation
import NIOConcurrencyHelpers

/// What one recording (the server's, or the recording bot's) writes into its folder: a file per
/// track and, for `mix` and `both`, one mixed file. Packets come in on the caller's loop; once a
/// second `flush` hands what was produced to `queue`, where files are written and the mix made.
/// Not thread-safe: the caller keeps it on one loop (the queue work is its own); `@unchecked
/// Sendable` so that loop's closures can hold it.
public final class RecordingSession: @unchecked Sendable {
    public struct TrackInfo: Sendable {
        public var trackSid: String
        public var participantSid: String
        /// `audio` or `video`.
        public var kind: String
        /// Lower-case codec name: `opus`, `vp8`, `h264`.
        public var codec: String

        public init(trackSid: String, participantSid: String, kind: String, codec: String) {
            self.trackSid = trackSid
            self.participantSid = participantSid
            self.kind = kind
            self.codec = codec
        }
    }

    /// The file entries `finish` reports, as the manifest lists them.
    public typealias FileEntry = RecordedFile

    final class Track {
        let info: TrackInfo
        let name: String
        let format: String
        let file: RecordingFile
        var opus: OpusTrackRecorder?
        var video: VideoTrackRecorder?
        var lastKeyframeRequest: UInt64 = 0

        init(info: TrackInfo, name: String, format: String, file: RecordingFile) {
            self.info = info
            self.name = name
            self.format = format
            self.file = file
        }
    }

    /// The mixer and its file, used only on `queue`.
    final class Mix: @unchecked Sendable {
        let mixer: AudioMixer
        let file: RecordingFile
        var lastPosition: Int64 = 0
        init(mixer: AudioMixer, file: RecordingFile) {
            self.mixer = mixer
            self.file = file
        }
    }

    public static let mixFileName = "mix.ogg"
    public let directory: String
    public let startedAt: UInt64
    public let recordsTracks: Bool
    let queue: DispatchQueue
    private let mix: Mix?
    private var tracks: [String: Track] = [:]
    private var feeds: [String: MixFeed] = [:]
    private var usedNames: Set<String> = []
    private let finished = NIOLockedValueBox<[FileEntry]>([])
    private let errors = NIOLockedValueBox<[String]>([])
    /// Asked to deliver a keyframe for a video track (a PLI upstream, or from a bot: nothing).
    public var requestKeyframe: ((String) -> Void)?

    /// `mode`: `tracks`, `mix` or `both`. Makes the folder.
    public init(directory: String, mode: String, startedAt: UInt64, label: String) throws {
        self.directory = directory
        self.startedAt = startedAt
        queue = DispatchQueue(label: "parley.recording.\(label)")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        recordsTracks = mode != "mix"
        if mode != "tracks" {
            mix = Mix(
                mixer: try AudioMixer(serial: UInt32.random(in: 1...UInt32.max)),
                file: RecordingFile(path: (directory as NSString).appendingPathComponent(Self.mixFileName), queue: queue))
        } else {
            mix = nil
        }
    }

    /// Blocks until the queue has done what was handed to it (benchmarks, tests).
    public func waitUntilWritten() { queue.sync {} }

    /// Files being written, by name.
    public var activeFiles: [String] { tracks.values.map(\.name).sorted() }

    /// Starts recording a track (idempotent); false when its codec is not recordable.
    /// Letters, digits, `-` and `_` of `text`, others as `_`, at most 64: never a path separator,
    /// `..` or an empty name.
    static func safeFileComponent(_ text: String) -> String {
        let safe = String(text.unicodeScalars.prefix(64).map { scalar -> Character in
            scalar.isASCII && (CharacterSet.alphanumerics.contains(scalar) || scalar == "-" || scalar == "_") ? Character(scalar) : "_"
        })
        return safe.isEmpty ? "_" : safe
    }

    @discardableResult
    public func addTrack(_ info: TrackInfo) -> Bool {
        if mix != nil, info.codec == "opus", feeds[info.trackSid] == nil { feeds[info.trackSid] = MixFeed(startedAt: startedAt) }
        guard recordsTracks, tracks[info.trackSid] == nil else { return true }
        let (format, fileExtension): (String, String)
        switch info.codec {
        case "opus": (format, fileExtension) = ("ogg/opus", "ogg")
        case "vp8": (format, fileExtension) = ("webm/vp8", "webm")
        case "h264": (format, fileExtension) = ("matroska/h264", "mkv")
        default: return false
        }
        // The sids may come from a server we do not trust (`parley record` names files after
        // the msid it was sent): only safe characters reach the file system.
        let parts = [info.participantSid, info.trackSid, info.kind].map(Self.safeFileComponent)
        var name = parts.joined(separator: "_") + ".\(fileExtension)"
        while usedNames.contains(name) { name = "\(UUID().uuidString.prefix(4))_" + name }
        usedNames.insert(name)
        let track = Track(
            info: info, name: name, format: format,
            file: RecordingFile(path: (directory as NSString).appendingPathComponent(name), queue: queue))
        switch info.codec {
        case "opus": track.opus = OpusTrackRecorder(serial: UInt32.random(in: 1...UInt32.max))
        case "vp8": track.video = VideoTrackRecorder(codec: .vp8)
        default: track.video = VideoTrackRecorder(codec: .h264)
        }
        tracks[info.trackSid] = track
        if info.kind == "video" { requestKeyframe?(info.trackSid) }
        return true
    }

    public func isRecording(_ trackSid: String) -> Bool { tracks[trackSid] != nil || feeds[trackSid] != nil }

    /// One packet of a track (its payload copied by the caller).
    public func receive(_ packet: RecordedPacket, track trackSid: String) {
        if let track = tracks[trackSid] {
            if track.opus != nil { track.opus!.receive(packet) } else { track.video?.receive(packet) }
        }
        feeds[trackSid]?.receive(packet)
    }

    /// A track ended: its file is finished; the mix goes on without it.
    public func removeTrack(_ trackSid: String) {
        if var feed = feeds.removeValue(forKey: trackSid) { submitToMix([(trackSid, feed.drain())], horizon: nil, removing: [trackSid]) }
        if let track = tracks.removeValue(forKey: trackSid) { finish(track) }
    }

    /// About once a second: what the recorders produced goes to the files; the mix is made up
    /// to a second ago.
    public func flush(now: UInt64) {
        for track in tracks.values {
            if track.opus != nil {
                track.file.append(track.opus!.takeOutput(now: now))
            } else if track.video != nil {
                track.file.append(track.video!.takeOutput(now: now))
                if track.video!.needsKeyframe, now >= track.lastKeyframeRequest + 1_000_000_000 {
                    track.lastKeyframeRequest = now
                    requestKeyframe?(track.info.trackSid)
                }
            }
        }
        guard mix != nil else { return }
        var batches: [(track: String, packets: [(payload: [UInt8], position: Int64)])] = []
        for key in Array(feeds.keys) {
            let packets = feeds[key]!.take(now: now)
            if !packets.isEmpty { batches.append((key, packets)) }
        }
        // A second behind: packets still in jitter buffers or in the next batch land before it.
        let elapsedMs = Int64((now &- startedAt) / 1_000_000)
        submitToMix(batches, horizon: max(0, elapsedMs - 1000) * 48)
    }

    /// Finishes every file; `completion` runs (on the queue) with the entries and any errors,
    /// once everything is on disk.
    public func finish(now: UInt64, completion: @escaping @Sendable ([FileEntry], [String]) -> Void) {
        for track in tracks.values { finish(track) }
        tracks.removeAll()
        if let mix {
            var batches: [(track: String, packets: [(payload: [UInt8], position: Int64)])] = []
            for key in Array(feeds.keys) { batches.append((key, feeds[key]!.drain())) }
            feeds.removeAll()
            submitToMix(batches, horizon: nil)
            let end = Int64((now &- startedAt) / 1_000_000) * 48
            let (box, errors) = (finished, errors)
            queue.async {
                let tail = mix.mixer.finish(upTo: max(end, mix.lastPosition))
                let entry = FileEntry(
                    name: Self.mixFileName, track: nil, participant: nil, kind: "audio", format: "ogg/opus", bytes: 0,
                    durationMs: Int64(mix.mixer.durationMs), offsetMs: 0)
                mix.file.finish(tail: tail, patches: []) { result in Self.record(result, entry, box, errors) }
            }
        }
        let (box, errors, queue) = (finished, errors, queue)
        // Finishing files queues more work from inside the queue; these hops run after it.
        queue.async { queue.async { queue.async { completion(box.withLockedValue { $0 }.sorted { $0.name < $1.name }, errors.withLockedValue { $0 }) } } }
    }

    private func finish(_ track: Track) {
        let offsetMs = Int64(((track.opus?.firstArrival ?? track.video?.firstArrival ?? startedAt) &- startedAt) / 1_000_000)
        var entry = FileEntry(
            name: track.name, track: track.info.trackSid, participant: track.info.participantSid, kind: track.info.kind,
            format: track.format, bytes: 0, durationMs: 0, offsetMs: max(0, offsetMs))
        let tail: [UInt8]
        var patches: [(offset: Int, bytes: [UInt8])] = []
        if track.opus != nil {
            tail = track.opus!.finish()
            entry.durationMs = Int64(track.opus!.durationMs)
        } else {
            let done = track.video!.finish()
            tail = done.tail
            patches = done.patches.map { ($0.offset, $0.bytes) }
            entry.durationMs = track.video!.framesWritten > 0 ? Int64(track.video!.durationMs) : 0
        }
        let (box, errors, fileEntry) = (finished, errors, entry)
        track.file.finish(tail: tail, patches: patches) { result in Self.record(result, fileEntry, box, errors) }
    }

    private static func record(
        _ result: Result<Int64, RecordingFileError>, _ entry: FileEntry, _ box: NIOLockedValueBox<[FileEntry]>,
        _ errors: NIOLockedValueBox<[String]>
    ) {
        var entry = entry
        switch result {
        case .success(let bytes): entry.bytes = bytes
        case .failure(let error): errors.withLockedValue { $0.append(error.message) }
        }
        box.withLockedValue { $0.append(entry) }
    }

    private func submitToMix(_ batches: [(track: String, packets: [(payload: [UInt8], position: Int64)])], horizon: Int64?, removing: [String] = []) {
        guard let mix else { return }
        queue.async {
            for batch in batches {
                for packet in batch.packets {
                    try? mix.mixer.add(track: batch.track, packet: packet.payload, position: packet.position)
                    mix.lastPosition = max(mix.lastPosition, packet.position + 960)
                }
            }
            for track in removing { mix.mixer.remove(track: track) }
            if let horizon { mix.file.append(mix.mixer.mix(upTo: horizon)) }
        }
    }
}

/// One file a recording wrote, as `finish` reports it and a manifest lists it. The recorder's own
/// type: the server maps it to the wire's `RecordingFileInfo`, so neither format binds the other.
public struct RecordedFile: Codable, Sendable, Equatable {
    public var name: String
    /// The track it holds; nil for the room's mix.
    public var track: String?
    public var participant: String?
    public var kind: String
    /// `ogg/opus`, `webm/vp8`, `matroska/h264`.
    public var format: String
    public var bytes: Int64
    public var durationMs: Int64
    /// Where the track starts on the recording's timeline.
    public var offsetMs: Int64

    public init(
        name: String, track: String?, participant: String?, kind: String, format: String, bytes: Int64, durationMs: Int64, offsetMs: Int64
    ) {
        self.name = name
        self.track = track
        self.participant = participant
        self.kind = kind
        self.format = format
        self.bytes = bytes
        self.durationMs = durationMs
        self.offsetMs = offsetMs
    }
}
