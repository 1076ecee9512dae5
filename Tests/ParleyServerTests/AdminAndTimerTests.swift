import Auth
import Foundation
import ParleyClient
import ParleyProtocol
@testable import ParleyServer
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

@Suite(.timeLimit(.minutes(1))) struct AdminAPITests {
    @Test func roomsCanBeCreatedListedReadAndDeleted() async throws {
        let server = try await TestServer.start()
        let created = try await server.http("POST", "/v1/rooms", body: ["name": "board", "maxParticipants": 5, "emptyTimeout": 60, "metadata": "q3"])
        #expect(created.status == 201)
        #expect(created.json["name"] as? String == "board")
        #expect(created.json["maxParticipants"] as? Int == 5)
        #expect(created.json["metadata"] as? String == "q3")
        #expect(try await server.http("POST", "/v1/rooms", body: ["name": "board"]).status == 409)
        #expect(try await server.http("POST", "/v1/rooms", body: ["nom": "x"]).json["error"] != nil)

        let (alice, _) = try await server.join("alice", room: "board")
        let list = try await server.http("GET", "/v1/rooms")
        let rooms = list.json["rooms"] as? [[String: Any]] ?? []
        #expect(rooms.map { $0["name"] as? String } == ["board"])
        #expect(rooms.first?["numParticipants"] as? Int == 1)
        #expect(try await server.http("GET", "/v1/rooms/board").json["sid"] as? String == created.json["sid"] as? String)
        #expect(try await server.http("GET", "/v1/rooms/nowhere").status == 404)

        let participants = try await server.http("GET", "/v1/rooms/board/participants").json["participants"] as? [[String: Any]]
        #expect(participants?.map { $0["identity"] as? String } == ["alice"])

        #expect(try await server.http("DELETE", "/v1/rooms/board").status == 204)
        #expect(try await alice.next(RoomClosed.self).reason == "deleted")
        #expect(await alice.closed() != nil)
        #expect(try await server.http("GET", "/v1/rooms/board").status == 404)
        try await server.stop()
    }

    @Test func kickRemovesAParticipant() async throws {
        let server = try await TestServer.start()
        let (alice, _) = try await server.join("alice")
        let (bob, bobJoined) = try await server.join("bob")
        _ = try await alice.next(ParticipantJoined.self)
        #expect(try await server.http("DELETE", "/v1/rooms/standup/participants/bob").status == 204)
        #expect(try await bob.next(ParticipantLeft.self).reason == .kicked)
        #expect(await bob.closed() != nil)
        let left = try await alice.next(ParticipantLeft.self)
        #expect(left == ParticipantLeft(participant: bobJoined.participant.sid, identity: "bob", reason: .kicked))
        #expect(try await server.http("DELETE", "/v1/rooms/standup/participants/bob").status == 404)
        try await server.stop()
    }

    @Test func messagesCanBeReadAndPostedAsTheSystem() async throws {
        let server = try await TestServer.start()
        let (alice, _) = try await server.join("alice")
        _ = try await alice.request(ChatSend(text: "to bob only", clientMsgId: "d", to: ["bob"]))
        let posted = try await server.http("POST", "/v1/rooms/standup/messages", body: ["text": "Maintenance at noon"])
        #expect(posted.status == 201)
        let live = try await alice.next(ChatEvent.self).message
        #expect(live.text == "Maintenance at noon")
        #expect(live.system == true)
        #expect(live.seq == 2)
        let history = try await server.http("GET", "/v1/rooms/standup/messages?limit=10")
        let texts = (history.json["messages"] as? [[String: Any]])?.map { $0["text"] as? String }
        // The admin sees direct messages too.
        #expect(texts == ["to bob only", "Maintenance at noon"])
        #expect(try await server.http("GET", "/v1/rooms/standup/messages?limit=0").status == 400)
        #expect(try await server.http("GET", "/v1/rooms/standup/messages?before=x").status == 400)
        try await server.stop()
    }

    @Test func adminCallsNeedAnAdminToken() async throws {
        let server = try await TestServer.start()
        #expect(try await server.http("GET", "/v1/rooms", token: nil).status == 401)
        let noAuth = try await server.http("GET", "/v1/rooms", token: nil)
        #expect((noAuth.json["error"] as? [String: Any])?["code"] as? String == "unauthorized")
        #expect(try await server.http("GET", "/v1/rooms", token: "not-a-jwt").status == 401)
        let member = try await server.token("alice")
        #expect(try await server.http("GET", "/v1/rooms", token: member).status == 403)
        // A room-scoped admin manages only its room.
        let scoped = try await server.token("ops", grants: Grants(room: "standup", admin: true))
        #expect(try await server.http("POST", "/v1/rooms", body: ["name": "standup"], token: scoped).status == 201)
        #expect(try await server.http("POST", "/v1/rooms", body: ["name": "other"], token: scoped).status == 403)
        #expect(try await server.http("GET", "/v1/rooms", token: scoped).status == 403)
        try await server.stop()
    }

    @Test func healthReadinessMetricsAndDevTokens() async throws {
        let server = try await TestServer.start()
        #expect(try await server.http("GET", "/healthz", token: nil).status == 200)
        #expect(try await server.http("GET", "/readyz", token: nil).status == 200)
        let dev = try await server.http("GET", "/v1/dev/token?room=lobby&identity=zoe&name=Zoe", token: nil)
        let token = try #require(dev.json["token"] as? String)
        let client = try await SignalingClient.connect(url: server.url, token: token)
        let joined = try await client.next(Joined.self)
        #expect(joined.participant.name == "Zoe")
        #expect(joined.room.name == "lobby")
        _ = try await client.request(ChatSend(text: "hi", clientMsgId: "1"))
        try await client.sendRaw("nope")
        _ = try await client.next(ErrorReply.self)

        let metrics = try await server.http("GET", "/metrics", token: nil).json["_text"] as? String ?? ""
        for line in [
            "parley_rooms 1", "parley_participants 1", "parley_websocket_connections 1", "parley_chat_messages_total 1",
            #"parley_signaling_errors_total{code="bad_request"} 1"#,
        ] {
            #expect(metrics.contains(line), "metrics lack \(line)")
        }
        #expect(metrics.contains("parley_http_request_duration_seconds_bucket"))
        try await server.stop()
    }

    @Test func metricsCanRequireAToken() async throws {
        let server = try await TestServer.start(["metrics.token=scrape-me"])
        #expect(try await server.http("GET", "/metrics", token: nil).status == 401)
        #expect(try await server.http("GET", "/metrics", token: "scrape-me").status == 200)
        try await server.stop()
    }

    @Test func devTokensExistOnlyInDevMode() async throws {
        let config = try ParleyConfig.load(ConfigSources(overrides: [
            "server.host=127.0.0.1", "server.port=0", "auth.keys=prod:long-enough-secret-of-32-bytes-or-more",
            "store.path=\(FileManager.default.temporaryDirectory.path)/parley-nodev-\(UUID().uuidString)/p.sqlite",
        ]))
        let server = try await ParleyServer(config: config)
        let task = Task { try await server.run() }
        let port = await server.listeningPort()
        let (_, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/v1/dev/token?room=a&identity=b")!)
        #expect((response as? HTTPURLResponse)?.statusCode == 404)
        await server.shutdown()
        try await task.value
    }
}

/// Timers run on a manual clock: nothing here sleeps through a real timeout.
@Suite(.timeLimit(.minutes(1))) struct RoomTimerTests {
    @Test func aLostConnectionIsHeldForTheResumeWindowThenLeaves() async throws {
        let clock = ManualClock()
        let server = try await TestServer.start(clock: clock, ["signaling.resumeWindow=20s", "room.emptyTimeout=60s"])
        let (alice, _) = try await server.join("alice")
        let (bob, bobJoined) = try await server.join("bob")
        _ = try await alice.next(ParticipantJoined.self)
        let sleepersBefore = clock.sleeperCount
        await bob.drop()
        try await waitUntil { clock.sleeperCount > sleepersBefore }
        clock.advance(by: .seconds(19))
        #expect(await alice.expectNothing(ParticipantLeft.self, within: .milliseconds(200)))
        clock.advance(by: .seconds(1))
        let left = try await alice.next(ParticipantLeft.self)
        #expect(left == ParticipantLeft(participant: bobJoined.participant.sid, identity: "bob", reason: .disconnected))
        // Too late to resume: a fresh session.
        let (_, again) = try await server.join("bob", resume: bobJoined.participant.sid)
        #expect(!again.resumed)
        try await server.stop()
    }

    @Test func anEmptyRoomClosesAfterItsTimeout() async throws {
        let clock = ManualClock()
        let server = try await TestServer.start(clock: clock, ["room.emptyTimeout=5m"])
        let (alice, aliceJoined) = try await server.join("alice")
        try await alice.send(Leave())
        _ = await alice.closed()
        let registry = server.server.registry
        try await waitUntil { clock.sleeperCount >= 2 }  // the room's first countdown and the one after leaving
        clock.advance(by: .seconds(299))
        try await Task.sleep(for: .milliseconds(50))
        #expect(await registry.room(named: "standup") != nil)
        clock.advance(by: .seconds(1))
        try await waitUntil { await registry.room(named: "standup") == nil }
        // Joining again opens a new room with a new sid, and the history is still there.
        let (_, rejoined) = try await server.join("alice")
        #expect(rejoined.room.sid != aliceJoined.room.sid)
        try await server.stop()
    }

    @Test func aRoomThatSomeoneJoinedDoesNotClose() async throws {
        let clock = ManualClock()
        let server = try await TestServer.start(clock: clock, ["room.emptyTimeout=10s"])
        let created = try await server.http("POST", "/v1/rooms", body: ["name": "kept"])
        #expect(created.status == 201)
        let (alice, _) = try await server.join("alice", room: "kept")
        clock.advance(by: .seconds(30))
        try await Task.sleep(for: .milliseconds(50))
        #expect(try await alice.request(Ping()).type == "pong")
        #expect(await server.server.registry.room(named: "kept") != nil)
        try await server.stop()
    }
}
