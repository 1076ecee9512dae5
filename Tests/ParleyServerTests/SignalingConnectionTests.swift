import NIOCore
import Testing
@testable import ParleyServer

/// A slow client's outbox is bounded in frames and in bytes; what the writer took frees room.
@Suite struct SignalingConnectionTests {
    @Test func aFewLargeFramesOverflowTheByteBoundBeforeTheFrameBound() {
        let connection = SignalingConnection(limit: 4096, byteLimit: 100_000)
        let large = String(repeating: "x", count: 30_000)
        #expect(connection.send(large) && connection.send(large) && connection.send(large))
        #expect(connection.bytesQueued == 90_000)
        #expect(!connection.send(large), "a fourth would pass 100,000 bytes")
        #expect(connection.requestedClose == .overflow)
    }

    @Test func writtenFramesFreeTheirBytes() {
        let connection = SignalingConnection(limit: 4096, byteLimit: 100_000)
        let large = String(repeating: "y", count: 60_000)
        #expect(connection.send(large))
        connection.written(large)
        #expect(connection.bytesQueued == 0)
        #expect(connection.send(large))
        #expect(connection.requestedClose == nil)
    }

    @Test func theFrameBoundStillHolds() {
        let connection = SignalingConnection(limit: 16)
        for _ in 0..<16 { #expect(connection.send("{}")) }
        #expect(!connection.send("{}"))
        #expect(connection.requestedClose == .overflow)
    }

    @Test func aRefusedRequestsIdIsFoundWithoutDecoding() {
        var buffer = ByteBuffer(string: #"{"type": "ping", "id": "abc-1"}"#)
        #expect(SignalingSession.requestID(buffer) == "abc-1")
        buffer = ByteBuffer(string: #"{"type":"ping"}"#)
        #expect(SignalingSession.requestID(buffer) == nil)
        buffer = ByteBuffer(string: #"{"id":12}"#)
        #expect(SignalingSession.requestID(buffer) == nil)
    }
}

/// The HTTP API's per-client buckets: a burst, then the rate; clients apart; refilled ones swept.
@Suite struct ClientRateLimiterTests {
    @Test func eachClientGetsItsBurstThenTheRate() {
        let limiter = ClientRateLimiter(perSecond: 10, burst: 5)
        let first = (0..<8).filter { _ in limiter.take("10.0.0.1", now: .zero) }.count
        #expect(first == 5)
        #expect(limiter.take("10.0.0.2", now: .zero), "another client has its own bucket")
        #expect(limiter.take("10.0.0.1", now: .milliseconds(100)), "one more after 100 ms at 10/s")
        #expect(!limiter.take("10.0.0.1", now: .milliseconds(100)))
    }

    @Test func refilledBucketsAreSwept() {
        let limiter = ClientRateLimiter(perSecond: 10, burst: 5)
        for index in 0..<100 { _ = limiter.take("10.0.1.\(index)", now: .zero) }
        #expect(limiter.trackedClients == 100)
        _ = limiter.take("10.0.0.9", now: .seconds(11))
        #expect(limiter.trackedClients == 1)
    }
}
