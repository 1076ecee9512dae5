import Foundation
import GRDB

/// Recordings in SQLite, one row each; the files as a JSON array.
public struct SQLiteRecordingRepository: RecordingRepository {
    let database: ParleyDatabase

    public init(database: ParleyDatabase) { self.database = database }

    public func save(_ recording: RecordingRecord) async throws {
        let files = String(decoding: try JSONEncoder().encode(recording.files), as: UTF8.self)
        try await database.pool.write { db in
            try db.execute(
                sql: """
                    INSERT INTO recording (id, room, mode, state, started_at, stopped_at, files, bytes, duration_ms, error)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(id) DO UPDATE SET state = excluded.state, stopped_at = excluded.stopped_at,
                        files = excluded.files, bytes = excluded.bytes, duration_ms = excluded.duration_ms, error = excluded.error
                    """,
                arguments: [
                    recording.id, recording.room, recording.mode, recording.state, recording.startedAt, recording.stoppedAt, files,
                    recording.bytes, recording.durationMs, recording.error,
                ])
        }
    }

    public func get(_ id: String) async throws -> RecordingRecord? {
        try await database.pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM recording WHERE id = ?", arguments: [id]).map(Self.decode)
        }
    }

    public func list(room: String?) async throws -> [RecordingRecord] {
        try await database.pool.read { db in
            if let room {
                return try Row.fetchAll(db, sql: "SELECT * FROM recording WHERE room = ? ORDER BY started_at DESC", arguments: [room])
                    .map(Self.decode)
            }
            return try Row.fetchAll(db, sql: "SELECT * FROM recording ORDER BY started_at DESC LIMIT 500").map(Self.decode)
        }
    }

    public func markInterrupted(stoppedAt: Int64) async throws {
        try await database.pool.write { db in
            try db.execute(
                sql: "UPDATE recording SET state = 'failed', error = 'the server stopped before the recording was finalized', stopped_at = ? WHERE state IN ('starting', 'active')",
                arguments: [stoppedAt])
        }
    }

    static func decode(_ row: Row) -> RecordingRecord {
        let filesText: String = row["files"]
        let files = (try? JSONDecoder().decode([RecordingFileRecord].self, from: Data(filesText.utf8))) ?? []
        return RecordingRecord(
            id: row["id"], room: row["room"], state: row["state"], mode: row["mode"], startedAt: row["started_at"],
            stoppedAt: row["stopped_at"], files: files, bytes: row["bytes"], durationMs: row["duration_ms"], error: row["error"])
    }
}
