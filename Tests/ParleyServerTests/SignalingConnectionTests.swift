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
