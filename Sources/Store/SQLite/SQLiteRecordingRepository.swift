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
                    INSERT INTO recording (id, room, mode, state, started_at, stopped_at, files, bytes, duration_ms, error, node, stop_reason)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(id) DO UPDATE SET state = excluded.state, stopped_at = excluded.stopped_at,
                        files = excluded.files, bytes = excluded.bytes, duration_ms = excluded.duration_ms, error = excluded.error,
                        stop_reason = excluded.stop_reason
                    """,
                arguments: [
                    recording.id, recording.room, recording.mode, recording.state, recording.startedAt, recording.stoppedAt, files,
                    recording.bytes, recording.durationMs, recording.error, recording.node, recording.stopReason,
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

    public func markInterrupted(node: String, stoppedAt: Int64) async throws -> [RecordingRecord] {
        try await database.pool.write { db in
            try Row.fetchAll(
                db,
                sql: """
                    UPDATE recording SET state = 'interrupted', stopped_at = ?,
                        error = 'node ' || ? || ' stopped before the recording was finalized'
                    WHERE state IN ('starting', 'active') AND node IN (?, '') RETURNING *
                    """,
                arguments: [stoppedAt, node, node]
            ).map(Self.decode)
        }
    }

    public func markInterrupted(exceptNodes liveNodes: [String], stoppedAt: Int64) async throws -> [RecordingRecord] {
        let live = String(decoding: try JSONEncoder().encode(liveNodes), as: UTF8.self)
        return try await database.pool.write { db in
            try Row.fetchAll(
                db,
                sql: """
                    UPDATE recording SET state = 'interrupted', stopped_at = ?,
                        error = 'node ' || node || ' was lost before the recording was finalized'
                    WHERE state IN ('starting', 'active') AND node <> '' AND node NOT IN (SELECT value FROM json_each(?)) RETURNING *
                    """,
                arguments: [stoppedAt, live]
            ).map(Self.decode)
        }
    }

    static func decode(_ row: Row) -> RecordingRecord {
        let filesText: String = row["files"]
        let files = (try? JSONDecoder().decode([RecordingFileRecord].self, from: Data(filesText.utf8))) ?? []
        return RecordingRecord(
            id: row["id"], room: row["room"], state: row["state"], mode: row["mode"], startedAt: row["started_at"],
            stoppedAt: row["stopped_at"], files: files, bytes: row["bytes"], durationMs: row["duration_ms"], error: row["error"],
            node: row["node"], stopReason: row["stop_reason"])
    }
}
