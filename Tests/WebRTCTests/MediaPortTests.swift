import Addresses
import NIOCore
import NIOPosix
import STUN
import Testing
@testable import WebRTC

/// A peer on a plain UDP socket: a controlling ICE agent in miniature plus a DTLS client, enough
/// to drive a server transport through the real media port.
final class LoopbackPeer: @unchecked Sendable {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    var channel: (any Channel)!
    let received: AsyncStream<[UInt8]>
    private let continuation: AsyncStream<[UInt8]>.Continuation

    init() {
        (received, continuation) = AsyncStream.makeStream(of: [UInt8].self)
    }

    func start() async throws {
        let continuation = continuation
        channel = try await DatagramBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Collector(continuation: continuation))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    func send(_ bytes: [UInt8], to address: TransportAddress) async throws {
        var buffer = channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        try await channel.writeAndFlush(AddressedEnvelope(remoteAddress: SocketAddress(address), data: buffer))
    }

    /// The next datagram, or nil after `timeout`.
    func next(timeout: Duration = .seconds(5), where accept: @escaping @Sendable ([UInt8]) -> Bool = { _ in true }) async -> [UInt8]? {
        await withTaskGroup(of: [UInt8]?.self) { group in
            group.addTask {
                for await datagram in self.received where accept(datagram) { return datagram }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    func stop() async throws {
        try await channel.close()
        try await group.shutdownGracefully()
    }

    final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let continuation: AsyncStream<[UInt8]>.Continuation
        init(continuation: AsyncStream<[UInt8]>.Continuation) { self.continuation = continuation }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            continuation.yield(Array(envelope.data.readableBytesView))
        }
    }
}

/// Echoes every RTP packet back to its sender, as a one-participant SFU would.
final class EchoDelegate: WebRTCTransportDelegate, @unchecked Sendable {
    var connected = false
    var closedReason: WebRTCTransport.CloseReason?
    var rtpReceived = 0

    func transportDidConnect(_ transport: WebRTCTransport) { connected = true }

    func transport(_ transport: WebRTCTransport, didReceiveRTP packet: UnsafeMutableRawBufferPointer) {
        rtpReceived += 1
        var buffer = Array(packet) + [UInt8](repeating: 0, count: SRTPSession.maxTrailer)
        buffer.withUnsafeMutableBytes { _ = transport.sendRTP($0, length: packet.count) }
    }

    func transport(_ transport: WebRTCTransport, didReceiveRTCP packet: UnsafeMutableRawBufferPointer) {}

    func transport(_ transport: WebRTCTransport, didClose reason: WebRTCTransport.CloseReason) { closedReason = reason }
}

@Suite(.serialized, .timeLimit(.minutes(2))) struct MediaPortTests {
    static let clientICE = ICECredentials(ufrag: "cli1", password: "client-password-0123456789")

    static func check(to server: ICECredentials, useCandidate: Bool) -> [UInt8] {
        var builder = STUNMessageBuilder(type: .bindingRequest, transactionID: .random())
        builder.append(.username, string: "\(server.ufrag):\(clientICE.ufrag)")
        builder.append(.priority, uint32: 0x6E00_01FF)
        builder.append(.iceControlling, uint64: 7)
        if useCandidate { builder.appendFlag(.useCandidate) }
        builder.appendMessageIntegrity(key: STUNIntegrity.shortTermKey(password: server.password))
        builder.appendFingerprint()
        return builder.bytes
    }

    @Test func aPeerConnectsThroughTheMediaPortAndMediaFlowsBothWays() async throws {
        let serverGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = serverGroup.next()
        let port = MediaPort(loop: loop, port: 0)
        try await port.start(addresses: [IPAddress("127.0.0.1")!])
        let serverAddress = try await loop.submit { port.localAddresses[0] }.get()

        let serverCertificate = try DTLSCertificate()
        let clientCertificate = try DTLSCertificate()
        let serverICE = ICECredentials.random()
        let delegate = EchoDelegate()
        let transport = try await loop.submit {
            let transport = WebRTCTransport(id: "T1", localICE: serverICE, dtlsContext: try DTLSContext(certificate: serverCertificate), now: port.now())
            transport.delegate = delegate
            port.register(transport)
            try transport.configure(
                remote: .init(ice: Self.clientICE, fingerprint: clientCertificate.fingerprint, dtlsRole: .server), now: port.now())
            return transport
        }.get()

        let peer = LoopbackPeer()
        try await peer.start()

        // A check with a wrong password gets 401; a good one with USE-CANDIDATE gets success.
        var bad = Self.check(to: ICECredentials(ufrag: serverICE.ufrag, password: "nope-nope-nope-nope-nope"), useCandidate: true)
        try await peer.send(bad, to: serverAddress)
        let unauthorized = try STUNMessage(parsing: #require(await peer.next()))
        #expect(unauthorized.errorCode?.code == 401)
        bad = Self.check(to: ICECredentials(ufrag: "unknown", password: serverICE.password), useCandidate: true)
        try await peer.send(bad, to: serverAddress)  // an unknown ufrag is dropped without an answer

        try await peer.send(Self.check(to: serverICE, useCandidate: true), to: serverAddress)
        let success = try STUNMessage(parsing: #require(await peer.next()))
        #expect(success.type == .bindingSuccess)
        #expect(success.hasValidIntegrity(key: STUNIntegrity.shortTermKey(password: serverICE.password)))
        let peerPort = try #require(peer.channel.localAddress?.port)
        #expect(success.xorAddress(.xorMappedAddress) == TransportAddress(ip: IPAddress("127.0.0.1")!, port: UInt16(peerPort)))

        // DTLS: the peer is the client.
        let client = try DTLSEndpoint(
            context: try DTLSContext(certificate: clientCertificate), role: .client, remoteFingerprint: serverCertificate.fingerprint)
        for datagram in client.start() { try await peer.send(datagram, to: serverAddress) }
        while case .handshaking = client.state {
            guard let datagram = await peer.next(timeout: .seconds(5), where: { PacketKind($0.withUnsafeBytes { $0 }) == .dtls }) else { break }
            for reply in datagram.withUnsafeBytes({ client.receive($0) }) { try await peer.send(reply, to: serverAddress) }
        }
        guard case .connected(let keys) = client.state else {
            Issue.record("DTLS did not connect: \(client.state)")
            return
        }
        try await Task.sleep(for: .milliseconds(100))
        #expect(try await loop.submit { delegate.connected && transport.isConnected }.get())

        // SRTP both ways: the delegate echoes what it gets.
        let outbound = try SRTPSession(keys.local, direction: .outbound)
        let inbound = try SRTPSession(keys.remote, direction: .inbound)
        for sequence in UInt16(1)...5 {
            var packet = SRTPTests.rtpPacket(sequence: sequence) + [UInt8](repeating: 0, count: SRTPSession.maxTrailer)
            let length = try packet.withUnsafeMutableBytes { try outbound.protectRTP($0, length: 172) }
            try await peer.send(Array(packet[..<length]), to: serverAddress)
            var echoed = try #require(await peer.next { PacketKind($0.withUnsafeBytes { $0 }) == .rtp })
            let echoedLength = echoed.count
            let plain = try echoed.withUnsafeMutableBytes { try inbound.unprotectRTP($0, length: echoedLength) }
            #expect(Array(echoed[..<plain]) == SRTPTests.rtpPacket(sequence: sequence))
        }
        // A packet with a broken auth tag is counted, not delivered.
        var tampered = SRTPTests.rtpPacket(sequence: 9) + [UInt8](repeating: 0, count: SRTPSession.maxTrailer)
        let length = try tampered.withUnsafeMutableBytes { try outbound.protectRTP($0, length: 172) }
        tampered[length - 1] ^= 0xFF
        try await peer.send(Array(tampered[..<length]), to: serverAddress)
        try await peer.send([0xFF, 0x00, 0x13], to: serverAddress)  // garbage
        try await Task.sleep(for: .milliseconds(200))
        let (counters, echoes, portCounters) = try await loop.submit { (transport.counters, delegate.rtpReceived, port.counters) }.get()
        #expect(echoes == 5)
        #expect(counters.srtpFailures == 1)
        #expect(counters.rtpPacketsOut == 5)
        #expect(portCounters.droppedMalformed == 1)
        #expect(portCounters.droppedUnknownUfrag == 1)

        try await loop.submit {
            transport.close()
            port.unregister(transport)
        }.get()
        #expect(try await loop.submit { delegate.closedReason == .local && port.transportCount == 0 }.get())
        await port.stop()
        try await peer.stop()
        try await serverGroup.shutdownGracefully()
    }

    @Test func consentExpiresOnTheWorkersTick() async throws {
        let serverGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = serverGroup.next()
        let port = MediaPort(loop: loop, port: 0)
        try await port.start(addresses: [IPAddress("127.0.0.1")!], tickInterval: .milliseconds(10))
        let delegate = EchoDelegate()
        let certificate = try DTLSCertificate()
        try await loop.submit {
            // A 50 ms consent timeout stands in for the default 30 s.
            let transport = WebRTCTransport(
                id: "T2", localICE: .random(), dtlsContext: try DTLSContext(certificate: certificate), consentTimeoutNanoseconds: 50_000_000,
                now: port.now())
            transport.delegate = delegate
            port.register(transport)
        }.get()
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await loop.submit { delegate.closedReason }.get() == .consentExpired)
        await port.stop()
        try await serverGroup.shutdownGracefully()
    }

    /// A busy worker ticks its transports in slices; each still has its consent checked.
    @Test func everyTransportOfABusyWorkerIsTicked() async throws {
        let serverGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = serverGroup.next()
        let port = MediaPort(loop: loop, port: 0)
        try await port.start(addresses: [IPAddress("127.0.0.1")!], tickInterval: .milliseconds(10))
        let certificate = try DTLSCertificate()
        let count = MediaPort.slicedTickThreshold + 44
        let delegates = (0..<count).map { _ in EchoDelegate() }
        try await loop.submit {
            let context = try DTLSContext(certificate: certificate)
            for (index, delegate) in delegates.enumerated() {
                let transport = WebRTCTransport(
                    id: "T\(index)", localICE: .random(), dtlsContext: context, consentTimeoutNanoseconds: 50_000_000, now: port.now())
                transport.delegate = delegate
                port.register(transport)
            }
        }.get()
        try await Task.sleep(for: .milliseconds(400))
        let expired = try await loop.submit { delegates.filter { $0.closedReason == .consentExpired }.count }.get()
        #expect(expired == count)
        await port.stop()
        try await serverGroup.shutdownGracefully()
    }
}
