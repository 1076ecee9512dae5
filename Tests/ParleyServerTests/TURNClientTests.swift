import Addresses
import Foundation
import NIOConcurrencyHelpers
import NIOPosix
import NetworkAddress
@testable import ParleyClient
import ParleyProtocol
import STUN
import Testing
@testable import TURN

#if canImport(Glibc)
import Glibc
#endif

/// The SDK's TURN client against Parley's TURN server, both on clocks the test moves: the
/// allocation, permissions and channels outlive their lifetimes because the client renews them,
/// a stale nonce is replaced on the way, and close deallocates.
@Suite(.serialized, .timeLimit(.minutes(1))) struct TURNClientTests {
    static let user = "alice", password = "wonderland"

    /// A TURN server on loopback (loopback peers allowed), the client's socket, and both clocks.
    final class Harness: @unchecked Sendable {
        let server: TURNServer
        let serverAddress: TransportAddress
        let socket: LoopbackSocket
        let monotonic: NIOLockedValueBox<UInt64>
        let wall: NIOLockedValueBox<UInt64>
        var client: TURNClient

        init(
            server: TURNServer, serverAddress: TransportAddress, monotonic: NIOLockedValueBox<UInt64>, wall: NIOLockedValueBox<UInt64>,
            password: String
        ) throws {
            self.server = server
            self.serverAddress = serverAddress
            self.monotonic = monotonic
            self.wall = wall
            socket = try LoopbackSocket()
            client = TURNClient(server: serverAddress, username: TURNClientTests.user, password: password)
        }

        var now: UInt64 { monotonic.withLockedValue { $0 } }

        /// Moves the client's and the server's monotonic clocks together.
        func advance(seconds: UInt64) { monotonic.withLockedValue { $0 += seconds * 1_000_000_000 } }

        /// Sends requests and returns what the client sends after reading their answers.
        func answer(_ requests: [[UInt8]]) -> [[UInt8]] {
            for request in requests { socket.send(request, to: serverAddress) }
            var followUps: [[UInt8]] = []
            for _ in requests {
                guard let reply = socket.receive() else {
                    Issue.record("the TURN server did not answer")
                    return []
                }
                if case .control(let more) = reply.bytes.withUnsafeBytes({ client.receive($0, now: now) }) { followUps += more }
            }
            return followUps
        }

        /// Sends requests, and the client's follow-ups to their answers, until it has nothing more to ask.
        func converse(_ requests: [[UInt8]]) {
            var outstanding = requests
            while !outstanding.isEmpty { outstanding = answer(outstanding) }
        }

        /// Data a peer sent to the relayed address, as the client unwraps it.
        func receiveRelayed() -> (peer: TransportAddress, bytes: [UInt8])? {
            guard let datagram = socket.receive() else { return nil }
            guard case .relayed(let peer, let range) = datagram.bytes.withUnsafeBytes({ client.receive($0, now: now) }) else { return nil }
            return (peer, Array(datagram.bytes[range]))
        }
    }

    func withHarness(password: String = Self.password, _ body: (Harness) async throws -> Void) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let monotonic = NIOLockedValueBox<UInt64>(1_000_000_000)
        let wall = NIOLockedValueBox<UInt64>(1_700_000_000)
        let configuration = TURNConfiguration(
            credentials: TURNCredentials(realm: "parley", sharedSecret: [], staticUsers: [Self.user: Self.password]),
            policy: PeerPolicy(allowed: [IPRange("127.0.0.0/8")!]))
        let server = TURNServer(
            configuration: configuration, group: group, now: { monotonic.withLockedValue { $0 } }, unixTime: { wall.withLockedValue { $0 } })
        try await server.start(addresses: [IPAddress("127.0.0.1")!], port: 0, mediaAddresses: [])
        let address = TransportAddress(ip: IPAddress("127.0.0.1")!, port: UInt16(try #require(server.boundPort)))
        var failure: (any Error)?
        do {
            try await body(try Harness(server: server, serverAddress: address, monotonic: monotonic, wall: wall, password: password))
        } catch {
            failure = error
        }
        await server.stop()
        try await group.shutdownGracefully()
        if let failure { throw failure }
    }

    @Test func anAllocationRelaysBothWaysAndOutlivesItsLifetimesUntilClosed() async throws {
        try await withHarness { harness in
            harness.converse(harness.client.start(now: harness.now))
            let relayed = try #require(harness.client.relayedAddress)
            #expect(relayed.ip == IPAddress("127.0.0.1"))

            // The permission first; until the channel is bound, data rides Send indications.
            let peer = try LoopbackSocket()
            let permission = harness.client.permit([peer.address], now: harness.now)
            #expect(permission.count == 1)
            let channelBind = harness.answer(permission)
            #expect(try channelBind.map { try STUNMessage(parsing: $0).type.method } == [.channelBind])
            #expect(harness.client.canRelay(to: peer.address))
            let indication = try #require(harness.client.frame([1, 2, 3], to: peer.address))
            #expect(try STUNMessage(parsing: indication).type == STUNMessageType(method: .send, class: .indication))
            harness.socket.send(indication, to: harness.serverAddress)
            #expect(peer.receive()?.bytes == [1, 2, 3])

            harness.converse(channelBind)
            let framed = try #require(harness.client.frame([4, 5, 6], to: peer.address))
            #expect(framed.withUnsafeBytes { ChannelData($0)?.channel } == ChannelData.channelRange.lowerBound)
            harness.socket.send(framed, to: harness.serverAddress)
            let delivered = try #require(peer.receive())
            #expect(delivered.bytes == [4, 5, 6])
            #expect(delivered.source == relayed)
            peer.send([7, 8, 9], to: relayed)
            let back = try #require(harness.receiveRelayed())
            #expect(back.peer == peer.address)
            #expect(back.bytes == [7, 8, 9])

            // Permissions are renewed every 4 minutes, before their 5 run out.
            harness.advance(seconds: 240)
            #expect(harness.client.tick(now: harness.now - 1).isEmpty)
            let renewal = harness.client.tick(now: harness.now)
            #expect(try renewal.map { try STUNMessage(parsing: $0).type.method } == [.createPermission])
            harness.converse(renewal)

            // At 540 s the allocation (600 s), the permission and the channel (600 s) are due; the
            // nonce has gone stale meanwhile, so each request is refused with 438 and sent again.
            harness.wall.withLockedValue { $0 += 601 }
            harness.advance(seconds: 300)
            let due = harness.client.tick(now: harness.now)
            #expect(Set(try due.map { try STUNMessage(parsing: $0).type.method }) == [.refresh, .createPermission, .channelBind])
            let retried = harness.answer(due)
            #expect(retried.count == 3)
            harness.converse(retried)
            #expect(harness.client.relayedAddress == relayed)
            #expect(await harness.server.statistics().authFailures == 0)

            harness.advance(seconds: 120)
            await harness.server.tickAll()
            #expect(await harness.server.statistics().allocationsActive == 1)
            peer.send([10], to: relayed)
            #expect(harness.receiveRelayed()?.bytes == [10])

            harness.converse(harness.client.close(now: harness.now))
            #expect(harness.client.state == .closed)
            #expect(await harness.server.statistics().allocationsActive == 0)
        }
    }

    @Test func aWrongPasswordFailsTheAllocation() async throws {
        try await withHarness(password: "not the password") { harness in
            harness.converse(harness.client.start(now: harness.now))
            #expect(harness.client.state == .failed(.unauthorized))
            #expect(await harness.server.statistics().authFailures == 1)
        }
    }

    @Test func anUnansweredAllocateIsRetransmittedThenTimesOut() {
        var client = TURNClient(server: TransportAddress(ip: IPAddress("192.0.2.1")!, port: 3478), username: "u", password: "p")
        let allocate = client.start(now: 0)
        var sentAt: [UInt64] = []
        for now in stride(from: UInt64(0), to: 9_500_000_000, by: 50_000_000) {
            if client.tick(now: now) == allocate { sentAt.append(now) }
        }
        #expect(sentAt == [250_000_000, 750_000_000, 1_750_000_000, 3_750_000_000, 7_750_000_000])
        #expect(client.state == .allocating)
        #expect(client.tick(now: 9_500_000_000).isEmpty)
        #expect(client.state == .failed(.timedOut(method: "Allocate")))
    }

    @Test func turnURLsAreReadAsRFC7065WritesThem() {
        #expect(TURNServerURL("turn:127.0.0.1:3478?transport=udp", username: "u", password: "p")?.port == 3478)
        #expect(TURNServerURL("turn:example.org", username: "u", password: "p")?.host == "example.org")
        #expect(TURNServerURL("turn:[::1]:5349", username: "u", password: "p").map { "\($0.host) \($0.port)" } == "::1 5349")
        #expect(TURNServerURL("turn:127.0.0.1:3478?transport=tcp", username: "u", password: "p")?.overTCP == true)
        #expect(TURNServerURL("turn:127.0.0.1:3478?transport=sctp", username: "u", password: "p") == nil)
        let secure = TURNServerURL("turns:relay.example.org?transport=tcp", username: "u", password: "p")
        #expect(secure?.overTLS == true && secure?.overTCP == true && secure?.port == 5349 && secure?.host == "relay.example.org")
        #expect(TURNServerURL("turns:127.0.0.1:443", username: "u", password: "p")?.port == 443)
        #expect(TURNServerURL("turns:127.0.0.1:5349?transport=udp", username: "u", password: "p") == nil)
        #expect(TURNServerURL("stun:127.0.0.1:3478", username: "u", password: "p") == nil)
        let servers = [
            ICEServer(urls: ["stun:10.0.0.1:3478"]),
            ICEServer(urls: ["turn:10.0.0.1:3478?transport=tcp", "turn:10.0.0.1:3478?transport=udp"], username: "u", credential: "p"),
        ]
        #expect(TURNServerURL.first(in: servers) == TURNServerURL("turn:10.0.0.1:3478", username: "u", password: "p"))
        #expect(TURNServerURL.firstOverTCP(in: servers)?.overTCP == true)
        // TLS comes after UDP and plain TCP; alone it is the one.
        let withTLS = [ICEServer(urls: ["turns:10.0.0.1:5349?transport=tcp", "turn:10.0.0.1:3478?transport=tcp"], username: "u", credential: "p")]
        #expect(TURNServerURL.first(in: withTLS)?.overTLS == false && TURNServerURL.firstOverTCP(in: withTLS)?.overTLS == false)
        let onlyTLS = [ICEServer(urls: ["turns:10.0.0.1:5349?transport=tcp"], username: "u", credential: "p")]
        #expect(TURNServerURL.first(in: onlyTLS)?.overTLS == true)
    }
}

/// A non-blocking UDP socket on loopback that a test reads with a timeout.
final class LoopbackSocket: @unchecked Sendable {
    let descriptor: Int32
    let address: TransportAddress

    init() throws {
        descriptor = try bindUDPSocket(TransportAddress(ip: IPAddress("127.0.0.1")!, port: 0))
        guard let bound = localAddress(of: descriptor) else { throw SocketError(operation: "getsockname", code: errno) }
        address = bound
    }

    deinit { close(descriptor) }

    func send(_ bytes: [UInt8], to target: TransportAddress) {
        let raw = RawSocketAddress(target)
        withUnsafeBytes(of: raw.storage) { storage in
            let sockaddrPointer = storage.baseAddress!.assumingMemoryBound(to: sockaddr.self)
            _ = bytes.withUnsafeBytes { sendto(descriptor, $0.baseAddress, $0.count, 0, sockaddrPointer, raw.length) }
        }
    }

    /// The next datagram and its source, or nil after `timeoutMilliseconds`.
    func receive(timeoutMilliseconds: Int32 = 2000) -> (bytes: [UInt8], source: TransportAddress)? {
        var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, timeoutMilliseconds) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 2048)
        var storage = sockaddr_in6()
        var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        let count = buffer.withUnsafeMutableBytes { bytes in
            withUnsafeMutableBytes(of: &storage) { raw in
                recvfrom(descriptor, bytes.baseAddress, bytes.count, 0, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), &length)
            }
        }
        var source = RawSocketAddress()
        source.storage = storage
        source.length = length
        guard count >= 0, let from = source.transportAddress else { return nil }
        return (Array(buffer[..<count]), from)
    }
}
