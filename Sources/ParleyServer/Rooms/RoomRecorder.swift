import Dispatch
import Foundation
import NIOConcurrencyHelpers
import ParleyProtocol
import RTP
import Recording
import SFU

/// One running recording of a room: a file per published track (`tracks`), one mixed audio file
/// (`mix`), or both. It is the SFU's tap, so it runs on the room's loop: a packet's payload is
/// copied and handed to the track's recorder (jitter buffer, depacketizer, container) or to its
/// mix feed, and once a second what they produced goes to the recording's queue, where files are
/// written and the mix is decoded, summed and encoded.
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

    /// The mixer and its file, used only on `queue`.
    final class MixState: @unchecked Sendable {
        let mixer: AudioMixer
        let file: RecordingFile
        var lastPosition: Int64 = 0
        init(mixer: AudioMixer, file: RecordingFile) {
            self.mixer = mixer
            self.file = file
        }
    }

    private(set) var info: RecordingInfo
    private let recordsTracks: Bool
    private let mix: MixState?
    private var mixFeeds: [ObjectIdentifier: (track: String, feed: MixFeed)] = [:]
    static let mixFileName = "mix.ogg"
    let directory: String
    let startedAt: UInt64
    private let queue: DispatchQueue
    private weak var sfu: SFURoom?
    private var tracks: [ObjectIdentifier: Track] = [:]
    /// Tracks that ended, finished on the queue; their file entries come back here.
    private let finishedFiles = NIOLockedValueBox<[RecordingFileInfo]>([])
    private let fileErrors = NIOLockedValueBox<[String]>([])
    private var usedNames: Set<String> = []
    private var stopped = false

    init(info: RecordingInfo, directory: String, sfu: SFURoom) throws {
        self.info = info
        self.directory = directory
        self.sfu = sfu
        startedAt = sfu.port.now()
        queue = DispatchQueue(label: "parley.recording.\(info.id)")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        recordsTracks = info.mode != "mix"
        if info.mode != "tracks" {
            mix = MixState(
                mixer: try AudioMixer(serial: UInt32.random(in: 1...UInt32.max)),
                file: RecordingFile(path: (directory as NSString).appendingPathComponent(Self.mixFileName), queue: queue))
        } else {
            mix = nil
        }
        for publication in sfu.publications { tap(sfu, published: publication) }
        sfu.port.addTickHandler(owner: self) { [weak self] now in self?.tick(now: now) }
    }

    // MARK: PublicationTap

    func tap(_ room: SFURoom, published publication: Publication) {
        guard !stopped, let codec = publication.codecs.first else { return }
        if mix != nil, codec.name.lowercased() == "opus", mixFeeds[ObjectIdentifier(publication)] == nil {
            mixFeeds[ObjectIdentifier(publication)] = (publication.trackSid, MixFeed(startedAt: startedAt))
        }
        guard recordsTracks, tracks[ObjectIdentifier(publication)] == nil else { return }
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
        if var entry = mixFeeds.removeValue(forKey: ObjectIdentifier(publication)) {
            submitToMix([(entry.track, entry.feed.drain())], horizon: nil, removing: [entry.track])
        }
        guard let track = tracks.removeValue(forKey: ObjectIdentifier(publication)) else { return }
        finish(track)
    }

    func tap(_ room: SFURoom, received packet: UnsafeRawBufferPointer, header: RTPHeader, from publication: Publication, now: UInt64) {
        guard header.payloadLength > 0 else { return }
        let key = ObjectIdentifier(publication)
        let track = tracks[key]
        guard track != nil || mixFeeds[key] != nil else { return }
        let recorded = RecordedPacket(
            ssrc: header.ssrc, sequence: header.sequenceNumber, timestamp: header.timestamp, marker: header.marker,
            payload: Array(UnsafeRawBufferPointer(rebasing: packet[header.payloadRange])), arrival: now)
        if let track {
            if track.opus != nil { track.opus!.receive(recorded) } else { track.video?.receive(recorded) }
        }
        mixFeeds[key]?.feed.receive(recorded)
    }

    /// Hands ordered, placed packets to the mixer on the queue; it encodes up to `horizon`
    /// (nil: everything, at the end) and writes.
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

    // MARK: Time

    private func tick(now: UInt64) {
        guard !stopped, now >= lastFlush + 1_000_000_000 else { return }
        lastFlush = now
        if mix != nil {
            var batches: [(track: String, packets: [(payload: [UInt8], position: Int64)])] = []
            for key in Array(mixFeeds.keys) {
                let packets = mixFeeds[key]!.feed.take(now: now)
                if !packets.isEmpty { batches.append((mixFeeds[key]!.track, packets)) }
            }
            // A second behind: packets still in jitter buffers or in the next batch land before it.
            let elapsedMs = Int64((now &- startedAt) / 1_000_000)
            submitToMix(batches, horizon: max(0, elapsedMs - 1000) * 48)
        }
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
        let (box, errors) = (finishedFiles, fileErrors)
        let finishedEntry = entry
        track.file.finish(tail: tail, patches: patches) { result in
            var entry = finishedEntry
            switch result {
            case .success(let bytes): entry.bytes = bytes
            case .failure(let error): errors.withLockedValue { $0.append(error.message) }
            }
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
        if let mix {
            var batches: [(track: String, packets: [(payload: [UInt8], position: Int64)])] = []
            for key in Array(mixFeeds.keys) { batches.append((mixFeeds[key]!.track, mixFeeds[key]!.feed.drain())) }
            mixFeeds.removeAll()
            submitToMix(batches, horizon: nil)
            let end = Int64((stoppedAtMonotonic &- startedAt) / 1_000_000) * 48
            let (box, errors) = (finishedFiles, fileErrors)
            queue.async {
                let tail = mix.mixer.finish(upTo: max(end, mix.lastPosition))
                let entry = RecordingFileInfo(
                    name: Self.mixFileName, track: nil, participant: nil, kind: "audio", format: "ogg/opus", bytes: 0,
                    durationMs: Int64(mix.mixer.durationMs), offsetMs: 0)
                mix.file.finish(tail: tail, patches: []) { result in
                    var entry = entry
                    switch result {
                    case .success(let bytes): entry.bytes = bytes
                    case .failure(let error): errors.withLockedValue { $0.append(error.message) }
                    }
                    box.withLockedValue { $0.append(entry) }
                }
            }
        }
    }

    private var stoppedAtMonotonic: UInt64 = 0

    /// Waits for the files to be closed (the queue runs the finishes in order), writes
    /// manifest.json and returns the recording as it ended. Anywhere, after `stopCapturing`.
    func finalize(stoppedAt: Int64) async -> RecordingInfo {
        // Finishing the mix queues more work from inside the queue: drain it until it is quiet.
        for _ in 0..<4 {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in queue.async { continuation.resume() } }
        }
        let files = finishedFiles.withLockedValue { $0 }.sorted { $0.name < $1.name }
        let problems = fileErrors.withLockedValue { $0 }
        info.state = problems.isEmpty ? "stopped" : "failed"
        info.error = problems.isEmpty ? nil : problems.joined(separator: "; ")
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
