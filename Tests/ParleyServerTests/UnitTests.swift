import Foundation
import ParleyProtocol
@testable import ParleyServer
import Testing

@Suite struct TokenBucketTests {
    @Test func allowsABurstThenTheSustainedRate() {
        var bucket = TokenBucket(perSecond: 10, burst: 20, now: .zero)
        let burst = (0..<25).filter { _ in bucket.take(now: .zero) }.count
        #expect(burst == 20)
        // 100 ms refills one token at 10/s.
        let refilled = bucket.take(now: .milliseconds(100))
        let exhausted = bucket.take(now: .milliseconds(100))
        #expect(refilled)
        #expect(!exhausted)
        // A long pause refills only up to the burst.
        let afterPause = (0..<30).filter { _ in bucket.take(now: .seconds(60)) }.count
        #expect(afterPause == 20)
    }

    @Test func zeroRateMeansUnlimited() {
        var bucket = TokenBucket(perSecond: 0, burst: 1, now: .zero)
        #expect((0..<1000).allSatisfy { _ in bucket.take(now: .zero) })
    }
}

@Suite struct ManualClockTests {
    @Test func sleepersWakeOnlyWhenTheirDeadlinePasses() async throws {
        let clock = ManualClock()
        let start = clock.wallMilliseconds()
        let woke = LockedFlags()
        let short = Task { try await clock.sleep(for: .seconds(5)); woke.set("short") }
        let long = Task { try await clock.sleep(for: .seconds(20)); woke.set("long") }
        try await waitUntil { clock.sleeperCount == 2 }
        clock.advance(by: .seconds(4))
        try await Task.sleep(for: .milliseconds(20))
        #expect(woke.all.isEmpty)
        clock.advance(by: .seconds(1))
        try await short.value
        #expect(woke.all == ["short"])
        long.cancel()
        await #expect(throws: CancellationError.self) { try await long.value }
        #expect(clock.wallMilliseconds() - start == 5_000)
    }
}

@Suite struct DurationTextTests {
    @Test func parsesAndFormats() {
        #expect(DurationText.parse("250ms") == .milliseconds(250))
        #expect(DurationText.parse("20s") == .seconds(20))
        #expect(DurationText.parse("5m") == .seconds(300))
        #expect(DurationText.parse("6h") == .seconds(21600))
        #expect(DurationText.parse("2d") == .seconds(172_800))
        #expect(DurationText.parse("45") == .seconds(45))
        #expect(DurationText.parse("-1s") == nil)
        #expect(DurationText.parse("soon") == nil)
        #expect(DurationText.format(.seconds(300)) == "5m")
        #expect(DurationText.format(.milliseconds(1500)) == "1500ms")
        #expect(DurationText.format(.seconds(20)) == "20s")
    }
}

@Suite struct SignalCodecTests {
    let codec = SignalCodec()

    func error(_ text: String) -> RequestDecodingError? {
        if case .failure(let failure) = codec.decodeRequest(text) { return failure }
        return nil
    }

    @Test func decodesRequestsWithTheirIds() throws {
        let decoded = try codec.decodeRequest(#"{"type":"chat.send","id":"7","text":"hi","to":["bob"],"clientMsgId":"u"}"#).get()
        #expect(decoded.id == "7")
        #expect(decoded.request == .chatSend(ChatSend(text: "hi", clientMsgId: "u", to: ["bob"])))
        #expect(try codec.decodeRequest(#"{"type":"ping"}"#).get().request == .ping)
        #expect(try codec.decodeRequest(#"{"type":"ice.servers","id":"r1"}"#).get().request == .iceServers)
        #expect(try codec.decodeRequest(#"{"type":"presence.set","status":"dnd"}"#).get().request == .presenceSet(PresenceSet(status: .dnd)))
    }

    @Test func namesWhatIsWrong() {
        #expect(error("not json")?.error == ProtocolError(.badRequest, "frame is not a JSON object"))
        #expect(error("[1,2]")?.error.code == .badRequest)
        #expect(error(#"{"id":"1"}"#)?.error == ProtocolError(.badRequest, #"missing field "type""#))
        let unknown = error(#"{"type":"teleport","id":"9"}"#)
        #expect(unknown?.id == "9")
        #expect(unknown?.error == ProtocolError(.badRequest, #"unknown message type "teleport""#))
        #expect(error(#"{"type":"chat.send","id":"2"}"#)?.error == ProtocolError(.badRequest, #"missing field "text""#))
        #expect(error(#"{"type":"chat.send","text":5}"#)?.error == ProtocolError(.badRequest, #"field "text" must be a string"#))
        #expect(error(#"{"type":"chat.history","limit":"x"}"#)?.error == ProtocolError(.badRequest, #"field "limit" must be an integer"#))
        #expect(error(#"{"type":"chat.send","text":"a","to":[1]}"#)?.error == ProtocolError(.badRequest, #"field "to[0]" must be a string"#))
        #expect(error(#"{"type":"presence.set","status":"asleep"}"#)?.error.message.contains("status") == true)
        #expect(error(#"{"type":"ping","id":5}"#)?.error == ProtocolError(.badRequest, #"field "id" must be a string"#))
    }

    @Test func encodesTypeReAndFieldsInOneObject() throws {
        let text = codec.encode(ChatHistory(ChatPage(messages: [], hasMore: true)), re: "4")
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        #expect(object?["type"] as? String == "chat.history")
        #expect(object?["re"] as? String == "4")
        #expect(object?["hasMore"] as? Bool == true)
        #expect((object?["messages"] as? [Any])?.isEmpty == true)
        let decoded = try codec.decode(ChatHistory.self, from: text)
        #expect(decoded.hasMore)
    }
}

/// Flags set from several tasks.
final class LockedFlags: @unchecked Sendable {
    private let lock = NSLock()
    private var flags: [String] = []
    func set(_ flag: String) { lock.withLock { flags.append(flag) } }
    var all: [String] { lock.withLock { flags } }
}

/// Polls `condition` until it holds, for at most `timeout`.
func waitUntil(timeout: Duration = .seconds(20), _ condition: @Sendable () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(5))
    }
    Issue.record("condition not met within \(timeout)")
    throw CancellationError()
}
