import Auth
import Foundation
import ParleyClient
import ParleyProtocol
@testable import ParleyServer
import Testing

@Suite(.timeLimit(.minutes(1))) struct SignalingTests {
    @Test func twoParticipantsJoinAndSeeEachOther() async throws {
        let server = try await TestServer.start()
        let (alice, aliceJoined) = try await server.join("alice")
        #expect(aliceJoined.participants.isEmpty)
        #expect(aliceJoined.room.name == "standup")
        #expect(aliceJoined.participant.identity == "alice")
        #expect(aliceJoined.participant.sid.hasPrefix("PA_"))
        #expect(aliceJoined.room.sid.hasPrefix("RM_"))
        #expect(!aliceJoined.resumed)

        let (bob, bobJoined) = try await server.join("bob")
        #expect(bobJoined.participants.map(\.identity) == ["alice"])
        #expect(bobJoined.participants[0].presence?.status == .online)
        let seen = try await alice.next(ParticipantJoined.self)
        #expect(seen.participant.identity == "bob")
        #expect(seen.participant.sid == bobJoined.participant.sid)

        let pong = try await bob.request(Ping())
        #expect(pong.type == "pong")

        try await bob.send(Leave())
        let left = try await alice.next(ParticipantLeft.self)
        #expect(left == ParticipantLeft(participant: bobJoined.participant.sid, identity: "bob", reason: .left))
        #expect(await bob.closed() != nil)
        try await server.stop()
    }

    @Test func chatReachesTheRoomAndDirectMessagesOnlyTheirParties() async throws {
        let server = try await TestServer.start()
        let (alice, _) = try await server.join("alice")
        let (bob, _) = try await server.join("bob")
        let (carol, _) = try await server.join("carol")

        let ack = try await alice.request(ChatSend(text: "hello all", clientMsgId: "m1")).decode(ChatAck.self)
        #expect(ack.message.seq == 1)
        #expect(ack.message.from.identity == "alice")
        #expect(!ack.duplicate)
        for client in [bob, carol] {
            let received = try await client.next(ChatEvent.self).message
            #expect(received == ack.message)
        }

        let dm = try await alice.request(ChatSend(text: "psst bob", clientMsgId: "m2", to: ["bob"])).decode(ChatAck.self)
        #expect(dm.message.seq == 2)
        #expect(dm.message.to == ["bob"])
        #expect(try await bob.next(ChatEvent.self).message == dm.message)

        let third = try await bob.request(ChatSend(text: "hi alice", clientMsgId: "m3")).decode(ChatAck.self)
        // Carol's next chat is the third message: she never got the DM.
        #expect(try await carol.next(ChatEvent.self).message.seq == third.message.seq)
        #expect(try await alice.next(ChatEvent.self).message == third.message)

        let carolHistory = try await carol.request(ChatHistoryRequest(limit: 10)).decode(ChatHistory.self)
        #expect(carolHistory.messages.map(\.seq) == [1, 3])
        let bobHistory = try await bob.request(ChatHistoryRequest(limit: 10)).decode(ChatHistory.self)
        #expect(bobHistory.messages.map(\.seq) == [1, 2, 3])
        let page = try await bob.request(ChatHistoryRequest(before: 3, limit: 1)).decode(ChatHistory.self)
        #expect(page.messages.map(\.seq) == [2])
        #expect(page.hasMore)

        // A retry with the same clientMsgId returns the original and is not broadcast again.
        let retry = try await alice.request(ChatSend(text: "hello all", clientMsgId: "m1")).decode(ChatAck.self)
        #expect(retry.duplicate)
        #expect(retry.message == ack.message)
        #expect(await carol.expectNothing(ChatEvent.self))

        // A newcomer gets recent history in `joined`, DMs filtered.
        let (_, daveJoined) = try await server.join("dave")
        #expect(daveJoined.chat.messages.map(\.seq) == [1, 3])
        #expect(!daveJoined.chat.hasMore)
        try await server.stop()
    }

    @Test func presenceAndTypingReachTheOthers() async throws {
        let server = try await TestServer.start()
        let (alice, aliceJoined) = try await server.join("alice")
        let (bob, _) = try await server.join("bob")
        _ = try await alice.next(ParticipantJoined.self)

        try await alice.send(TypingRequest(active: true))
        let typing = try await bob.next(TypingEvent.self)
        #expect(typing == TypingEvent(participant: aliceJoined.participant.sid, identity: "alice", active: true))
        #expect(await alice.expectNothing(TypingEvent.self, within: .milliseconds(100)))

        let reply = try await alice.request(PresenceSet(status: .away, text: "lunch")).decode(PresenceEvent.self)
        #expect(reply.status == .away)
        let presence = try await bob.next(PresenceEvent.self)
        #expect(presence.participant == aliceJoined.participant.sid)
        #expect(presence.status == .away)
        #expect(presence.text == "lunch")
        #expect(presence.since > 0)

        // A newcomer sees the current presence in `joined`.
        let (_, carolJoined) = try await server.join("carol")
        #expect(carolJoined.participants.first { $0.identity == "alice" }?.presence?.status == .away)
        try await server.stop()
    }

    @Test func aDuplicateIdentityReplacesTheFirstSession() async throws {
        let server = try await TestServer.start()
        let (first, firstJoined) = try await server.join("alice")
        let (bob, _) = try await server.join("bob")
        let (second, secondJoined) = try await server.join("alice")
        #expect(secondJoined.participant.sid != firstJoined.participant.sid)
        #expect(secondJoined.participants.map(\.identity) == ["bob"])

        let kicked = try await first.next(ParticipantLeft.self)
        #expect(kicked == ParticipantLeft(participant: firstJoined.participant.sid, identity: "alice", reason: .duplicateIdentity))
        #expect(await first.closed() != nil)

        let left = try await bob.next(ParticipantLeft.self)
        #expect(left.reason == .duplicateIdentity)
        #expect(left.participant == firstJoined.participant.sid)
        let joined = try await bob.next(ParticipantJoined.self)
        #expect(joined.participant.sid == secondJoined.participant.sid)
        #expect(try await second.request(Ping()).type == "pong")
        try await server.stop()
    }

    @Test func aResumedSessionKeepsItsSidAndCatchesUp() async throws {
        let server = try await TestServer.start()
        let (alice, _) = try await server.join("alice")
        let (bob, bobJoined) = try await server.join("bob")
        _ = try await alice.next(ParticipantJoined.self)
        let before = try await alice.request(ChatSend(text: "one", clientMsgId: "1")).decode(ChatAck.self)
        _ = try await bob.next(ChatEvent.self)

        await bob.drop()
        // While bob is away, two messages are sent.
        for n in 2...3 { _ = try await alice.request(ChatSend(text: "n\(n)", clientMsgId: "\(n)")) }

        let (resumed, resumedJoined) = try await server.join("bob", resume: bobJoined.participant.sid)
        #expect(resumedJoined.resumed)
        #expect(resumedJoined.participant.sid == bobJoined.participant.sid)
        let missed = try await resumed.request(ChatHistoryRequest(after: before.message.seq, limit: 50)).decode(ChatHistory.self)
        #expect(missed.messages.map(\.text) == ["n2", "n3"])
        // Alice saw no leave and no join for bob.
        #expect(await alice.expectNothing(ParticipantLeft.self))
        #expect((await alice.pending()).allSatisfy { $0.type != ParticipantJoined.type })
        // And bob's new connection carries live chat.
        _ = try await alice.request(ChatSend(text: "welcome back", clientMsgId: "4"))
        #expect(try await resumed.next(ChatEvent.self).message.text == "welcome back")
        try await server.stop()
    }

    @Test func aResumeForAnotherIdentityIsAFreshJoin() async throws {
        let server = try await TestServer.start()
        let (_, aliceJoined) = try await server.join("alice")
        let (_, mallory) = try await server.join("mallory", resume: aliceJoined.participant.sid)
        #expect(!mallory.resumed)
        #expect(mallory.participant.sid != aliceJoined.participant.sid)
        try await server.stop()
    }

    @Test func historySurvivesARestart() async throws {
        let server = try await TestServer.start()
        let (alice, _) = try await server.join("alice")
        var sent: [ChatMessage] = []
        for n in 1...5 {
            sent.append(try await alice.request(ChatSend(text: "m\(n)", clientMsgId: "id\(n)")).decode(ChatAck.self).message)
        }
        try await server.stop()
        // Stopping closed the room for alice.
        let closed = try await alice.next(RoomClosed.self)
        #expect(closed.reason == "server_shutdown")

        let restarted = try await TestServer.start(storePath: server.storePath)
        let (again, joined) = try await restarted.join("alice")
        #expect(joined.chat.messages == sent)
        let sixth = try await again.request(ChatSend(text: "m6", clientMsgId: "id6")).decode(ChatAck.self)
        #expect(sixth.message.seq == 6)
        // An ack'ed clientMsgId stays a duplicate across restarts.
        #expect(try await again.request(ChatSend(text: "m1", clientMsgId: "id1")).decode(ChatAck.self).duplicate)
        try await restarted.stop()
    }

    @Test func roomsAreSpreadAcrossMediaWorkers() async throws {
        let server = try await TestServer.start()
        var clients: [SignalingClient] = []
        for n in 0..<4 { clients.append(try await server.join("p\(n)", room: "room-\(n)").client) }
        #expect(server.server.workers.roomsPerWorker() == [2, 2])
        try await server.stop()
    }
}

@Suite(.timeLimit(.minutes(1))) struct BadInputTests {
    func expectError(_ client: SignalingClient, _ code: ErrorCode, re: String? = nil, containing text: String? = nil) async throws {
        let frame = try await client.next(timeout: .seconds(5), "error \(code)") { $0.type == ErrorReply.type }
        let error = try frame.decode(ErrorReply.self)
        #expect(error.code == code, "\(frame)")
        #expect(frame.re == re)
        if let text { #expect(error.message.contains(text), "\(error.message)") }
        // The connection stays open.
        #expect(try await client.request(Ping()).type == "pong")
    }

    @Test func everyBadFrameIsAnsweredAndTheConnectionStays() async throws {
        let server = try await TestServer.start()
        let (client, _) = try await server.join("alice")
        try await client.sendRaw("this is not json")
        try await expectError(client, .badRequest, containing: "JSON")
        try await client.sendRaw(#"{"type":"teleport","id":"t1"}"#)
        try await expectError(client, .badRequest, re: "t1", containing: "teleport")
        try await client.sendRaw(#"{"type":"chat.send","id":"t2"}"#)
        try await expectError(client, .badRequest, re: "t2", containing: "text")
        try await client.sendRaw(#"{"type":"chat.history","id":"t3","limit":"ten"}"#)
        try await expectError(client, .badRequest, re: "t3", containing: "limit")
        try await client.sendRaw(#"{"type":"chat.send","id":"t4","text":""# + String(repeating: "x", count: 70_000) + #""}"#)
        try await expectError(client, .tooLarge)
        try await client.sendBinary([0, 1, 2, 3])
        try await expectError(client, .badRequest, containing: "binary")
        try await client.sendRaw(#"{"type":"chat.send","id":"t5","text":""# + String(repeating: "y", count: 4001) + #""}"#)
        try await expectError(client, .tooLarge, re: "t5", containing: "4000")
        try await client.sendRaw(#"{"type":"presence.set","id":"t6","status":"asleep"}"#)
        try await expectError(client, .badRequest, re: "t6", containing: "status")
        try await client.sendRaw(#"{"type":"chat.history","id":"t7","limit":0}"#)
        try await expectError(client, .badRequest, re: "t7", containing: "limit")
        try await client.sendRaw("{}")
        try await expectError(client, .badRequest, containing: "type")
        // Nothing was stored by any of this.
        #expect(try await server.server.services.chat.lastSeq(room: "standup") == 0)
        try await server.stop()
    }

    @Test func chatWithoutTheGrantIsForbidden() async throws {
        let server = try await TestServer.start()
        let (client, _) = try await server.join("viewer", grants: Grants(room: "standup", join: true, subscribe: true))
        try await client.sendRaw(#"{"type":"chat.send","id":"f1","text":"hi"}"#)
        try await expectError(client, .forbidden, re: "f1", containing: "chat")
        try await server.stop()
    }

    @Test func chatBeyondTheRateLimitIsRefused() async throws {
        // Time stands still (a manual clock): the bucket refills only when the test says so.
        let clock = ManualClock()
        let server = try await TestServer.start(clock: clock)
        let (client, _) = try await server.join("alice")
        var acks = 0
        var limited = 0
        func send(_ numbers: Range<Int>) async throws {
            for n in numbers {
                do {
                    _ = try await client.request(ChatSend(text: "m\(n)", clientMsgId: "r\(n)"))
                    acks += 1
                } catch SignalingClientError.serverError(let reply) {
                    #expect(reply.code == .rateLimited)
                    limited += 1
                }
            }
        }
        try await send(0..<30)
        // The burst of 20, then refusals.
        #expect(acks == 20 && limited == 10, "acks \(acks)")
        // A second later 10 more fit (10/s).
        clock.advance(by: .seconds(1))
        try await send(30..<41)
        #expect(acks == 30 && limited == 11, "acks \(acks), limited \(limited)")
        #expect(try await server.server.services.chat.lastSeq(room: "standup") == Int64(acks))
        try await server.stop()
    }

    @Test func badTokensAreRefusedWithUnauthorized() async throws {
        let server = try await TestServer.start()
        let issuer = await TokenIssuer(apiKey: "devkey", secret: "wrong-secret")
        let forged = try await issuer.mint(identity: "eve", grants: Grants(room: "standup", join: true))
        let expired = try await server.token("eve", ttl: -10)
        let foreign = try await TokenIssuer(apiKey: "stranger", secret: "secret").mint(identity: "eve", grants: Grants(room: "standup", join: true))
        let noJoin = try await server.token("eve", grants: Grants(room: "standup", chat: true))
        // The upgrade itself is refused with the status and a JSON error naming the code.
        for token in [forged, expired, foreign, "garbage"] {
            let refused = try await server.upgrade(path: "/v1/rtc?token=\(token)")
            #expect(refused.status == 401)
            #expect(refused.body.contains(#""code":"unauthorized""#), "\(refused.body)")
        }
        let noJoinRefused = try await server.upgrade(path: "/v1/rtc?token=\(noJoin)")
        #expect(noJoinRefused.status == 403 && noJoinRefused.body.contains(#""code":"forbidden""#))
        #expect(try await server.upgrade(path: "/v1/rtc").status == 401)
        // The WebSocket client sees the upgrade fail.
        await #expect(throws: (any Error).self) { try await SignalingClient.connect(url: server.url, token: forged, resume: nil) }
        for token in [forged, expired, foreign] {
            #expect(try await server.http("GET", "/v1/rtc?token=\(token)", token: nil).status == 401)
        }
        // A plain HTTP request learns the status before any upgrade.
        #expect(try await server.http("GET", "/v1/rtc?token=garbage", token: nil).status == 401)
        #expect(try await server.http("GET", "/v1/rtc?token=\(noJoin)", token: nil).status == 403)
        try await server.stop()
    }

    @Test func aFullRoomRefusesTheNextJoiner() async throws {
        let server = try await TestServer.start()
        let created = try await server.http("POST", "/v1/rooms", body: ["name": "tiny", "maxParticipants": 1])
        #expect(created.status == 201)
        _ = try await server.join("alice", room: "tiny")
        await #expect(throws: SignalingClientError.self) { try await server.join("bob", room: "tiny") }
        #expect(server.server.metrics.render().contains(#"parley_signaling_errors_total{code="room_full"} 1"#))
        // A hidden recorder does not take a seat.
        let hidden = Grants(room: "tiny", join: true, subscribe: true, hidden: true)
        let (_, botJoined) = try await server.join("recorder", room: "tiny", grants: hidden)
        #expect(botJoined.participants.map(\.identity) == ["alice"])
        try await server.stop()
    }
}
