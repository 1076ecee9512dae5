import Foundation
import Logging
import NIOCore
import NIOPosix
import ParleyClient
import ParleyProtocol
import RTP
import Recording

/// `parley record`: joins a room as a (hidden) participant, is offered every track, and writes
/// them as the server's recorder does (a file per track, and a mix for `mix`/`both`), with a
/// manifest.json. It stops when the room closes, the connection ends or `stop()` is called, and
/// finishes every file before returning.
public final class RecordingBot: @unchecked Sendable {
    public struct Summary: Sendable {
        public var files: [RecordingSession.FileEntry]
        public var errors: [String]
        public var durationMs: Int64
        public var reason: String
    }

    private let url: String
    private let token: String
    private let directory: String
    private let mode: String
    private let iceTransportPolicy: ICETransportPolicy
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let stopRequested = ManagedStop()
    private let logger: Logger

    /// `iceTransportPolicy: .relay` receives through the TURN server the server's `joined` names.
    public init(
        url: String, token: String, directory: String, mode: String = "tracks", iceTransportPolicy: ICETransportPolicy = .all,
        logger: Logger = Logger(label: "parley.record")
    ) {
        self.url = url
        self.token = token
        self.directory = directory
        self.mode = mode
        self.iceTransportPolicy = iceTransportPolicy
        self.logger = logger
    }

    /// Ends the recording (Ctrl-C); `run` then finishes the files and returns.
    public func stop() { stopRequested.set() }

    /// Records until the room closes or `stop()`; `progress` gets a line about once a second.
    public func run(progress: @escaping @Sendable (String) -> Void) async throws -> Summary {
        do {
            let summary = try await record(progress: progress)
            try? await group.shutdownGracefully()
            return summary
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private func record(progress: @escaping @Sendable (String) -> Void) async throws -> Summary {
        let loop = group.next()
        let signaling = try await SignalingClient.connect(url: url, token: token, logger: logger)
        let first = try await signaling.next(timeout: .seconds(10))
        guard first.type == "joined" else { throw SignalingClientError.connectFailed("expected joined, got \(first.text.prefix(300))") }
        let joined = try first.decode(Joined.self)
        let connection = try await loop.submit { try SubscriberConnection(loop: loop) }.get()
        try await connection.start(iceServers: joined.iceServers, policy: iceTransportPolicy)
        let session = try await loop.submit {
            try RecordingSession(directory: self.directory, mode: self.mode, startedAt: NIODeadline.now().uptimeNanoseconds, label: "bot")
        }.get()
        let stats = BotStatistics()
        try await loop.submit {
            connection.onRTP = { packet, header, track, now in
                guard header.payloadLength > 0 else { return }
                if !session.isRecording(track.trackSid) {
                    session.addTrack(.init(trackSid: track.trackSid, participantSid: track.participantSid, kind: track.kind, codec: track.codec))
                }
                stats.packets += 1
                stats.bytes += packet.count
                session.receive(
                    RecordedPacket(
                        ssrc: header.ssrc, sequence: header.sequenceNumber, timestamp: header.timestamp, marker: header.marker,
                        payload: Array(UnsafeRawBufferPointer(rebasing: packet[header.payloadRange])), arrival: now),
                    track: track.trackSid)
            }
        }.get()
        let started = ContinuousClock.now
        var reason = "stopped"
        var lastFlush = ContinuousClock.now
        // A bot may record for longer than its TURN credentials last: new ones are asked for
        // at four fifths of their time and its relay moves to them, as ParleyRoom does.
        var credentialsDueAt = ParleyRoom.credentialRefreshTime(for: joined.iceServers)
        while true {
            if stopRequested.isSet { break }
            if let due = credentialsDueAt, Date() >= due {
                credentialsDueAt = Date(timeIntervalSinceNow: 5)  // again unless answered
                try? await signaling.send(ICEServersRequest())
            }
            let frame: ServerFrame
            do {
                frame = try await signaling.next(timeout: .milliseconds(250))
            } catch SignalingClientError.timedOut {
                frame = ServerFrame(type: "", re: nil, text: "")
            } catch {
                reason = "connection ended"
                break
            }
            if frame.type == "error" { progress("server: \(frame.text.prefix(300))") }
            if frame.type == ICEServers.type, let servers = try? frame.decode(ICEServers.self).iceServers {
                credentialsDueAt = ParleyRoom.credentialRefreshTime(for: servers)
                try await loop.submit { connection.transport.updateICEServers(servers) }.get()
            }
            if frame.type == "room.closed" {
                reason = "room closed"
                break
            }
            if let offer = frame.subscriberOffer {
                let answer = try await loop.submit { try connection.answer(offer: offer.sdp) }.get()
                try await signaling.sendRaw(SignalCodec().encode(AnswerMessage(target: .subscriber, sdp: answer), re: offer.id))
            }
            if ContinuousClock.now - lastFlush >= .seconds(1) {
                lastFlush = ContinuousClock.now
                let (files, connected, offered) = try await loop.submit { () -> ([String], Bool, Int) in
                    session.flush(now: NIODeadline.now().uptimeNanoseconds)
                    return (session.activeFiles, connection.isConnected, connection.tracksBySSRC.count)
                }.get()
                let seconds = (ContinuousClock.now - started).components.seconds
                let state = connected ? "" : offered > 0 ? " (connecting)" : " (waiting for tracks)"
                progress("recording \(files.count) track(s)\(state), \(seconds) s, \(stats.packets) packets, \(stats.bytes / 1024) KiB: \(files.joined(separator: ", "))")
            }
        }
        await signaling.close()
        let (files, errors) = await withCheckedContinuation { (continuation: CheckedContinuation<([RecordingSession.FileEntry], [String]), Never>) in
            loop.execute {
                connection.onRTP = nil
                session.finish(now: NIODeadline.now().uptimeNanoseconds) { files, errors in continuation.resume(returning: (files, errors)) }
            }
        }
        await connection.close()
        let durationMs = Int64((ContinuousClock.now - started).components.seconds * 1000)
        let summary = Summary(files: files, errors: errors, durationMs: durationMs, reason: reason)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        struct Manifest: Encodable {
            let mode: String
            let durationMs: Int64
            let files: [RecordingSession.FileEntry]
            let errors: [String]
        }
        if let data = try? encoder.encode(Manifest(mode: mode, durationMs: durationMs, files: files, errors: errors)) {
            _ = FileManager.default.createFile(atPath: (directory as NSString).appendingPathComponent("manifest.json"), contents: data)
        }
        return summary
    }

}

/// Counters the loop writes and the progress line reads (roughly: a torn read is harmless).
private final class BotStatistics: @unchecked Sendable {
    var packets = 0
    var bytes = 0
}

private final class ManagedStop: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}
