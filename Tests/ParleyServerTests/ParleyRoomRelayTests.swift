import Foundation
import NIOConcurrencyHelpers
import ParleyClient
import ParleyProtocol
import ParleyTools
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

    @Test func behindAFirewallTheDefaultPolicyFallsBackToTheRelay() async throws {
        let server = try await TestServer.start()
        let alice = try await ParleyRoom.connect(url: server.url, token: try await server.token("alice", room: "fallback"), firewall: .onlyTURN)
        // Direct checks go unanswered for two seconds, then both of alice's transports use a relay.
        let bob = try await hearEachOtherThroughAlicesRelays(server, alice: alice, room: "fallback")
        await alice.leave()
        #expect(try await server.metric("parley_turn_allocations") == 0)
        try await server.stop(leaving: bob)
    }

    @Test func withNoUDPAtAllTheRelayRunsOverTCP() async throws {
        let server = try await TestServer.start()
        let alice = try await ParleyRoom.connect(
            url: server.url, token: try await server.token("alice", room: "tcp-only"), iceTransportPolicy: .relay, firewall: .onlyTCP)
        // The Allocate over UDP goes unanswered for two seconds, then each transport allocates over TCP.
        let bob = try await hearEachOtherThroughAlicesRelays(server, alice: alice, room: "tcp-only")
        #expect(try await server.metric("parley_turn_tcp_connections") == 2)
        await alice.leave()
        #expect(try await server.metric("parley_turn_allocations") == 0)
        try await server.stop(leaving: bob)
    }

    /// Bob joins directly; he and alice publish tones and each hears the other's, alice through a
    /// relay on each of her two transports. Returns bob.
    private func hearEachOtherThroughAlicesRelays(_ server: TestServer, alice: ParleyRoom, room: String) async throws -> ParleyRoom {
        let bob = try await server.room("bob", room: room)
        let bobHears = AudioCollector(bob, from: alice.sid)
        let aliceHears = AudioCollector(alice, from: bob.sid)
        try await alice.publishTone(frequency: 587)
        try await bob.publishTone(frequency: 880)
        try await waitUntil(timeout: .seconds(20)) { bobHears.count >= 100 && aliceHears.count >= 100 }
        #expect(ToneDetector.strength(Array(ToneDetector.monoSamples(ofOpus: bobHears.payloads).suffix(48_000)), frequency: 587) > 0.5)
        #expect(ToneDetector.strength(Array(ToneDetector.monoSamples(ofOpus: aliceHears.payloads).suffix(48_000)), frequency: 880) > 0.5)
        let paths = await alice.statistics()
        #expect(paths.publisherCandidateType == .relay)
        #expect(paths.subscriberCandidateType == .relay)
        #expect(try await server.metric("parley_turn_allocations") == 2)
        return bob
    }

    /// TURN credentials last 3 s here. Once they have expired, alice's clock jumps past the
    /// allocation's refresh time (30 s of its 60): the refresh is refused and the relay lost. A
    /// resumed session brings fresh credentials; the transport allocates again with them, from a
    /// new socket (the server still holds the old 5-tuple's allocation), and the media comes back.
    @Test func aRelayRefusedForExpiredCredentialsComesBackWithTheResumedSessionsOnes() async throws {
        let server = try await TestServer.start(["turn.credentialTTL=3s", "turn.defaultLifetime=60s", "turn.maxLifetime=60s"])
        let skew = NIOLockedValueBox<UInt64>(0)
        // Without the refresh (the next test), as when `ice.servers` could not be asked in time.
        let alice = try await ParleyRoom.connect(
            url: server.url, token: try await server.token("alice", room: "expiry"), iceTransportPolicy: .relay,
            refreshesTURNCredentials: false, clock: { MediaClocks.system() + skew.withLockedValue { $0 } })
        let bob = try await server.room("bob", room: "expiry")
        let bobHears = AudioCollector(bob, from: alice.sid)
        try await alice.publishTone(frequency: 659)
        try await waitUntil { bobHears.count >= 50 }
        let firstRelay = try #require(await alice.statistics().publisherCandidateType)
        #expect(firstRelay == .relay)

        try await Task.sleep(for: .seconds(4.5))
        skew.withLockedValue { $0 = 31_000_000_000 }
        try await waitUntil(timeout: .seconds(10)) { try await server.metric("parley_turn_auth_failures_total") >= 2 }
        // Bob hears nothing more (what was in flight aside): 300 ms without a packet.
        try await waitUntil(timeout: .seconds(5)) {
            let before = bobHears.count
            try await Task.sleep(for: .milliseconds(300))
            return bobHears.count == before
        }
        let stalled = bobHears.count

        await alice.reconnect()
        try await waitUntil(timeout: .seconds(10)) { bobHears.count >= stalled + 100 }
        #expect(ToneDetector.strength(Array(ToneDetector.monoSamples(ofOpus: bobHears.payloads).suffix(48_000)), frequency: 659) > 0.5)
        #expect(await alice.statistics().publisherCandidateType == .relay)
        try await server.stop(leaving: alice, bob)
    }

    /// The room fetches new credentials before its TURN credentials expire and moves its relays
    /// to them, so an allocation refresh after the first credentials' expiry still succeeds and
    /// the media never stops, with no reconnection.
    @Test func relaysMoveToFreshCredentialsBeforeTheOldOnesExpire() async throws {
        let server = try await TestServer.start(["turn.credentialTTL=4s", "turn.defaultLifetime=60s", "turn.maxLifetime=60s"])
        let skew = NIOLockedValueBox<UInt64>(0)
        let alice = try await ParleyRoom.connect(
            url: server.url, token: try await server.token("alice", room: "renewal"), iceTransportPolicy: .relay,
            clock: { MediaClocks.system() + skew.withLockedValue { $0 } })
        let bob = try await server.room("bob", room: "renewal")
        let bobHears = AudioCollector(bob, from: alice.sid)
        try await alice.publishTone(frequency: 587)
        try await waitUntil { bobHears.count >= 50 }
        let firstCredentials = try #require(alice.joined.iceServers.compactMap(\.username).first)

        // Past the joined credentials' expiry, the allocations' refresh comes due (the media
        // clock jumps half their 60 s lifetime): it must carry the new credentials.
        try await Task.sleep(for: .seconds(5))
        #expect(alice.joined.iceServers.compactMap(\.username).first != firstCredentials)
        skew.withLockedValue { $0 = 31_000_000_000 }
        for _ in 0..<5 {
            let before = bobHears.count
            try await Task.sleep(for: .seconds(1))
            #expect(bobHears.count > before + 20, "the media went on")
        }
        #expect(try await server.metric("parley_turn_auth_failures_total") == 0)
        // Two transports' first allocations and at least one renewal of each.
        #expect(try await server.metric("parley_turn_allocations_created_total") >= 4)
        #expect(await alice.statistics().publisherCandidateType == .relay)
        #expect(ToneDetector.strength(Array(ToneDetector.monoSamples(ofOpus: bobHears.payloads).suffix(48_000)), frequency: 587) > 0.5)
        try await server.stop(leaving: alice, bob)
    }
}
