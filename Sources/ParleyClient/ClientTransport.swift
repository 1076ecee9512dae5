import Foundation
import NIOCore
import NIOPosix
import NetworkAddress
import struct ParleyProtocol.ICEServer
import RTP
import SDP
import STUN
import WebRTC

/// One client-side WebRTC transport (a PeerConnection's network half): a UDP socket, ICE as the
/// controlling agent against the server's candidates (Parley is ICE-lite, so only the client
/// checks), the DTLS client (`a=setup:active`), and SRTP both ways. Everything runs on `loop`.
///
/// Under `ICETransportPolicy.relay` the checks, DTLS and SRTP go through a TURN relay instead
/// (`TURNClient` keeps the allocation): ChannelData once a peer's channel is bound, Send
/// indications before; what the relay brings back takes the same receive path.
public final class ClientTransport: @unchecked Sendable {
    /// The two ends of a path: the server's candidate, and whether we reach it from our own
    /// socket (host) or through the relay.
    struct CandidatePair: Equatable {
        var remote: TransportAddress
        var local: ICECandidate.CandidateType
    }

    public let loop: any EventLoop
    private var channel: (any Channel)?
    public let localICE = ICECredentials.random()
    let dtlsContext: DTLSContext
    private var dtls: DTLSEndpoint?
    private var srtpInbound: SRTPSession?
    private var srtpOutbound: SRTPSession?
    private(set) var remoteICE: ICECredentials?
    private var remoteFingerprint: CertificateFingerprint?
    /// The DTLS role the remote description leaves us: the client unless the peer is `active`.
    private var dtlsRole: DTLSEndpoint.Role = .client
    private var candidates: [TransportAddress] = []
    private var selected: CandidatePair?
    public private(set) var iceTransportPolicy = ICETransportPolicy.all
    private var relay: TURNClient?
    /// `start` waits on the allocation, `close` on the deallocation.
    private var relayAllocated: EventLoopPromise<Void>?
    private var relayDeallocated: EventLoopPromise<Void>?
    static let deallocationWait: TimeAmount = .seconds(1)
    private var lastCheck: UInt64 = 0
    private var lastDTLSTimer: UInt64 = 0
    private var timer: RepeatedTask?
    private let tieBreaker = UInt64.random(in: 0...UInt64.max)
    private var sendBuffer = [UInt8](repeating: 0, count: 1500 + SRTPSession.maxTrailer + 16)
    /// Decrypted RTP and RTCP, on the loop (the buffer is valid during the call).
    public var onRTP: ((UnsafeRawBufferPointer, RTPHeader, UInt64) -> Void)?
    public var onRTCP: ((UnsafeRawBufferPointer, UInt64) -> Void)?
    /// Runs on every 20 ms tick with the time (senders pace their packets here).
    public var onTick: ((UInt64) -> Void)?
    public private(set) var counters = Counters()
    /// Reception statistics and NACK state of what we receive; counts and send history of
    /// what we send. The connections announce their SSRCs here.
    var inbound = InboundStreams()
    var outbound = OutboundStreams()
    /// Our SSRC and CNAME in the RTCP we send.
    let rtcpSSRC = UInt32.random(in: 1...UInt32.max)
    private let cname = "parley-\(UInt32.random(in: 1...UInt32.max))"
    private var lastReportAt: UInt64 = 0
    /// Receiver reports go out once a second (RFC 3550 allows more; the SFU reports as often).
    static let reportIntervalNanoseconds: UInt64 = 1_000_000_000
    /// Tests: simulated network loss. A received RTP packet this returns true for is discarded
    /// before SRTP, as if lost on the way.
    public var dropsIncomingRTP: ((RTPHeader) -> Bool)?
    /// Tests: simulated network loss of sent RTP packets (originals and retransmissions alike),
    /// after they were counted and kept for retransmission.
    public var dropsOutgoingRTP: ((RTPHeader) -> Bool)?

    public struct Counters: Sendable {
        public var rtpIn = 0
        public var rtpOut = 0
        public var rtcpIn = 0
        public var rtcpOut = 0
        public var srtpFailures = 0
        public var checks = 0
    }

    public init(loop: any EventLoop) throws {
        self.loop = loop
        dtlsContext = try DTLSContext(certificate: DTLSCertificate())
    }

    public var isConnected: Bool { srtpInbound != nil }
    public var fingerprint: CertificateFingerprint { dtlsContext.certificate.fingerprint }
    /// The type of our end of the path ICE selected: host, or relay through TURN. Nil before.
    public var selectedCandidateType: ICECandidate.CandidateType? { selected?.local }
    /// The address the TURN server relays for us, while allocated.
    public var relayedAddress: TransportAddress? { relay?.relayedAddress }

    /// Opens the UDP socket and starts the 20 ms tick. Under `.relay` it also allocates a relay on
    /// the first TURN server over UDP among `iceServers` and returns once it has one; when the
    /// server refuses or stays silent it throws, with the socket closed.
    public func start(iceServers: [ICEServer] = [], policy: ICETransportPolicy = .all) async throws {
        var relayServer: (url: TURNServerURL, address: TransportAddress)?
        if policy == .relay {
            guard let url = TURNServerURL.first(in: iceServers) else { throw TURNClientError.noServer }
            relayServer = (url, try Self.resolve(url))
        }
        let channel = try await DatagramBootstrap(group: loop)
            .channelOption(.socketOption(.so_rcvbuf), value: 4 << 20)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(ReceiveHandler(transport: self)) }
            }
            .bind(host: "0.0.0.0", port: 0).get()
        let allocated = loop.flatSubmit { () -> EventLoopFuture<Void> in
            self.channel = channel
            self.iceTransportPolicy = policy
            self.timer = self.loop.scheduleRepeatedTask(initialDelay: .milliseconds(20), delay: .milliseconds(20)) { _ in self.tick() }
            guard let relayServer else { return self.loop.makeSucceededVoidFuture() }
            self.relay = TURNClient(server: relayServer.address, username: relayServer.url.username, password: relayServer.url.password)
            let promise = self.loop.makePromise(of: Void.self)
            self.relayAllocated = promise
            self.writeToRelayServer(self.relay?.start(now: NIODeadline.now().uptimeNanoseconds) ?? [])
            return promise.futureResult
        }
        do {
            try await allocated.get()
        } catch {
            await close()
            throw error
        }
    }

    /// The server's IPv4 address (the socket is IPv4): a literal as is, a name through the resolver.
    private static func resolve(_ url: TURNServerURL) throws -> TransportAddress {
        if let ip = IPAddress(url.host) {
            guard ip.isIPv4 else { throw TURNClientError.unresolvable(host: url.host) }
            return TransportAddress(ip: ip, port: url.port)
        }
        guard let resolved = try? SocketAddress.makeAddressResolvingHost(url.host, port: Int(url.port)),
            let address = TransportAddress(resolved), address.ip.isIPv4
        else { throw TURNClientError.unresolvable(host: url.host) }
        return address
    }

    /// Says goodbye over DTLS, deallocates the relay (waiting a moment for the answer) and closes the socket.
    public func close() async {
        let closing = try? await loop.submit { () -> (channel: (any Channel)?, deallocated: EventLoopFuture<Void>?) in
            self.timer?.cancel()
            self.timer = nil
            if let dtls = self.dtls { for datagram in dtls.close() { self.send(datagram) } }
            return (self.channel, self.deallocateRelay())
        }.get()
        try? await closing?.deallocated?.get()
        if let channel = closing?.channel { try? await channel.close() }
    }

    /// Refresh with lifetime 0; the future completes with the answer, or after `deallocationWait`
    /// (the allocation then expires on the server by itself).
    private func deallocateRelay() -> EventLoopFuture<Void>? {
        guard relay != nil else { return nil }
        let datagrams = relay?.close(now: NIODeadline.now().uptimeNanoseconds) ?? []
        relayProgressed()
        guard !datagrams.isEmpty else { return nil }
        writeToRelayServer(datagrams)
        let promise = loop.makePromise(of: Void.self)
        relayDeallocated = promise
        loop.scheduleTask(in: Self.deallocationWait) { self.settleDeallocation() }
        return promise.futureResult
    }

    /// Takes the server's ICE credentials, fingerprint and UDP host candidates from its SDP.
    func apply(remote description: SessionDescription) throws {
        loop.preconditionInEventLoop()
        let remote = try Negotiation.remoteParameters(of: description)
        if remoteICE == nil {
            remoteICE = ICECredentials(ufrag: remote.iceUfrag, password: remote.icePassword)
            remoteFingerprint = CertificateFingerprint(sdpValue: "\(remote.fingerprint.algorithm) \(remote.fingerprint.value)")
            dtlsRole = remote.setup == .active ? .server : .client
        }
        for media in description.media {
            for candidate in media.candidates where candidate.transport.lowercased() == "udp" {
                guard let ip = IPAddress(candidate.address), ip.isIPv4 else { continue }
                let address = TransportAddress(ip: ip, port: UInt16(candidate.port))
                if !candidates.contains(address) { candidates.append(address) }
            }
        }
        if relay != nil { writeToRelayServer(relay?.permit(candidates, now: NIODeadline.now().uptimeNanoseconds) ?? []) }
    }

    /// The transport attributes of every m-line this client writes, with our candidates: a host
    /// candidate for each up IPv4 interface, or under `.relay` the relayed address alone (full ICE
    /// servers such as Janus want them; Parley learns the address from the checks anyway).
    func transportAttributes(setup: String) -> [SDPLine] {
        var lines = [
            SDPLine("a", "ice-ufrag:\(localICE.ufrag)"), SDPLine("a", "ice-pwd:\(localICE.password)"),
            SDPLine("a", "fingerprint:\(fingerprint.description)"), SDPLine("a", "setup:\(setup)"), SDPLine("a", "rtcp-mux"),
        ]
        if let relayed = relayedAddress {
            // Type preference 0 (relay), local preference 65535, component 1 (RFC 8445 §5.1.2.1).
            var candidate = ICECandidate(
                foundation: "relay", priority: 0x00FF_FFFF, address: "\(relayed.ip)", port: Int(relayed.port), type: .relay)
            candidate.relatedAddress = "0.0.0.0"
            candidate.relatedPort = 0
            lines.append(SDPLine("a", "candidate:\(candidate.value)"))
            lines.append(SDPLine("a", "end-of-candidates"))
        } else if iceTransportPolicy == .all, let port = channel?.localAddress?.port {
            var seen: Set<String> = []
            for device in (try? System.enumerateDevices()) ?? [] {
                guard let address = device.address, case .v4 = address, let ip = address.ipAddress, seen.insert(ip).inserted else { continue }
                lines.append(SDPLine("a", "candidate:\(seen.count) 1 udp \(2_130_706_431 - seen.count) \(ip) \(port) typ host"))
            }
            lines.append(SDPLine("a", "end-of-candidates"))
        }
        return lines
    }

    // MARK: Sending

    /// Protects and sends an RTP packet (header and payload in `packet`). False before keys.
    @discardableResult
    public func sendRTP(_ packet: UnsafeRawBufferPointer) -> Bool {
        guard srtpOutbound != nil, let header = RTPHeader(packet) else { return false }
        outbound.sent(packet, header: header, now: NIODeadline.now().uptimeNanoseconds)
        return transmitRTP(packet, header: header)
    }

    /// Sends an original or a retransmission, unless simulated loss takes it.
    private func transmitRTP(_ packet: UnsafeRawBufferPointer, header: RTPHeader) -> Bool {
        if dropsOutgoingRTP?(header) == true { return true }
        let sent = protectAndSend(packet) { session, buffer, length in try session.protectRTP(buffer, length: length) }
        if sent { counters.rtpOut += 1 }
        return sent
    }

    @discardableResult
    public func sendRTCP(_ packet: [UInt8]) -> Bool {
        let sent = packet.withUnsafeBytes { bytes in
            protectAndSend(bytes) { session, buffer, length in try session.protectRTCP(buffer, length: length) }
        }
        if sent { counters.rtcpOut += 1 }
        return sent
    }

    private func protectAndSend(
        _ packet: UnsafeRawBufferPointer, _ protect: (SRTPSession, UnsafeMutableRawBufferPointer, Int) throws -> Int
    ) -> Bool {
        guard let srtpOutbound, packet.count <= 1500 else { return false }
        return sendBuffer.withUnsafeMutableBytes { buffer -> Bool in
            buffer.copyMemory(from: packet)
            guard let length = try? protect(srtpOutbound, buffer, packet.count) else { return false }
            send(Array(buffer[0..<length]))
            return true
        }
    }

    // MARK: ICE, DTLS and SRTP

    private func tick() {
        let now = NIODeadline.now().uptimeNanoseconds
        if relay != nil {
            writeToRelayServer(relay?.tick(now: now) ?? [])
            relayProgressed()
        }
        // Checks every 50 ms until one succeeds, then one every 2.5 s for consent (RFC 7675).
        if let remoteICE, now >= lastCheck + (selected == nil ? 50_000_000 : 2_500_000_000) {
            lastCheck = now
            for pair in selected.map({ [$0] }) ?? candidatePairs { sendCheck(on: pair, remote: remoteICE) }
        }
        if let dtls, case .handshaking = dtls.state, let delay = dtls.retransmitDelayMilliseconds,
            now >= lastDTLSTimer + UInt64(delay) * 1_000_000
        {
            lastDTLSTimer = now
            for datagram in dtls.handleTimeout() { send(datagram) }
        }
        if isConnected { sendFeedback(now: now) }
        onTick?(now)
    }

    /// NACKs for gaps as they become due; receiver reports once per interval.
    private func sendFeedback(now: UInt64) {
        for nack in inbound.dueNacks(senderSSRC: rtcpSSRC, now: now) { sendRTCP(nack) }
        guard now >= lastReportAt + Self.reportIntervalNanoseconds else { return }
        lastReportAt = now
        for report in inbound.receiverReports(senderSSRC: rtcpSSRC, cname: cname, now: now) { sendRTCP(report) }
        outbound.updateBitrates(now: now)
    }

    /// Sender reports about what we receive; NACKs, PLIs, FIRs and receiver reports about what
    /// we send (NACKed packets still in the history go out again).
    private func handleFeedback(_ compound: UnsafeRawBufferPointer, now: UInt64) {
        var iterator = RTCPCompoundIterator(compound)
        while let packet = iterator.next() {
            inbound.handle(packet, now: now)
            outbound.handle(packet) { stored in RTPHeader(stored).map { transmitRTP(stored, header: $0) } ?? false }
        }
    }

    /// What the policy lets us check: from our socket to each candidate under `.all`; through
    /// the relay to each candidate it has a permission for.
    private var candidatePairs: [CandidatePair] {
        var pairs: [CandidatePair] = []
        for remote in candidates {
            if iceTransportPolicy == .all { pairs.append(CandidatePair(remote: remote, local: .host)) }
            if relay?.canRelay(to: remote) == true { pairs.append(CandidatePair(remote: remote, local: .relay)) }
        }
        return pairs
    }

    private func sendCheck(on pair: CandidatePair, remote: ICECredentials) {
        var check = STUNMessageBuilder(type: .bindingRequest, transactionID: .random())
        check.append(.username, string: "\(remote.ufrag):\(localICE.ufrag)")
        check.append(.priority, uint32: 0x7E00_00FF)
        check.append(.iceControlling, uint64: tieBreaker)
        check.appendFlag(.useCandidate)
        check.appendMessageIntegrity(key: STUNIntegrity.shortTermKey(password: remote.password))
        check.appendFingerprint()
        counters.checks += 1
        send(check.bytes, on: pair)
    }

    fileprivate func receive(_ envelope: AddressedEnvelope<ByteBuffer>) {
        guard let source = TransportAddress(envelope.remoteAddress) else { return }
        var buffer = envelope.data
        let now = NIODeadline.now().uptimeNanoseconds
        buffer.withUnsafeMutableReadableBytes { bytes in
            guard relay != nil, source == relay?.server else {
                // Under `.relay` nothing reaches us but through the relay.
                if iceTransportPolicy == .all { handle(bytes, on: CandidatePair(remote: source, local: .host), now: now) }
                return
            }
            switch relay?.receive(UnsafeRawBufferPointer(bytes), now: now) {
            case .relayed(let peer, let range):
                handle(UnsafeMutableRawBufferPointer(rebasing: bytes[range]), on: CandidatePair(remote: peer, local: .relay), now: now)
            case .control(let datagrams):
                writeToRelayServer(datagrams)
                relayProgressed()
            case nil:
                break
            }
        }
    }

    /// A datagram from the server's side of `pair`: checks, DTLS, SRTP and SRTCP.
    private func handle(_ bytes: UnsafeMutableRawBufferPointer, on pair: CandidatePair, now: UInt64) {
        switch PacketKind(UnsafeRawBufferPointer(bytes)) {
        case .stun:
            guard let message = try? STUNMessage(parsing: UnsafeRawBufferPointer(bytes)), let remoteICE else { return }
            if message.type == .bindingRequest {
                // A full agent (Janus, libnice) checks back; the pair is valid for it only once answered.
                answerCheck(message, on: pair)
                return
            }
            guard message.type == .bindingSuccess, message.hasValidIntegrity(key: STUNIntegrity.shortTermKey(password: remoteICE.password))
            else { return }
            if selected == nil {
                selected = pair
                startDTLS()
            }
        case .dtls:
            guard let dtls, pair == selected else { return }
            for datagram in dtls.receive(UnsafeRawBufferPointer(bytes)) { send(datagram) }
            if case .connected(let keys) = dtls.state, srtpInbound == nil {
                srtpInbound = try? SRTPSession(keys.remote, direction: .inbound)
                srtpOutbound = try? SRTPSession(keys.local, direction: .outbound)
            }
        case .rtp:
            if let dropsIncomingRTP, let header = RTPHeader(UnsafeRawBufferPointer(bytes)), dropsIncomingRTP(header) { return }
            guard let srtpInbound, let length = try? srtpInbound.unprotectRTP(bytes, length: bytes.count) else {
                return counters.srtpFailures += 1
            }
            let packet = UnsafeRawBufferPointer(rebasing: bytes[0..<length])
            guard let header = RTPHeader(packet) else { return }
            counters.rtpIn += 1
            inbound.received(header, length: length, now: now)
            onRTP?(packet, header, now)
        case .rtcp:
            guard let srtpInbound, let length = try? srtpInbound.unprotectRTCP(bytes, length: bytes.count) else {
                return counters.srtpFailures += 1
            }
            counters.rtcpIn += 1
            let compound = UnsafeRawBufferPointer(rebasing: bytes[0..<length])
            handleFeedback(compound, now: now)
            onRTCP?(compound, now)
        default:
            break
        }
    }

    private func answerCheck(_ request: STUNMessage, on pair: CandidatePair) {
        let key = STUNIntegrity.shortTermKey(password: localICE.password)
        guard request.hasValidIntegrity(key: key), let username = request.string(.username),
            username.hasPrefix(localICE.ufrag + ":")
        else { return }
        var response = STUNMessageBuilder(responding: request, class: .successResponse)
        response.append(.xorMappedAddress, xorAddress: pair.remote)
        response.appendMessageIntegrity(key: key)
        response.appendFingerprint()
        send(response.bytes, on: pair)
    }

    private func startDTLS() {
        guard dtls == nil, let remoteFingerprint,
            let endpoint = try? DTLSEndpoint(context: dtlsContext, role: dtlsRole, remoteFingerprint: remoteFingerprint)
        else { return }
        dtls = endpoint
        lastDTLSTimer = NIODeadline.now().uptimeNanoseconds
        for datagram in endpoint.start() { send(datagram) }
    }

    /// Sends on `pair`, or the selected pair: straight from our socket, or framed for the relay.
    private func send(_ bytes: [UInt8], on pair: CandidatePair? = nil) {
        guard let pair = pair ?? selected else { return }
        switch pair.local {
        case .relay:
            guard let server = relay?.server, let framed = relay?.frame(bytes, to: pair.remote) else { return }
            write(framed, to: server)
        default:
            write(bytes, to: pair.remote)
        }
    }

    private func write(_ bytes: [UInt8], to address: TransportAddress) {
        guard let channel else { return }
        channel.writeAndFlush(AddressedEnvelope(remoteAddress: SocketAddress(address), data: channel.allocator.buffer(bytes: bytes)), promise: nil)
    }

    // MARK: The relay

    private func writeToRelayServer(_ datagrams: [[UInt8]]) {
        guard let server = relay?.server else { return }
        for datagram in datagrams { write(datagram, to: server) }
    }

    /// Settles what waits on the allocation's state: `start` on the allocation, `close` on the deallocation.
    private func relayProgressed() {
        guard let state = relay?.state else { return }
        if let relayAllocated {
            switch state {
            case .allocated:
                self.relayAllocated = nil
                relayAllocated.succeed()
            case .failed(let error):
                self.relayAllocated = nil
                relayAllocated.fail(error)
            case .closing, .closed:
                self.relayAllocated = nil
                relayAllocated.fail(ChannelError.alreadyClosed)
            case .allocating:
                break
            }
        }
        if state == .closed { settleDeallocation() }
    }

    private func settleDeallocation() {
        guard let relayDeallocated else { return }
        self.relayDeallocated = nil
        relayDeallocated.succeed()
    }
}

/// The publisher and the subscriber connection: each a `ClientTransport` in its own SDP role,
/// opened, watched and closed the same way.
public protocol TransportConnection: AnyObject {
    var transport: ClientTransport { get }
}

extension TransportConnection {
    public var loop: any EventLoop { transport.loop }
    public var isConnected: Bool { transport.isConnected }

    /// Opens the transport; under `.relay`, through a relay on the first TURN server of `iceServers`.
    public func start(iceServers: [ICEServer] = [], policy: ICETransportPolicy = .all) async throws {
        try await transport.start(iceServers: iceServers, policy: policy)
    }

    public func close() async { await transport.close() }
}

private final class ReceiveHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let transport: ClientTransport

    init(transport: ClientTransport) { self.transport = transport }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        transport.receive(unwrapInboundIn(data))
    }
}
