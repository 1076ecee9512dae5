import Foundation
import PostgresNIO

/// Nodes and room ownership in PostgreSQL. A claim is one `INSERT … ON CONFLICT DO UPDATE … WHERE`
/// statement: the row lock makes concurrent claims of one room agree on a single owner.
public struct PostgresClusterRepository: ClusterRepository {
    let database: PostgresDatabase

    public init(database: PostgresDatabase) { self.database = database }

    public func announce(_ node: NodeRecord, rooms: [String], now: Int64) async throws {
        let media = String(decoding: try JSONEncoder().encode(node.mediaAddresses), as: UTF8.self)
        let logger = database.logger
        try await database.transaction { connection in
            try await PostgresDatabase.drain(connection.query(
                """
                INSERT INTO parley_node (name, signaling_url, media_addresses, turn_address, participants, rooms, cpu,
                    cores, max_participants, draining, started_at, lease_until)
                VALUES (\(node.name), \(node.signalingURL), \(media), \(node.turnAddress), \(node.participants), \(node.rooms),
                    \(node.cpu), \(node.cores), \(node.maxParticipants), \(node.draining), \(node.startedAt), \(node.leaseUntil))
                ON CONFLICT (name) DO UPDATE SET signaling_url = excluded.signaling_url,
                    media_addresses = excluded.media_addresses, turn_address = excluded.turn_address,
                    participants = excluded.participants, rooms = excluded.rooms, cpu = excluded.cpu, cores = excluded.cores,
                    max_participants = excluded.max_participants, draining = excluded.draining,
                    started_at = excluded.started_at, lease_until = excluded.lease_until
                """, logger: logger))
            if !rooms.isEmpty {
                try await PostgresDatabase.drain(connection.query(
                    """
                    INSERT INTO parley_room_owner (room, node, lease_until, placed_at)
                    SELECT unnest(\(rooms)::text[]), \(node.name), \(node.leaseUntil), \(now)
                    ON CONFLICT (room) DO UPDATE SET lease_until = excluded.lease_until
                    WHERE parley_room_owner.node = excluded.node
                    """, logger: logger))
            }
        }
    }

    public func liveNodes(now: Int64) async throws -> [NodeRecord] {
        try await database.rows("SELECT * FROM parley_node WHERE lease_until > \(now) ORDER BY name").map(Self.node(from:))
    }

    public func withdraw(node: String) async throws {
        let logger = database.logger
        try await database.transaction { connection in
            try await PostgresDatabase.drain(connection.query("DELETE FROM parley_room_owner WHERE node = \(node)", logger: logger))
            try await PostgresDatabase.drain(connection.query("DELETE FROM parley_node WHERE name = \(node)", logger: logger))
        }
    }

    public func claim(room: String, node: String, now: Int64, leaseUntil: Int64) async throws -> RoomOwnership {
        let taken = try await database.rows(
            """
            INSERT INTO parley_room_owner (room, node, lease_until, placed_at) VALUES (\(room), \(node), \(leaseUntil), \(now))
            ON CONFLICT (room) DO UPDATE SET node = excluded.node, lease_until = excluded.lease_until,
                placed_at = CASE WHEN parley_room_owner.node = excluded.node THEN parley_room_owner.placed_at
                                 ELSE excluded.placed_at END
            WHERE parley_room_owner.node = excluded.node OR parley_room_owner.lease_until <= \(now)
            RETURNING room, node, lease_until, placed_at
            """)
        if let row = taken.first { return try Self.ownership(from: row) }
        // Another node's live lease holds it: the WHERE kept its row, which is the answer.
        if let holder = try await owner(room: room, now: now) { return holder }
        // Its lease ran out between the two statements: try again.
        return try await claim(room: room, node: node, now: now, leaseUntil: leaseUntil)
    }

    public func transfer(room: String, from: String, to: String, now: Int64, leaseUntil: Int64) async throws -> Bool {
        let moved = try await database.rows(
            """
            UPDATE parley_room_owner SET node = \(to), lease_until = \(leaseUntil), placed_at = \(now)
            WHERE room = \(room) AND node = \(from) RETURNING room
            """)
        return !moved.isEmpty
    }

    public func owner(room: String, now: Int64) async throws -> RoomOwnership? {
        try await database.rows(
            "SELECT room, node, lease_until, placed_at FROM parley_room_owner WHERE room = \(room) AND lease_until > \(now)"
        ).first.map(Self.ownership(from:))
    }

    public func release(room: String, node: String) async throws {
        try await database.execute("DELETE FROM parley_room_owner WHERE room = \(room) AND node = \(node)")
    }

    public func ownedRooms(now: Int64) async throws -> [RoomOwnership] {
        try await database.rows(
            "SELECT room, node, lease_until, placed_at FROM parley_room_owner WHERE lease_until > \(now) ORDER BY room"
        ).map(Self.ownership(from:))
    }

    static func ownership(from row: PostgresRandomAccessRow) throws -> RoomOwnership {
        RoomOwnership(
            room: try row["room"].decode(String.self), node: try row["node"].decode(String.self),
            leaseUntil: try row["lease_until"].decode(Int64.self), placedAt: try row["placed_at"].decode(Int64.self))
    }

    static func node(from row: PostgresRandomAccessRow) throws -> NodeRecord {
        let media = try row["media_addresses"].decode(String.self)
        return NodeRecord(
            name: try row["name"].decode(String.self), signalingURL: try row["signaling_url"].decode(String.self),
            mediaAddresses: (try? JSONDecoder().decode([String].self, from: Data(media.utf8))) ?? [],
            turnAddress: try row["turn_address"].decode(String.self), participants: try row["participants"].decode(Int.self),
            rooms: try row["rooms"].decode(Int.self), cpu: try row["cpu"].decode(Double.self), cores: try row["cores"].decode(Int.self),
            maxParticipants: try row["max_participants"].decode(Int.self), draining: try row["draining"].decode(Bool.self),
            startedAt: try row["started_at"].decode(Int64.self), leaseUntil: try row["lease_until"].decode(Int64.self))
    }
}
