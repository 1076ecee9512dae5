import Store
import Testing

@Suite struct RecordingRepositoryTests {
    func record(_ id: String, room: String = "r", state: String = "active", startedAt: Int64, node: String = "a") -> RecordingRecord {
        RecordingRecord(
            id: id, room: room, state: state, mode: "tracks", startedAt: startedAt, stoppedAt: nil, files: [], bytes: 0, durationMs: 0,
            error: nil, node: node)
    }

    @Test(arguments: StoreBackend.allCases) func aSavedRecordingIsUpdatedInPlace(backend: StoreBackend) async throws {
        let recordings = try await backend.recordingRepository()
        try await recordings.save(record("RC_1", startedAt: 1000))
        #expect(try await recordings.get("RC_1")?.state == "active")
        var done = record("RC_1", state: "stopped", startedAt: 1000)
        done.stoppedAt = 5000
        done.files = [
            RecordingFileRecord(
                name: "TR_a.ogg", track: "TR_a", participant: "PA_a", kind: "audio", format: "ogg/opus", bytes: 4096, durationMs: 4000,
                offsetMs: 20),
            RecordingFileRecord(name: "mix.ogg", track: nil, participant: nil, kind: "audio", format: "ogg/opus", bytes: 2048, durationMs: 3990, offsetMs: 0),
        ]
        done.bytes = 6144
        done.durationMs = 4000
        try await recordings.save(done)
        #expect(try await recordings.get("RC_1") == done)
        #expect(try await recordings.get("RC_missing") == nil)
    }

    @Test(arguments: StoreBackend.allCases) func listsNewestFirstByRoom(backend: StoreBackend) async throws {
        let recordings = try await backend.recordingRepository()
        try await recordings.save(record("RC_1", room: "a", state: "stopped", startedAt: 1))
        try await recordings.save(record("RC_2", room: "b", state: "stopped", startedAt: 2))
        try await recordings.save(record("RC_3", room: "a", state: "stopped", startedAt: 3))
        #expect(try await recordings.list(room: "a").map(\.id) == ["RC_3", "RC_1"])
        #expect(try await recordings.list(room: nil).map(\.id) == ["RC_3", "RC_2", "RC_1"])
        #expect(try await recordings.list(room: "none").isEmpty)
    }

    @Test(arguments: StoreBackend.allCases) func recordingsACrashLeftRunningAreMarkedInterrupted(backend: StoreBackend) async throws {
        let recordings = try await backend.recordingRepository()
        try await recordings.save(record("RC_running", startedAt: 1))
        try await recordings.save(record("RC_starting", state: "starting", startedAt: 2))
        try await recordings.save(record("RC_done", state: "stopped", startedAt: 3))
        try await recordings.save(record("RC_older", startedAt: 4, node: ""))
        try await recordings.save(record("RC_elsewhere", startedAt: 5, node: "b"))
        let marked = try await recordings.markInterrupted(node: "a", stoppedAt: 99)
        #expect(Set(marked.map(\.id)) == ["RC_running", "RC_starting", "RC_older"])
        let running = try await recordings.get("RC_running")
        #expect(running?.state == "interrupted" && running?.stoppedAt == 99 && running?.error?.contains("node a") == true)
        #expect(try await recordings.get("RC_starting")?.state == "interrupted")
        let done = try await recordings.get("RC_done")
        #expect(done?.state == "stopped" && done?.stoppedAt == nil)
        // Another node's recording runs on.
        #expect(try await recordings.get("RC_elsewhere")?.state == "active")
    }

    @Test(arguments: StoreBackend.allCases) func aLostNodesRecordingsAreMarkedInterrupted(backend: StoreBackend) async throws {
        let recordings = try await backend.recordingRepository()
        try await recordings.save(record("RC_a", startedAt: 1, node: "a"))
        try await recordings.save(record("RC_b", startedAt: 2, node: "b"))
        try await recordings.save(record("RC_c", startedAt: 3, node: "c"))
        try await recordings.save(record("RC_b_done", state: "stopped", startedAt: 4, node: "b"))
        #expect(try await recordings.markInterrupted(exceptNodes: ["a", "b", "c"], stoppedAt: 50).isEmpty)
        let marked = try await recordings.markInterrupted(exceptNodes: ["a", "c"], stoppedAt: 60)
        #expect(marked.map(\.id) == ["RC_b"])
        let lost = try await recordings.get("RC_b")
        #expect(lost?.state == "interrupted" && lost?.stoppedAt == 60 && lost?.error?.contains("node b was lost") == true && lost?.node == "b")
        #expect(try await recordings.get("RC_b_done")?.state == "stopped")
        #expect(try await recordings.markInterrupted(exceptNodes: [], stoppedAt: 70).map(\.id).sorted() == ["RC_a", "RC_c"])
    }
}
