import Addresses
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
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
    public var logger = Logger(label: "parley.client.transport")
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
    /// The relay's own socket: each allocation gets a fresh one, since a TURN server refuses a
    /// second allocation on a 5-tuple whose first it still holds (RFC 8656 §7.2: 437), as it does
    /// after a refresh refused for expired credentials.
    private var relayChannel: (any Channel)?
    private var openingRelay = false
    private var closed = false
    /// The TURN server (and credentials) a relay is allocated on: at start under `.relay`, or
    /// when host checks go unanswered under `.all`. `updateICEServers` replaces the credentials.
    private var relayServer: (url: TURNServerURL, address: TransportAddress)?
    /// The same TURN server over TCP (`?transport=tcp`), tried when UDP to it goes unanswered.
    private var relayServerOverTCP: (url: TURNServerURL, address: TransportAddress)?
    /// When the current allocation was asked for.
    private var relayStartedAt: UInt64 = 0
    /// An Allocate over UDP unanswered this long moves the relay to TCP (when the server offers it).
    static let tcpFallbackNanoseconds: UInt64 = 2_000_000_000
    /// When checks started without an answer yet (for the fallback to a relay under `.all`).
    private var checksStartedAt: UInt64?
    /// When a relay may be allocated again after one failed (a refused refresh: expired credentials).
    private var nextRelayAttemptAt: UInt64 = 0
    private var relayRetryDelay: UInt64 = ClientTransport.firstRelayRetryNanoseconds
    static let firstRelayRetryNanoseconds: UInt64 = 500_000_000
    static let maxRelayRetryNanoseconds: UInt64 = 10_000_000_000
    /// Under `.all`, how long checks from our own socket go unanswered before a relay is tried too.
    public static let relayFallbackNanoseconds: UInt64 = 2_000_000_000
    /// `start` waits on the allocation, `close` on the deallocation.
    private var relayAllocated: EventLoopPromise<Void>?
    private var relayDeallocated: EventLoopPromise<Void>?
    static let deallocationWait: TimeAmount = .seconds(1)
    private var lastCheck: UInt64 = 0
    private var lastDTLSTimer: UInt64 = 0
    /// Registered with its loop's shared 20 ms tick while open.
    private var ticking = false
    private let tieBreaker = UInt64.random(in: 0...UInt64.max)
    private var sendBuffer = [UInt8](repeating: 0, count: 1500 + SRTPSession.maxTrailer + 16)
    /// Where a received datagram is decrypted in place: NIO's buffer is shared (writing to it
    /// would copy it into a fresh allocation per packet).
    private let receiveScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 16)
    /// Decrypted RTP and RTCP, on the loop (the buffer is valid during the call).
    public var onRTP: ((UnsafeRawBufferPointer, RTPHeader, UInt64) -> Void)?
    public var onRTCP: ((UnsafeRawBufferPointer, UInt64) -> Void)?
    /// Runs on every 20 ms tick with the time (senders pace their packets here).
    public var onTick: ((UInt64) -> Void)?
    public private(set) var counters = Counters()
    /// Reception statistics and NACK state of what we receive; counts and send history of
    /// what we send. The connections announce their SSRCs here.
    var inbound = InboundStreams()
    lazy var outbound = OutboundStreams(transportSequences: transportSequences)
    private let transportSequences = TransportSequenceLog()
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
    /// Tests and demos: a firewall that lets only the TURN server through, so checks sent to the
    /// server directly go unanswered (and under `.all` the transport falls back to a relay).
    public private(set) var firewall = SimulatedFirewall.none

    public struct Counters: Sendable {
        public var rtpIn = 0
        public var rtpOut = 0
        public var rtcpIn = 0
        public var rtcpOut = 0
        public var srtpFailures = 0
        public var checks = 0
    }

    /// Monotonic nanoseconds: pacing, retransmissions, TURN refreshes, statistics.
    public let clock: MediaClock

    public init(loop: any EventLoop, clock: @escaping MediaClock = MediaClocks.system) throws {
        self.loop = loop
        self.clock = clock
        dtlsContext = try DTLSContext(certificate: DTLSCertificate())
    }

    deinit { receiveScratch.deallocate() }

    public var isConnected: Bool { srtpInbound != nil }
    public var fingerprint: CertificateFingerprint { dtlsContext.certificate.fingerprint }
    /// The type of our end of the path ICE selected: host, or relay through TURN. Nil before.
    public var selectedCandidateType: ICECandidate.CandidateType? { selected?.local }
    /// The address the TURN server relays for us, while allocated.
    public var relayedAddress: TransportAddress? { relay?.relayedAddress }

    /// Opens the UDP socket and starts the 20 ms tick. Under `.relay` it also allocates a relay on
    /// the first TURN server over UDP among `iceServers` and returns once it has one; when the
    /// server refuses or stays silent it throws, with the socket closed. `firewall` (tests and
    /// demos) drops what such a firewall would.
    public func start(iceServers: [ICEServer] = [], policy: ICETransportPolicy = .all, firewall: SimulatedFirewall = .none) async throws {
        let relayServer: (url: TURNServerURL, address: TransportAddress)?
        if policy == .relay {
            guard let url = TURNServerURL.first(in: iceServers) else { throw TURNClientError.noServer }
            relayServer = (url, try Self.resolve(url))
        } else {
            relayServer = Self.resolved(TURNServerURL.first(in: iceServers))  // only used if the direct path fails
        }
        let overTCP = Self.resolved(TURNServerURL.firstOverTCP(in: iceServers))
        let channel = try await openSocket(viaRelay: false).get()
        let allocated = loop.flatSubmit { () -> EventLoopFuture<Void> in
            self.channel = channel
            if case .v6 = channel.localAddress { self.socketIsIPv6 = true }
            self.iceTransportPolicy = policy
            self.firewall = firewall
            self.relayServer = relayServer
            self.relayServerOverTCP = overTCP
            self.ticking = true
            LoopTicker.on(self.loop).add(self)
            guard policy == .relay else { return self.loop.makeSucceededVoidFuture() }
            let promise = self.loop.makePromise(of: Void.self)
            self.relayAllocated = promise
            self.allocateRelay(now: self.clock())
            return promise.futureResult
        }
        do {
            try await allocated.get()
        } catch {
            await close()
            throw error
        }
    }

    /// A UDP socket on an ephemeral port whose datagrams come to `receive`: dual-stack (IPv6 and
    /// IPv4 on one socket) where the host has IPv6, else IPv4 alone.
    private func openSocket(viaRelay: Bool) -> EventLoopFuture<any Channel> {
        guard !viaRelay else { return bootstrap(viaRelay: true).bind(host: "0.0.0.0", port: 0) }
        return bootstrap(viaRelay: false).bind(host: "::", port: 0).flatMapError { _ in
            self.bootstrap(viaRelay: false).bind(host: "0.0.0.0", port: 0)
        }
    }

    private func bootstrap(viaRelay: Bool) -> DatagramBootstrap {
        DatagramBootstrap(group: loop)
            .channelOption(.socketOption(.so_rcvbuf), value: 4 << 20)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ReceiveHandler(transport: self, viaRelay: viaRelay))
                }
            }
    }

    /// Whether the host socket is dual-stack: IPv4 peers are then written to as `::ffff:a.b.c.d`.
    private var socketIsIPv6 = false

    /// A TCP connection to the TURN server (inside TLS for `turns:`) whose STUN messages and
    /// ChannelData frames come to `receiveFromRelay`; the relay is lost when it closes.
    private func openRelayStream(to server: TransportAddress, url: TURNServerURL) -> EventLoopFuture<any Channel> {
        ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if url.overTLS {
                        // The system's trust roots, and those of SSL_CERT_FILE; a name is checked
                        // against the certificate, an address only by its chain (SNI takes no address).
                        let byName = IPAddress(url.host) == nil
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: try Self.turnTLSContext(checkingName: byName), serverHostname: byName ? url.host : nil))
                    }
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(STUNStreamDecoder()))
                    try channel.pipeline.syncOperations.addHandler(RelayStreamHandler(transport: self))
                }
            }
            .connect(to: SocketAddress(server))
    }

    /// The TLS contexts of `turns:` relays (checking the server's name, or only its chain), one
    /// each for the process.
    private static let sharedTLSContexts = NIOLockedValueBox<[Bool: NIOSSLContext]>([:])

    static func turnTLSContext(checkingName: Bool) throws -> NIOSSLContext {
        try sharedTLSContexts.withLockedValue { contexts in
            if let context = contexts[checkingName] { return context }
            var configuration = TLSConfiguration.makeClientConfiguration()
            if !checkingName { configuration.certificateVerification = .noHostnameVerification }
            if let extra = ProcessInfo.processInfo.environment["SSL_CERT_FILE"], !extra.isEmpty {
                configuration.additionalTrustRoots = [.file(extra)]
            }
            let made = try NIOSSLContext(configuration: configuration)
            contexts[checkingName] = made
            return made
        }
    }

    /// The TCP connection to the TURN server closed: unless given up on already, the relay is gone.
    fileprivate func relayStreamClosed(_ channel: any Channel) {
        guard channel === relayChannel, !closed, relay != nil, relay?.state != .closed else { return }
        relayLost(TURNClientError.rejected(method: "TCP", code: 0, reason: "the connection to the TURN server closed"))
    }

    /// `url` with its address, when it has one.
    private static func resolved(_ url: TURNServerURL?) -> (url: TURNServerURL, address: TransportAddress)? {
        guard let url, let address = try? resolve(url) else { return nil }
        return (url, address)
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
        let closing = try? await loop.submit { () -> (channels: [any Channel], deallocated: EventLoopFuture<Void>?) in
            self.closed = true
            if self.ticking { LoopTicker.on(self.loop).remove(self) }
            self.ticking = false
            if let dtls = self.dtls { for datagram in dtls.close() { self.send(datagram) } }
            return ([self.channel, self.relayChannel].compactMap { $0 }, self.deallocateRelay())
        }.get()
        try? await closing?.deallocated?.get()
        for channel in closing?.channels ?? [] { try? await channel.close() }
    }

    /// Refresh with lifetime 0; the future completes with the answer, or after `deallocationWait`
    /// (the allocation then expires on the server by itself).
    private func deallocateRelay() -> EventLoopFuture<Void>? {
        guard relay != nil else { return nil }
        let datagrams = relay?.close(now: clock()) ?? []
        relayProgressed()
        guard !datagrams.isEmpty else { return nil }
        writeToRelayServer(datagrams)
        let promise = loop.makePromise(of: Void.self)
        relayDeallocated = promise
        loop.scheduleTask(in: Self.deallocationWait) { self.settleDeallocation() }
        return promise.futureResult
    }

    /// New credentials for the TURN server (`ice.servers` before the old ones expire, or a resumed
    /// session's `joined`): the next allocation uses them, so a relay whose refresh was refused
    /// for expired credentials comes back. A relay standing on other credentials moves to these
    /// at once: a refresh must carry the allocation's own username (RFC 8656 §7.2, 441), so once
    /// those expire the server would refuse it. On the loop.
    public func updateICEServers(_ servers: [ICEServer]) {
        loop.preconditionInEventLoop()
        guard let preferred = Self.resolved(TURNServerURL.first(in: servers)) else { return }
        // Stay on TCP if UDP to the server was found blocked.
        let onTCP = relayServer?.url.overTCP == true
        relayServerOverTCP = Self.resolved(TURNServerURL.firstOverTCP(in: servers))
        relayServer = onTCP ? (relayServerOverTCP ?? preferred) : preferred
        relayRetryDelay = Self.firstRelayRetryNanoseconds
        nextRelayAttemptAt = 0
        if let relay, case .allocated = relay.state, relay.username != relayServer?.url.username { renewRelay() }
    }

    /// Releases the standing allocation while its credentials still hold and allocates again
    /// with the new ones on a fresh socket (the server keeps a 5-tuple's allocation until the
    /// release is answered). The media pauses for the allocation and one round of checks.
    private func renewRelay() {
        logger.info("moving the TURN relay to new credentials")
        if relay != nil, let oldChannel = relayChannel {
            writeToRelayServer(relay?.close(now: clock()) ?? [])
            // The release's answer is not awaited: its socket closes a little later.
            relayChannel = nil
            loop.scheduleTask(in: Self.deallocationWait) { oldChannel.close(promise: nil) }
        }
        dropRelay()
        if selected?.local == .relay { selected = nil }
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
                guard let ip = IPAddress(candidate.address), ip.isIPv4 || socketIsIPv6 else { continue }
                let address = TransportAddress(ip: ip, port: UInt16(candidate.port))
                if !candidates.contains(address) { candidates.append(address) }
            }
        }
        if relay != nil { writeToRelayServer(relay?.permit(candidates, now: clock()) ?? []) }
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
            let dualStack = socketIsIPv6
            for device in (try? System.enumerateDevices()) ?? [] {
                guard let address = device.address, let ip = address.ipAddress else { continue }
                switch address {
                case .v4: break
                // Global and unique-local IPv6 (a link-local one needs a scope a candidate lacks).
                case .v6 where dualStack && !ip.lowercased().hasPrefix("fe80") && ip != "::1": break
                default: continue
                }
                guard seen.insert(ip).inserted else { continue }
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
        outbound.sent(packet, header: header, now: clock())
        return transmitRTP(packet, header: header, retransmission: nil)
    }

    /// The id of the transport-wide sequence number extension, once an answer kept it
    /// (transport-cc): every RTP packet sent then carries one, retransmissions too. 0: none.
    public internal(set) var transportSequenceID: UInt8 = 0 {
        didSet {
            // The packet's own elements are kept, less any stale transport-wide number.
            rewriteExtensions = .identity
            if transportSequenceID != 0 { rewriteExtensions[transportSequenceID] = 0 }
        }
    }
    private var rewriteExtensions = ExtensionIDMap.identity

    /// Sends an original or a retransmission, unless simulated loss takes it. A packet goes out
    /// as it is unless it needs a transport-wide sequence number or RTX wrapping (RFC 4588:
    /// its own SSRC, payload type and sequence number, the original's before the payload):
    /// then it is rewritten straight into the send buffer.
    private func transmitRTP(_ packet: UnsafeRawBufferPointer, header: RTPHeader, retransmission: OutboundStreams.Retransmission?) -> Bool {
        guard transportSequenceID != 0 || retransmission != nil else {
            if dropsOutgoingRTP?(header) == true { return true }
            return countSent(protectAndSend(packet) { session, buffer, length in try session.protectRTP(buffer, length: length) })
        }
        guard let srtpOutbound, packet.count + ForwardedPacket.maxGrowth <= 1500 else { return false }
        var fields = ForwardedPacket.Fields(
            ssrc: retransmission?.ssrc ?? header.ssrc, sequenceNumber: retransmission?.nextSequenceNumber ?? header.sequenceNumber,
            timestamp: header.timestamp, payloadType: retransmission?.payloadType ?? header.payloadType)
        fields.originalSequenceNumber = retransmission.map { _ in header.sequenceNumber }
        if transportSequenceID != 0 {
            fields.transportSequenceID = transportSequenceID
            // Numbered before simulated loss: the feedback then reports the packet missing, as a real loss.
            fields.transportSequence = transportSequences.take(for: header.ssrc)
        }
        let map = rewriteExtensions
        return countSent(sendBuffer.withUnsafeMutableBytes { buffer -> Bool in
            guard let written = ForwardedPacket.write(packet, header: header, fields: fields, extensionMap: map, into: buffer) else { return false }
            let rewritten = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<written.length])
            if let dropsOutgoingRTP, let sentHeader = RTPHeader(UnsafeRawBufferPointer(rewritten)), dropsOutgoingRTP(sentHeader) { return true }
            guard let length = try? srtpOutbound.protectRTP(buffer, length: written.length) else { return false }
            send(Array(buffer[0..<length]))
            return true
        })
    }

    private func countSent(_ sent: Bool) -> Bool {
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

    fileprivate func tick() {
        let now = clock()
        if relay != nil {
            writeToRelayServer(relay?.tick(now: now) ?? [])
            relayProgressed()
        }
        if relay?.state == .allocating, relay?.overTCP == false, let overTCP = relayServerOverTCP,
            now >= relayStartedAt + Self.tcpFallbackNanoseconds
        {
            // UDP to the TURN server seems blocked: the same server over TCP (the pending promise carries over).
            logger.info("TURN over UDP unanswered; trying TCP", metadata: ["server": "\(overTCP.address)"])
            dropRelay()
            relayServer = overTCP
            allocateRelay(now: now)
        }
        if relay == nil, !openingRelay, relayServer != nil, now >= nextRelayAttemptAt, wantsRelay(now: now) {
            allocateRelay(now: now)
        }
        // Checks every 50 ms until one succeeds, then one every 2.5 s for consent (RFC 7675).
        if remoteICE != nil, !candidates.isEmpty, checksStartedAt == nil { checksStartedAt = now }
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

    /// NACKs for gaps as they become due, PLIs for video that has not started; receiver reports
    /// once per interval.
    private func sendFeedback(now: UInt64) {
        for nack in inbound.dueNacks(senderSSRC: rtcpSSRC, now: now) { sendRTCP(nack) }
        for pli in inbound.dueKeyframeRequests(senderSSRC: rtcpSSRC, now: now) { sendRTCP(pli) }
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
            outbound.handle(packet) { stored, retransmission in
                RTPHeader(stored).map { transmitRTP(stored, header: $0, retransmission: retransmission) } ?? false
            }
        }
    }

    /// A relay is wanted under `.relay` always, and under `.all` once checks from our own socket
    /// have gone unanswered for `relayFallbackNanoseconds` (a firewall that drops UDP to the server).
    private func wantsRelay(now: UInt64) -> Bool {
        switch iceTransportPolicy {
        case .relay: return true
        case .all: return selected == nil && checksStartedAt.map { now >= $0 + Self.relayFallbackNanoseconds } == true
        }
    }

    /// Allocates on `relayServer` with its latest credentials; the server's candidates are
    /// permitted as soon as the allocation stands.
    private func allocateRelay(now: UInt64) {
        guard let server = relayServer, !openingRelay else { return }
        openingRelay = true
        let opened = server.url.overTCP ? openRelayStream(to: server.address, url: server.url) : openSocket(viaRelay: true)
        opened.whenComplete { result in
            self.openingRelay = false
            switch result {
            case .success(let channel):
                guard !self.closed, let relayServer = self.relayServer else { return channel.close(promise: nil) }
                self.relayChannel?.close(promise: nil)
                self.relayChannel = channel
                self.relay = TURNClient(
                    server: relayServer.address, username: relayServer.url.username, password: relayServer.url.password,
                    overTCP: relayServer.url.overTCP)
                let now = self.clock()
                self.relayStartedAt = now
                self.writeToRelayServer(self.relay?.start(now: now) ?? [])
                self.writeToRelayServer(self.relay?.permit(self.candidates, now: now) ?? [])
            case .failure(let error):
                self.relayAllocated?.fail(error)
                self.relayAllocated = nil
                self.nextRelayAttemptAt = self.clock() + self.relayRetryDelay
            }
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

    fileprivate func receive(_ envelope: AddressedEnvelope<ByteBuffer>, viaRelay: Bool) {
        guard let source = TransportAddress(envelope.remoteAddress)?.unmappingIPv4 else { return }
        guard viaRelay else {
            // Under `.relay` nothing reaches us but through the relay.
            guard iceTransportPolicy == .all, firewall == .none else { return }
            let now = clock()
            withWritableCopy(of: envelope.data) { handle($0, on: CandidatePair(remote: source, local: .host), now: now) }
            return
        }
        guard relay?.overTCP == false, source == relay?.server, firewall != .onlyTCP else { return }
        receiveFromRelay(envelope.data)
    }

    /// `data` where it may be written: in the scratch buffer, or (larger than it) a copy of its own.
    private func withWritableCopy(of data: ByteBuffer, _ body: (UnsafeMutableRawBufferPointer) -> Void) {
        guard data.readableBytes <= receiveScratch.count else {
            var copy = data
            return copy.withUnsafeMutableReadableBytes(body)
        }
        let bytes = UnsafeMutableRawBufferPointer(rebasing: receiveScratch[0..<data.readableBytes])
        data.withUnsafeReadableBytes { bytes.copyMemory(from: $0) }
        body(bytes)
    }

    /// A datagram (or, over TCP, a frame) from the TURN server: relayed data or a response.
    fileprivate func receiveFromRelay(_ data: ByteBuffer, on channel: (any Channel)? = nil) {
        if let channel, channel !== relayChannel { return }  // a stream given up on
        guard relay != nil else { return }
        let now = clock()
        withWritableCopy(of: data) { bytes in
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
                // The direct path answered after all: a fallback relay is not needed.
                if pair.local == .host, relay != nil { _ = deallocateRelay() }
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
            inbound.received(header, packet: packet, now: now)
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
        lastDTLSTimer = clock()
        for datagram in endpoint.start() { send(datagram) }
    }

    /// Sends on `pair`, or the selected pair: straight from our socket, or framed for the relay.
    private func send(_ bytes: [UInt8], on pair: CandidatePair? = nil) {
        guard let pair = pair ?? selected else { return }
        switch pair.local {
        case .relay:
            guard let framed = relay?.frame(bytes, to: pair.remote) else { return }
            writeToRelayServer([framed])
        default:
            guard firewall == .none else { return }
            write(bytes, to: pair.remote, on: channel)
        }
    }

    private func write(_ bytes: [UInt8], to address: TransportAddress, on channel: (any Channel)?) {
        guard let channel else { return }
        let destination = channel === self.channel && socketIsIPv6 ? address.mappingIPv4 : address
        channel.writeAndFlush(AddressedEnvelope(remoteAddress: SocketAddress(destination), data: channel.allocator.buffer(bytes: bytes)), promise: nil)
    }

    // MARK: The relay

    private func writeToRelayServer(_ datagrams: [[UInt8]]) {
        guard let relay, let relayChannel else { return }
        if relay.overTCP {
            for frame in datagrams { relayChannel.write(relayChannel.allocator.buffer(bytes: frame), promise: nil) }
            relayChannel.flush()
        } else if firewall != .onlyTCP {
            for datagram in datagrams { write(datagram, to: relay.server, on: relayChannel) }
        }
    }

    /// Settles what waits on the allocation's state: `start` on the allocation, `close` on the deallocation.
    private func relayProgressed() {
        guard let state = relay?.state else { return }
        if relayAllocated == nil, case .failed(let error) = state {
            relayLost(error)
            return
        }
        if case .allocated = state { relayRetryDelay = Self.firstRelayRetryNanoseconds }
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

    /// The relay stood (or was a fallback) and failed: the path through it is gone. Checks start
    /// again and a new allocation is tried, with the latest credentials, after a pause.
    private func relayLost(_ error: any Error) {
        logger.warning("TURN relay lost; allocating again", metadata: ["error": "\(error)"])
        dropRelay()
        if selected?.local == .relay { selected = nil }
        nextRelayAttemptAt = clock() + relayRetryDelay
        relayRetryDelay = min(relayRetryDelay * 2, Self.maxRelayRetryNanoseconds)
    }

    /// Forgets the relay and closes its socket (a later close of that channel is ignored).
    private func dropRelay() {
        relay = nil
        relayChannel?.close(promise: nil)
        relayChannel = nil
    }

    private func settleDeallocation() {
        guard let relayDeallocated else { return }
        self.relayDeallocated = nil
        relayDeallocated.succeed()
    }
}

/// A monotonic clock in nanoseconds; a room's transports share one (tests pass one they move).
public typealias MediaClock = @Sendable () -> UInt64

public enum MediaClocks {
    public static let system: MediaClock = { NIODeadline.now().uptimeNanoseconds }
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
    public func start(iceServers: [ICEServer] = [], policy: ICETransportPolicy = .all, firewall: SimulatedFirewall = .none) async throws {
        try await transport.start(iceServers: iceServers, policy: policy, firewall: firewall)
    }

    public func close() async { await transport.close() }
}

/// One 20 ms tick per event loop for all its transports: a load tester runs hundreds on a loop,
/// and a repeated task each made NIO's timer heap a tenth of its CPU. The transports are spread
/// over four phases 5 ms apart, so their packets do not all leave in the same instant.
private final class LoopTicker: @unchecked Sendable {
    private static let tickers = NIOLockedValueBox<[ObjectIdentifier: LoopTicker]>([:])
    static let phases = 4
    private let loop: any EventLoop
    private var phases = [[ClientTransport]](repeating: [], count: LoopTicker.phases)
    private var nextPhase = 0
    private var added = 0
    private var task: RepeatedTask?

    private init(loop: any EventLoop) { self.loop = loop }

    /// The loop's ticker (made on first use). Call on the loop.
    static func on(_ loop: any EventLoop) -> LoopTicker {
        tickers.withLockedValue { tickers in
            if let ticker = tickers[ObjectIdentifier(loop)] { return ticker }
            let ticker = LoopTicker(loop: loop)
            tickers[ObjectIdentifier(loop)] = ticker
            return ticker
        }
    }

    func add(_ transport: ClientTransport) {
        loop.preconditionInEventLoop()
        phases[added % Self.phases].append(transport)
        added += 1
        if task == nil {
            let interval = TimeAmount.milliseconds(20 / Int64(Self.phases))
            task = loop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in self.tick() }
        }
    }

    /// The last transport gone, the ticker stops and forgets its loop (which may then shut down).
    func remove(_ transport: ClientTransport) {
        loop.preconditionInEventLoop()
        for index in phases.indices { phases[index].removeAll { $0 === transport } }
        guard phases.allSatisfy(\.isEmpty) else { return }
        task?.cancel()
        task = nil
        Self.tickers.withLockedValue { $0[ObjectIdentifier(loop)] = nil }
    }

    private func tick() {
        let phase = phases[nextPhase]
        nextPhase = (nextPhase + 1) % Self.phases
        for transport in phase { transport.tick() }
    }
}

/// For tests and demos: what a firewall between the client and the server lets through.
public enum SimulatedFirewall: Sendable {
    case none
    /// Only the TURN server (UDP or TCP): checks sent to the server directly go unanswered.
    case onlyTURN
    /// Only TCP to the TURN server: no UDP at all.
    case onlyTCP
}

/// Frames from the TURN server over TCP.
private final class RelayStreamHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let transport: ClientTransport

    init(transport: ClientTransport) { self.transport = transport }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        transport.receiveFromRelay(unwrapInboundIn(data), on: context.channel)
    }

    func channelInactive(context: ChannelHandlerContext) {
        transport.relayStreamClosed(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)  // a broken stream cannot be resynchronised
    }
}

private final class ReceiveHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let transport: ClientTransport
    let viaRelay: Bool

    init(transport: ClientTransport, viaRelay: Bool) {
        self.transport = transport
        self.viaRelay = viaRelay
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        transport.receive(unwrapInboundIn(data), viaRelay: viaRelay)
    }
}
