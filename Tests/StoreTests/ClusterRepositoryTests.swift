import Foundation
import Store
import Testing

/// Nodes and room ownership in PostgreSQL. Times are passed in, so leases lapse without waiting.
@Suite struct ClusterRepositoryTests {
    func cluster() async throws -> any ClusterRepository {
        let store = try await PostgresDatabase(url: try await ThrowawayPostgres.shared.freshDatabaseURL())
        return try #require(store.cluster)
    }

    func node(_ name: String, leaseUntil: Int64, participants: Int = 0) -> NodeRecord {
        NodeRecord(
            name: name, signalingURL: "http://\(name):7880", mediaAddresses: ["10.0.0.1:7882"], turnAddress: "10.0.0.1:3478",
            participants: participants, rooms: 0, cpu: 0.25, cores: 4, maxParticipants: 100, draining: false, startedAt: 1_000,
            leaseUntil: leaseUntil)
    }

    @Test func aNodeIsLiveUntilItsLeaseLapses() async throws {
        let cluster = try await cluster()
        try await cluster.announce(node("a", leaseUntil: 10_000), rooms: [], now: 1_000)
        try await cluster.announce(node("b", leaseUntil: 12_000, participants: 3), rooms: [], now: 1_000)
        #expect(try await cluster.liveNodes(now: 9_000).map(\.name) == ["a", "b"])
        #expect(try await cluster.liveNodes(now: 9_000).last == node("b", leaseUntil: 12_000, participants: 3))
        #expect(try await cluster.liveNodes(now: 10_000).map(\.name) == ["b"])
        // A renewal moves the lease on.
        try await cluster.announce(node("a", leaseUntil: 16_000), rooms: [], now: 1_000)
        #expect(try await cluster.liveNodes(now: 13_000).map(\.name) == ["a"])
        try await cluster.withdraw(node: "a")
        #expect(try await cluster.liveNodes(now: 13_000).isEmpty)
    }

    @Test func aRoomHasOneOwnerUntilItsLeaseLapses() async throws {
        let cluster = try await cluster()
        let first = try await cluster.claim(room: "r", node: "a", now: 1_000, leaseUntil: 7_000)
        #expect(first == RoomOwnership(room: "r", node: "a", leaseUntil: 7_000, placedAt: 1_000))
        // Another node's claim while the lease runs gets the owner back, unchanged.
        #expect(try await cluster.claim(room: "r", node: "b", now: 2_000, leaseUntil: 8_000) == first)
        // The owner renews it with its announcement; rooms of other nodes are not touched.
        try await cluster.announce(node("a", leaseUntil: 9_000), rooms: ["r"], now: 1_000)
        #expect(try await cluster.owner(room: "r", now: 8_500)?.leaseUntil == 9_000)
        try await cluster.announce(node("b", leaseUntil: 20_000), rooms: ["r"], now: 1_000)
        #expect(try await cluster.owner(room: "r", now: 8_500)?.node == "a")
        // A room the node holds but whose row went (a release racing a reopen) is taken again.
        try await cluster.announce(node("b", leaseUntil: 20_000), rooms: ["s"], now: 8_000)
        #expect(try await cluster.owner(room: "s", now: 8_500) == RoomOwnership(room: "s", node: "b", leaseUntil: 20_000, placedAt: 8_000))
        // Once it lapses, the room is free and the next claim takes it.
        #expect(try await cluster.owner(room: "r", now: 9_000) == nil)
        let moved = try await cluster.claim(room: "r", node: "b", now: 9_000, leaseUntil: 15_000)
        #expect(moved == RoomOwnership(room: "r", node: "b", leaseUntil: 15_000, placedAt: 9_000))
        // The old owner's release after the move does nothing.
        try await cluster.release(room: "r", node: "a")
        #expect(try await cluster.owner(room: "r", now: 10_000)?.node == "b")
        try await cluster.release(room: "r", node: "b")
        #expect(try await cluster.owner(room: "r", now: 10_000) == nil)
    }

    @Test func aDrainingNodeHandsItsRoomToAnother() async throws {
        let cluster = try await cluster()
        _ = try await cluster.claim(room: "r", node: "a", now: 1_000, leaseUntil: 7_000)
        // Only the holder can hand it on.
        #expect(try await cluster.transfer(room: "r", from: "c", to: "b", now: 2_000, leaseUntil: 8_000) == false)
        #expect(try await cluster.transfer(room: "r", from: "a", to: "b", now: 2_000, leaseUntil: 8_000))
        #expect(try await cluster.owner(room: "r", now: 3_000) == RoomOwnership(room: "r", node: "b", leaseUntil: 8_000, placedAt: 2_000))
        // The old holder's renewal and release leave it with b.
        try await cluster.announce(node("a", leaseUntil: 9_000), rooms: ["r"], now: 3_000)
        try await cluster.release(room: "r", node: "a")
        #expect(try await cluster.owner(room: "r", now: 3_000)?.node == "b")
        #expect(try await cluster.claim(room: "r", node: "b", now: 4_000, leaseUntil: 10_000).node == "b")
        #expect(try await cluster.liveNodes(now: 3_000).first?.cores == 4)
    }

    @Test func concurrentFirstClaimsAgreeOnOneOwner() async throws {
        let cluster = try await cluster()
        for round in 0..<10 {
            let owners = try await withThrowingTaskGroup(of: String.self) { group in
                for n in 0..<4 {
                    group.addTask { try await cluster.claim(room: "room-\(round)", node: "node-\(n)", now: 1_000, leaseUntil: 5_000).node }
                }
                return try await group.reduce(into: Set<String>()) { $0.insert($1) }
            }
            #expect(owners.count == 1)
        }
        #expect(try await cluster.ownedRooms(now: 2_000).count == 10)
    }

    @Test func aWithdrawnNodeLeavesItsRoomsFree() async throws {
        let cluster = try await cluster()
        try await cluster.announce(node("a", leaseUntil: 10_000), rooms: [], now: 1_000)
        _ = try await cluster.claim(room: "x", node: "a", now: 1_000, leaseUntil: 10_000)
        try await cluster.withdraw(node: "a")
        #expect(try await cluster.claim(room: "x", node: "b", now: 2_000, leaseUntil: 8_000).node == "b")
    }
}
