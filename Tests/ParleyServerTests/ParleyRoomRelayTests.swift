import Foundation
import ParleyClient
import ParleyProtocol
import Testing

/// The SDK with `iceTransportPolicy: .relay` against a live server: its media goes through
/// Parley's own TURN server, with the credentials `joined` carries (loopback stays closed to
/// relays; the SFU's media ports are always reachable), and a refused credential ends `connect`.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ParleyRoomRelayTests {
    @Test func aRelayOnlyParticipantIsHeardAndHearsThroughParleysTURN() async throws {
        let server = try await TestServer.start()
        let alice = try await ParleyRoom.connect(
            url: server.url, token: try await server.token("alice", room: "relay"), iceTransportPolicy: .relay)
        let bob = try await server.room("bob", room: "relay")
        let bobHears = AudioCollector(bob, from: alice.sid)
        let aliceHears = AudioCollector(alice, from: bob.sid)
        try await alice.publishTone(frequency: 587)
        try await bob.publishTone(frequency: 880)

        try await waitUntil { bobHears.count >= 150 && aliceHears.count >= 150 }
        #expect(ToneDetector.strength(Array(ToneDetector.monoSamples(ofOpus: bobHears.payloads).suffix(48_000)), frequency: 587) > 0.5)
        #expect(ToneDetector.strength(Array(ToneDetector.monoSamples(ofOpus: aliceHears.payloads).suffix(48_000)), frequency: 880) > 0.5)
        let alicePaths = await alice.statistics()
        #expect(alicePaths.publisherCandidateType == .relay)
        #expect(alicePaths.subscriberCandidateType == .relay)
        let bobPaths = await bob.statistics()
        #expect(bobPaths.publisherCandidateType == .host)
        #expect(bobPaths.subscriberCandidateType == .host)
        #expect(try await server.metric(#"parley_turn_relayed_packets_total{direction="to_peer"}"#) >= 150)
        #expect(try await server.metric(#"parley_turn_relayed_packets_total{direction="to_client"}"#) >= 150)
        #expect(try await server.metric("parley_turn_allocations") == 2)

        // Leaving deallocates both relays rather than leaving them to expire.
        await alice.leave()
        #expect(try await server.metric("parley_turn_allocations") == 0)
        try await server.stop(leaving: bob)
    }

    @Test func aWrongTURNCredentialFailsTheConnectWithAnError() async throws {
        let server = try await TestServer.start()
        let (probe, joined) = try await server.join("probe", room: "relay-refused")
        let wrong = joined.iceServers.map { ICEServer(urls: $0.urls, username: $0.username, credential: $0.credential.map { _ in "wrong" }) }
        #expect(wrong.contains { $0.urls.contains { $0.hasPrefix("turn:") } })

        let started = ContinuousClock.now
        await #expect(throws: TURNClientError.unauthorized) {
            try await ParleyRoom.connect(
                url: server.url, token: try await server.token("alice", room: "relay-refused"), iceTransportPolicy: .relay, iceServers: wrong)
        }
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(try await server.metric("parley_turn_auth_failures_total") == 1)
        #expect(try await server.metric("parley_turn_allocations") == 0)
        // The failed connect left the room rather than waiting out a resume window in it.
        try await waitUntil { try await server.participants(in: "relay-refused").map(\.identity) == ["probe"] }
        await probe.close()
        try await server.stop()
    }

    @Test func relayWithoutATURNServerFailsAtOnce() async throws {
        let server = try await TestServer.start(["turn.enabled=false"])
        await #expect(throws: TURNClientError.noServer) {
            try await ParleyRoom.connect(url: server.url, token: try await server.token("alice", room: "no-turn"), iceTransportPolicy: .relay)
        }
        try await server.stop()
    }
}
