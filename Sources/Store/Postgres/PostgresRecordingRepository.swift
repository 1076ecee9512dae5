import Foundation
import PostgresNIO

/// Recordings in PostgreSQL, one row each; the files as a JSON array, as in SQLite.
public struct PostgresRecordingRepository: RecordingRepository {
    let database: PostgresDatabase

    public init(database: PostgresDatabase) { self.database = database }

    public func save(_ recording: RecordingRecord) async throws {
        let files = String(decoding: try JSONEncoder().encode(recording.files), as: UTF8.self)
        try await database.execute(
            """
            INSERT INTO recording (id, room, mode, state, started_at, stopped_at, files, bytes, duration_ms, error, node, stop_reason)
            VALUES (\(recording.id), \(recording.room), \(recording.mode), \(recording.state), \(recording.startedAt),
                    \(recording.stoppedAt), \(files), \(recording.bytes), \(recording.durationMs), \(recording.error), \(recording.node), \(recording.stopReason))
            ON CONFLICT (id) DO UPDATE SET state = excluded.state, stopped_at = excluded.stopped_at,
                files = excluded.files, bytes = excluded.bytes, duration_ms = excluded.duration_ms, error = excluded.error,
                stop_reason = excluded.stop_reason
            """)
    }

    public func get(_ id: String) async throws -> RecordingRecord? {
        try await database.rows("SELECT * FROM recording WHERE id = \(id)").first.map(Self.decode)
    }

    public func list(room: String?) async throws -> [RecordingRecord] {
        if let room {
            return try await database.rows("SELECT * FROM recording WHERE room = \(room) ORDER BY started_at DESC").map(Self.decode)
        }
        return try await database.rows("SELECT * FROM recording ORDER BY started_at DESC LIMIT 500").map(Self.decode)
    }

    public func markInterrupted(node: String, stoppedAt: Int64) async throws -> [RecordingRecord] {
        try await database.rows(
            """
            UPDATE recording SET state = 'interrupted', stopped_at = \(stoppedAt),
                error = 'node ' || \(node) || ' stopped before the recording was finalized'
            WHERE state IN ('starting', 'active') AND node IN (\(node), '') RETURNING *
            """
        ).map(Self.decode)
    }

    public func markInterrupted(exceptNodes liveNodes: [String], stoppedAt: Int64) async throws -> [RecordingRecord] {
        try await database.rows(
            """
            UPDATE recording SET state = 'interrupted', stopped_at = \(stoppedAt),
                error = 'node ' || node || ' was lost before the recording was finalized'
            WHERE state IN ('starting', 'active') AND node <> '' AND NOT (node = ANY(\(liveNodes)::text[])) RETURNING *
            """
        ).map(Self.decode)
    }

    static func decode(_ row: PostgresRandomAccessRow) throws -> RecordingRecord {
        let filesText = try row["files"].decode(String.self)
        let files = (try? JSONDecoder().decode([RecordingFileRecord].self, from: Data(filesText.utf8))) ?? []
        return RecordingRecord(
            id: try row["id"].decode(String.self), room: try row["room"].decode(String.self), state: try row["state"].decode(String.self),
            mode: try row["mode"].decode(String.self), startedAt: try row["started_at"].decode(Int64.self),
            stoppedAt: try row["stopped_at"].decode(Int64?.self), files: files, bytes: try row["bytes"].decode(Int64.self),
            durationMs: try row["duration_ms"].decode(Int64.self), error: try row["error"].decode(String?.self),
            node: try row["node"].decode(String.self), stopReason: try row["stop_reason"].decode(String?.self))
    }
}
