import Addresses
import Foundation
import NIOConcurrencyHelpers
import NIOPosix
import STUN
import Testing
@testable import TURN

/// A blocking UDP client for the server under test, on loopback.
final class UDPTestClient {
    let descriptor: Int32
    let server: TransportAddress

    init(server: TransportAddress) {
        self.server = server
        descriptor = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var timeout = timeval(tv_sec: 3, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(descriptor) }

    func exchange(_ request: [UInt8]) throws -> STUNMessage {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = server.port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sockaddrPointer in
                request.withUnsafeBytes { sendto(descriptor, $0.baseAddress, $0.count, 0, sockaddrPointer, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        var buffer = [UInt8](repeating: 0, count: 2048)
        let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { throw CancellationError() }
        return try STUNMessage(parsing: Array(buffer[..<count]))
    }
}

/// The server with both clocks in the test's hands: allocations and nonces expire without sleeping.
@Suite(.serialized, .timeLimit(.minutes(2))) struct TURNServerClockTests {
    static let user = "ninefingers", password = "youhavetoberealistic"
    let monotonic = NIOLockedValueBox<UInt64>(1_000_000_000)
    let wall = NIOLockedValueBox<UInt64>(1_700_000_000)

    func withServer(
        configure: (inout TURNConfiguration) -> Void = { _ in }, _ body: (TURNServer, UDPTestClient) async throws -> Void
    ) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var configuration = TURNConfiguration(
            credentials: TURNCredentials(realm: "parley", sharedSecret: [], staticUsers: [Self.user: Self.password]))
        configure(&configuration)
        let monotonic = self.monotonic, wall = self.wall
        let server = TURNServer(
            configuration: configuration, group: group, now: { monotonic.withLockedValue { $0 } },
            unixTime: { wall.withLockedValue { $0 } })
        try await server.start(addresses: [IPAddress("127.0.0.1")!], port: 0, mediaAddresses: [])
        let client = UDPTestClient(server: TransportAddress(ip: IPAddress("127.0.0.1")!, port: UInt16(try #require(server.boundPort))))
        do {
            try await body(server, client)
        } catch {
            await server.stop()
            try await group.shutdownGracefully()
            throw error
        }
        await server.stop()
        try await group.shutdownGracefully()
    }

    func request(
        _ method: STUNMethod, nonce: String, lifetime: UInt32? = nil, transport: Bool = false, peers: [TransportAddress] = []
    ) -> [UInt8] {
        var builder = STUNMessageBuilder(type: STUNMessageType(method: method, class: .request), transactionID: .random())
        if transport { builder.append(.requestedTransport, [17, 0, 0, 0]) }
        for peer in peers { builder.append(.xorPeerAddress, xorAddress: peer) }
        if let lifetime { builder.append(.lifetime, uint32: lifetime) }
        builder.append(.username, string: Self.user)
        builder.append(.realm, string: "parley")
        builder.append(.nonce, string: nonce)
        builder.appendMessageIntegrity(key: STUNIntegrity.longTermKey(username: Self.user, realm: "parley", password: Self.password))
        builder.appendFingerprint()
        return builder.bytes
    }

    func nonce(from client: UDPTestClient) throws -> String {
        var builder = STUNMessageBuilder(type: STUNMessageType(method: .allocate, class: .request), transactionID: .random())
        builder.append(.requestedTransport, [17, 0, 0, 0])
        let challenge = try client.exchange(builder.bytes)
        #expect(challenge.errorCode?.code == 401)
        #expect(challenge.string(.realm) == "parley")
        return try #require(challenge.string(.nonce))
    }

    @Test func anAllocationExpiresWhenItsLifetimeRunsOut() async throws {
        try await withServer { server, client in
            let nonce = try nonce(from: client)
            let allocated = try client.exchange(request(.allocate, nonce: nonce, transport: true))
            #expect(allocated.type.messageClass == .successResponse)
            #expect(allocated.uint32(.lifetime) == 600)
            #expect(allocated.xorAddress(.xorRelayedAddress)?.ip == IPAddress("127.0.0.1"))
            #expect(allocated.hasValidIntegrity(key: STUNIntegrity.longTermKey(username: Self.user, realm: "parley", password: Self.password)))

            monotonic.withLockedValue { $0 += 599 * 1_000_000_000 }
            await server.tickAll()
            #expect(await server.statistics().allocationsActive == 1)
            let refreshed = try client.exchange(request(.refresh, nonce: nonce, lifetime: 60))
            #expect(refreshed.uint32(.lifetime) == 600)  // never below the default

            monotonic.withLockedValue { $0 += 601 * 1_000_000_000 }
            await server.tickAll()
            #expect(await server.statistics().allocationsActive == 0)
            let gone = try client.exchange(request(.refresh, nonce: nonce, lifetime: 600))
            #expect(gone.errorCode?.code == 437)
        }
    }

    @Test func anAllocationHoldsAtMostItsCapOfPermissions() async throws {
        try await withServer(configure: { $0.maxPermissionsPerAllocation = 3 }) { server, client in
            let nonce = try nonce(from: client)
            #expect(try client.exchange(request(.allocate, nonce: nonce, transport: true)).type.messageClass == .successResponse)
            let peers = (1...4).map { TransportAddress(ip: IPAddress("203.0.114.\($0)")!, port: 4000) }
            let two = try client.exchange(request(.createPermission, nonce: nonce, peers: Array(peers[..<2])))
            #expect(two.type.messageClass == .successResponse)
            // The same two again and a third: three in all, allowed.
            #expect(try client.exchange(request(.createPermission, nonce: nonce, peers: Array(peers[..<3]))).type.messageClass == .successResponse)
            let fourth = try client.exchange(request(.createPermission, nonce: nonce, peers: [peers[3]]))
            #expect(fourth.errorCode?.code == 508)
            #expect(try client.exchange(request(.channelBind, nonce: nonce, peers: [peers[3]])).errorCode?.code != nil)
            #expect(await server.statistics().permissionCapRefusals >= 1)
            // Once the permissions expire, there is room again.
            monotonic.withLockedValue { $0 += 301 * 1_000_000_000 }
            await server.tickAll()
            #expect(try client.exchange(request(.createPermission, nonce: nonce, peers: [peers[3]])).type.messageClass == .successResponse)
        }
    }

    @Test func aTCPClientThatNeverAllocatesIsClosedAfterTheIdleTimeout() async throws {
        try await withServer(configure: { $0.streamIdleSeconds = 30 }) { server, _ in
            let port = UInt16(try #require(server.boundPort))
            let idle = try TCPTestClient(port: port)
            try await waitFor { await server.statistics().tcpConnections == 1 }
            monotonic.withLockedValue { $0 += 29 * 1_000_000_000 }
            await server.tickAll()
            #expect(await server.statistics().tcpConnections == 1, "not yet")
            monotonic.withLockedValue { $0 += 2 * 1_000_000_000 }
            await server.tickAll()
            #expect(try idle.readMessage() == nil, "closed by the server")
            let statistics = await server.statistics()
            #expect(statistics.streamsClosedIdle == 1 && statistics.tcpConnections == 0)
        }
    }

    @Test func tcpConnectionsAreCappedPerSource() async throws {
        try await withServer(configure: { $0.maxStreamConnectionsPerSource = 2 }) { server, _ in
            let port = UInt16(try #require(server.boundPort))
            let first = try TCPTestClient(port: port), second = try TCPTestClient(port: port)
            try await waitFor { await server.statistics().tcpConnections == 2 }
            let third = try TCPTestClient(port: port)
            #expect(try third.readMessage() == nil, "the third from one address is closed at once")
            #expect(await server.statistics().streamsRefused == 1)
            // One leaves: room for another.
            _ = first
            shutdown(second.descriptor, Int32(SHUT_RDWR))
            try await waitFor { await server.statistics().tcpConnections == 1 }
            let fourth = try TCPTestClient(port: port)
            try await waitFor { await server.statistics().tcpConnections == 2 }
            _ = fourth
        }
    }

    func waitFor(_ condition: () async -> Bool) async throws {
        for _ in 0..<200 {
            if await condition() { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("condition not met in 2 s")
    }

    @Test func aNonceGoesStaleAfterItsLifetime() async throws {
        try await withServer { _, client in
            let nonce = try nonce(from: client)
            wall.withLockedValue { $0 += 599 }
            #expect(try client.exchange(request(.allocate, nonce: nonce, transport: true)).type.messageClass == .successResponse)
            wall.withLockedValue { $0 += 2 }
            let stale = try client.exchange(request(.refresh, nonce: nonce, lifetime: 600))
            #expect(stale.errorCode?.code == 438)
            let fresh = try #require(stale.string(.nonce))
            #expect(fresh != nonce)
            #expect(try client.exchange(request(.refresh, nonce: fresh, lifetime: 600)).type.messageClass == .successResponse)
        }
    }
}

/// A blocking TCP client: what the engine's own TCP path reads and writes.
final class TCPTestClient {
    let descriptor: Int32

    init(port: UInt16) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var timeout = timeval(tv_sec: 3, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw CancellationError() }
    }

    deinit { close(descriptor) }

    func write(_ bytes: [UInt8]) { _ = bytes.withUnsafeBytes { send(descriptor, $0.baseAddress, $0.count, 0) } }

    /// The next STUN message on the stream; nil when the server closed it.
    func readMessage() throws -> STUNMessage? {
        var header = [UInt8](repeating: 0, count: STUNMessage.headerLength)
        guard try readExactly(&header) else { return nil }
        var body = [UInt8](repeating: 0, count: Int(UInt16(header[2]) << 8 | UInt16(header[3])))
        guard try readExactly(&body) else { return nil }
        return try STUNMessage(parsing: header + body)
    }

    private func readExactly(_ buffer: inout [UInt8]) throws -> Bool {
        var filled = 0
        while filled < buffer.count {
            let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress! + filled, $0.count - filled, 0) }
            if count == 0 { return false }
            guard count > 0 else { throw CancellationError() }
            filled += count
        }
        return true
    }
}

@Suite(.serialized, .timeLimit(.minutes(2))) struct TURNOverTCPTests {
    func allocateRequest() -> [UInt8] {
        var builder = STUNMessageBuilder(type: STUNMessageType(method: .allocate, class: .request), transactionID: .random())
        builder.append(.requestedTransport, [17, 0, 0, 0])
        return builder.bytes
    }

    @Test func framesSplitOrJoinedByTheStreamAreEachAnsweredAndGarbageClosesTheConnection() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = TURNServer(
            configuration: TURNConfiguration(credentials: TURNCredentials(realm: "parley", sharedSecret: [], staticUsers: ["u": "p"])),
            group: group)
        try await server.start(addresses: [IPAddress("127.0.0.1")!], port: 0, mediaAddresses: [])
        let client = try TCPTestClient(port: UInt16(try #require(server.boundPort)))

        // One request in two pieces, a pause between.
        let first = allocateRequest()
        client.write(Array(first[..<10]))
        try await Task.sleep(for: .milliseconds(50))
        client.write(Array(first[10...]))
        let challenge = try #require(try client.readMessage())
        #expect(challenge.errorCode?.code == 401)
        #expect(try challenge.transactionID == STUNMessage(parsing: first).transactionID)

        // Two requests in one write: two answers, in order.
        let (second, third) = (allocateRequest(), allocateRequest())
        client.write(second + third)
        let ids = try [client.readMessage()?.transactionID, client.readMessage()?.transactionID]
        #expect(try ids == [STUNMessage(parsing: second).transactionID, STUNMessage(parsing: third).transactionID])
        #expect(await server.statistics().tcpConnections == 1)

        // Neither STUN nor ChannelData: the stream cannot be resynchronised, so it is closed and counted.
        client.write([0xFF, 0xFF, 0x00, 0x04, 1, 2, 3, 4])
        #expect(try client.readMessage() == nil)
        try await Task.sleep(for: .milliseconds(50))
        let statistics = await server.statistics()
        #expect(statistics.droppedMalformed == 1 && statistics.tcpConnections == 0)
        await server.stop()
        try await group.shutdownGracefully()
    }
}
