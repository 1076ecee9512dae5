import Foundation
import ParleyProtocol

/// Recording a room: started and stopped by signaling (`grants.record`), the REST API or the
/// room's `autoRecord`; one recording at a time. State changes go to everyone as `recording`.
extension Room {
    static let recordingModes: Set<String> = ["tracks", "mix", "both"]

    public func startRecording(mode: String?) async throws(ProtocolError) -> RecordingInfo {
        guard !isClosed else { throw ProtocolError(.notFound, "room \(name) is closed") }
        let mode = mode ?? "tracks"
        guard ["tracks", "mix", "both"].contains(mode) else {
            throw ProtocolError(.badRequest, "field \"mode\" must be tracks, mix or both")
        }
        guard Self.recordingModes.contains(mode) else {
            throw ProtocolError(.badRequest, "mode \(mode) is not supported yet; use tracks")
        }
        guard let repository = services.recordings else { throw ProtocolError(.internal, "this server has no recording store") }
        if let recorder { throw ProtocolError(.conflict, "recording \(recorder.info.id) is already running") }
        let limits = services.config.recordingLimits
        if let refusal = limits.refusal(roomBytes: roomRecordingBytes(), freeBytes: RecordingLimits.freeBytes(at: services.config.recordingDir)) {
            throw ProtocolError(.insufficientStorage, "cannot record room \(name): \(refusal)")
        }
        let id = services.ids.make("RC")
        let directory = (services.config.recordingDir as NSString).appendingPathComponent("\(Self.safePathComponent(name))/\(id)")
        let info = RecordingInfo(
            id: id, room: name, state: "active", mode: mode, startedAt: services.clock.wallMilliseconds(), node: services.server.node)
        let made: RoomRecorder
        do {
            made = try RoomRecorder(info: info, directory: directory, sfu: sfu)
        } catch {
            throw ProtocolError(.internal, "cannot create \(directory): \(error)")
        }
        recorder = made
        sfu.tap = made
        services.metrics.recordingsActive.increment()
        services.metrics.recordingsStarted.increment()
        do { try await repository.save(info) } catch { logger.error("recording row not saved", metadata: ["error": "\(error)"]) }
        logger.info("recording started", metadata: ["recording": "\(id)", "mode": "\(mode)", "dir": "\(directory)"])
        broadcast(codec.encode(RecordingEvent(recording: info)))
        emit(.recordingStarted(info))
        let started = services.clock.now()
        after(RecordingLimits.checkInterval) { room in await room.checkRecordingLimits(id, startedAt: started) }
        return info
    }

    /// This room's recordings on this node's disk, in bytes.
    func roomRecordingBytes() -> Int64 {
        RecordingLimits.bytes(under: (services.config.recordingDir as NSString).appendingPathComponent(Self.safePathComponent(name)))
    }

    /// Stops the running recording `id` when a limit is reached, else looks again later.
    func checkRecordingLimits(_ id: String, startedAt: Duration) async {
        guard let recorder, recorder.info.id == id else { return }
        let limits = services.config.recordingLimits
        let reason = limits.stopReason(
            elapsed: services.clock.now() - startedAt, roomBytes: limits.roomQuotaBytes > 0 ? roomRecordingBytes() : 0,
            freeBytes: limits.minFreeBytes > 0 ? RecordingLimits.freeBytes(at: recorder.directory) : nil)
        guard let reason else {
            after(RecordingLimits.checkInterval) { room in await room.checkRecordingLimits(id, startedAt: startedAt) }
            return
        }
        logger.warning("recording stopped by a limit", metadata: ["recording": "\(id)", "reason": "\(reason)"])
        services.metrics.recordingsStoppedByLimit.increment()
        _ = await finishRecording(recorder, stopReason: reason)
    }

    public func stopRecording(_ id: String) async throws(ProtocolError) -> RecordingInfo {
        guard let recorder, recorder.info.id == id else { throw ProtocolError(.notFound, "no running recording \(id) in room \(name)") }
        return await finishRecording(recorder)
    }

    /// Ends the running recording, if any (room close, shutdown).
    func finishRecordingIfAny() async {
        if let recorder { _ = await finishRecording(recorder) }
    }

    private func finishRecording(_ running: RoomRecorder, stopReason: String? = nil) async -> RecordingInfo {
        recorder = nil
        if sfuIfMade?.tap === running { sfuIfMade?.tap = nil }
        running.stopCapturing()
        var info = await running.finalize(stoppedAt: services.clock.wallMilliseconds())
        info.stopReason = stopReason
        services.metrics.recordingsActive.decrement()
        services.metrics.recordingBytes.increment(by: Int64(info.bytes))
        if info.state == "failed" { services.metrics.recordingFailures.increment() }
        do { try await services.recordings?.save(info) } catch { logger.error("recording row not saved", metadata: ["error": "\(error)"]) }
        logger.info("recording stopped", metadata: [
            "recording": "\(info.id)", "files": "\(info.files.count)", "bytes": "\(info.bytes)", "durationMs": "\(info.durationMs)",
        ])
        broadcast(codec.encode(RecordingEvent(recording: info)))
        emit(.recordingEnded(info))
        return info
    }

    /// A room name as one path component: no separators, no dot-dot.
    static func safePathComponent(_ name: String) -> String {
        let cleaned = String(name.map { $0.isLetter || $0.isNumber || "-_.".contains($0) ? $0 : "_" })
        return cleaned.isEmpty || cleaned.allSatisfy({ $0 == "." }) ? "_" : cleaned
    }
}
