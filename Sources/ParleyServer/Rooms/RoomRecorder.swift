import Foundation
import ParleyProtocol
import RTP
import Recording
import SFU

/// One running recording of a room: the SFU's tap, on the room's loop. It feeds each
/// publication's packets to a `RecordingSession` (a file per track, the mix) and flushes it on
/// the worker's tick; the session writes on its own queue.
final class RoomRecorder: PublicationTap, @unchecked Sendable {
    private(set) var info: RecordingInfo
    let directory: String
    private let session: RecordingSession
    private weak var sfu: SFURoom?
    private var lastFlush: UInt64 = 0
    private var stopped = false
    private var stoppedAt: UInt64 = 0

    init(info: RecordingInfo, directory: String, sfu: SFURoom) throws {
        self.info = info
        self.directory = directory
        self.sfu = sfu
        session = try RecordingSession(directory: directory, mode: info.mode, startedAt: sfu.port.now(), label: info.id)
        session.requestKeyframe = { [weak sfu] trackSid in
            guard let sfu, let publication = sfu.publication(trackSid: trackSid) else { return }
            sfu.requestKeyframe(publication)
        }
        for publication in sfu.publications { tap(sfu, published: publication) }
        sfu.port.addTickHandler(owner: self) { [weak self] now in self?.tick(now: now) }
    }

    // MARK: PublicationTap

    func tap(_ room: SFURoom, published publication: Publication) {
        guard !stopped, let codec = publication.codecs.first else { return }
        session.addTrack(.init(
            trackSid: publication.trackSid, participantSid: publication.participantSid,
            kind: publication.kind == .audio ? "audio" : "video", codec: codec.name.lowercased()))
    }

    func tap(_ room: SFURoom, unpublished publication: Publication) {
        session.removeTrack(publication.trackSid)
    }

    func tap(_ room: SFURoom, received packet: UnsafeRawBufferPointer, header: RTPHeader, from publication: Publication, now: UInt64) {
        guard !stopped, header.payloadLength > 0, session.isRecording(publication.trackSid) else { return }
        session.receive(
            RecordedPacket(
                ssrc: header.ssrc, sequence: header.sequenceNumber, timestamp: header.timestamp, marker: header.marker,
                payload: Array(UnsafeRawBufferPointer(rebasing: packet[header.payloadRange])), arrival: now),
            track: publication.trackSid)
    }

    private func tick(now: UInt64) {
        guard !stopped, now >= lastFlush + 1_000_000_000 else { return }
        lastFlush = now
        session.flush(now: now)
    }

    // MARK: Stopping

    /// Stops taking packets and hands every file its last bytes. On the room's loop.
    func stopCapturing() {
        guard !stopped else { return }
        stopped = true
        sfu?.port.removeTickHandler(owner: self)
        stoppedAt = sfu?.port.now() ?? session.startedAt
        let (stream, continuation) = AsyncStream.makeStream(of: FinishedFiles.self)
        finished = stream
        session.finish(now: stoppedAt) { files, errors in
            continuation.yield(FinishedFiles(files: files, errors: errors))
            continuation.finish()
        }
    }

    struct FinishedFiles: Sendable {
        var files: [RecordingSession.FileEntry]
        var errors: [String]
    }

    private var finished: AsyncStream<FinishedFiles>?

    /// Waits for the files to be on disk, writes manifest.json and returns the recording as it
    /// ended. After `stopCapturing`, anywhere.
    func finalize(stoppedAt wallStoppedAt: Int64) async -> RecordingInfo {
        var files: [RecordingSession.FileEntry] = []
        var errors: [String] = []
        if let finished {
            for await result in finished {
                files = result.files
                errors = result.errors
            }
        }
        info.state = errors.isEmpty ? "stopped" : "failed"
        info.error = errors.isEmpty ? nil : errors.joined(separator: "; ")
        info.stoppedAt = wallStoppedAt
        info.files = files.map(RecordingFileInfo.init)
        info.bytes = files.reduce(0) { $0 + $1.bytes }
        info.durationMs = Int64((stoppedAt &- session.startedAt) / 1_000_000)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        if let manifest = try? encoder.encode(info) {
            _ = FileManager.default.createFile(atPath: (directory as NSString).appendingPathComponent("manifest.json"), contents: manifest)
        }
        return info
    }
}

extension RecordingFileInfo {
    /// The wire's view of a file the recorder wrote.
    init(_ file: RecordedFile) {
        self.init(
            name: file.name, track: file.track, participant: file.participant, kind: file.kind, format: file.format,
            bytes: file.bytes, durationMs: file.durationMs, offsetMs: file.offsetMs)
    }
}
