import Foundation
import NIOCore
import NIOPosix
import NetworkAddress
import RTP
import SDP
import STUN
import WebRTC

/// The receiving half of a WebRTC client: the subscriber transport, where the server offers.
/// It answers the offers (every m-line received, the server's codecs and extensions kept), runs
/// ICE as the controlling agent against the server's candidates (Parley is ICE-lite), is the DTLS
/// client (`a=setup:active`) and unprotects SRTP. Decrypted RTP goes to `onRTP` with the track it
/// belongs to. Everything runs on one event loop.
public final class SubscriberConnection: @unchecked Sendable {
    /// What the offer said about the track an SSRC carries.
    public struct Track: Sendable, Equatable {
        public var trackSid: String
        public var participantSid: String
        public var kind: String
        /// Lower-case codec name (`opus`, `vp8`, `h264`).
        public var codec: String
    }

    public let loop: any EventLoop
    private var channel: (any Channel)?
    private let localICE = ICECredentials.random()
    private let dtlsContext: DTLSContext
    private var dtls: DTLSEndpoint?
    private var srtpInbound: SRTPSession?
    private var remoteICE: ICECredentials?
    private var remoteFingerprint: CertificateFingerprint?
    private var candidates: [TransportAddress] = []
    private var selected: TransportAddress?
    private var lastCheck: UInt64 = 0
    private var lastDTLSTimer: UInt64 = 0
    private var timer: RepeatedTask?
    private let tieBreaker = UInt64.random(in: 0...UInt64.max)
    public private(set) var tracksBySSRC: [UInt32: Track] = [:]
    /// Called on the loop for each decrypted RTP packet (the buffer is valid during the call).
    public var onRTP: ((UnsafeRawBufferPointer, RTPHeader, Track, UInt64) -> Void)?
    public private(set) var counters = (rtp: 0, srtpFailures: 0, checks: 0)

    public init(loop: any EventLoop) throws {
        self.loop = loop
        dtlsContext = try DTLSContext(certificate: DTLSCertificate())
    }

    public var isConnected: Bool { srtpInbound != nil }

    /// Opens the UDP socket; answers come after this.
    public func start() async throws {
        let channel = try await DatagramBootstrap(group: loop)
            .channelOption(.socketOption(.so_rcvbuf), value: 4 << 20)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(ReceiveHandler(connection: self)) }
            }
            .bind(host: "0.0.0.0", port: 0).get()
        try await loop.submit {
            self.channel = channel
            self.timer = self.loop.scheduleRepeatedTask(initialDelay: .milliseconds(20), delay: .milliseconds(20)) { _ in self.tick() }
        }.get()
    }

    public func close() async {
        let channel = try? await loop.submit { () -> (any Channel)? in
            self.timer?.cancel()
            self.timer = nil
            if let dtls = self.dtls { for datagram in dtls.close() { self.send(datagram) } }
            return self.channel
        }.get()
        if let channel = channel ?? nil { try? await channel.close() }
    }

    /// Applies a server offer and returns the answer SDP. On the loop.
    public func answer(offer text: String) throws -> String {
        loop.preconditionInEventLoop()
        let offer = try SessionDescription(parsing: text)
        let remote = try Negotiation.remoteParameters(of: offer)
        if remoteICE == nil {
            remoteICE = ICECredentials(ufrag: remote.iceUfrag, password: remote.icePassword)
            remoteFingerprint = CertificateFingerprint(sdpValue: "\(remote.fingerprint.algorithm) \(remote.fingerprint.value)")
        }
        var answer = SessionDescription(lines: [
            SDPLine("o", "- \(UInt32.random(in: 1...UInt32.max)) 2 IN IP4 127.0.0.1"), SDPLine("s", "-"),
            SDPLine("t", "0 0"),
        ])
        var mids: [String] = []
        for media in offer.media {
            for candidate in media.candidates where candidate.transport.lowercased() == "udp" {
                if let ip = IPAddress(candidate.address) {
                    let address = TransportAddress(ip: ip, port: UInt16(candidate.port))
                    if ip.isIPv4, !candidates.contains(address) { candidates.append(address) }
                }
            }
            var lines: [SDPLine] = [SDPLine("c", "IN IP4 0.0.0.0")]
            func attribute(_ value: String) { lines.append(SDPLine("a", value)) }
            if let mid = media.mid {
                attribute("mid:\(mid)")
                mids.append(mid)
            }
            attribute("ice-ufrag:\(localICE.ufrag)")
            attribute("ice-pwd:\(localICE.password)")
            attribute("fingerprint:\(dtlsContext.certificate.fingerprint.description)")
            attribute("setup:active")
            attribute(media.direction.sends ? "recvonly" : "inactive")
            attribute("rtcp-mux")
            for line in media.lines {
                guard let (name, _) = line.attribute else { continue }
                if ["rtpmap", "fmtp", "rtcp-fb", "extmap"].contains(String(name)) { lines.append(line) }
            }
            answer.media.append(MediaDescription(kind: media.kind, port: 9, proto: media.proto, formats: media.formats, lines: lines))
            if media.direction.sends, let ssrc = media.primarySSRC, let msid = media.msid, let codec = media.codecs.first {
                tracksBySSRC[ssrc] = Track(
                    trackSid: msid.track ?? "", participantSid: msid.stream, kind: media.kind, codec: codec.name.lowercased())
            }
        }
        answer.lines.append(SDPLine("a", "group:BUNDLE \(mids.joined(separator: " "))"))
        return answer.serialized()
    }

    // MARK: ICE, DTLS and SRTP

    private func tick() {
        let now = NIODeadline.now().uptimeNanoseconds
        // Checks every 50 ms until one succeeds, then one every 2.5 s for consent (RFC 7675).
        if let remoteICE, now >= lastCheck + (selected == nil ? 50_000_000 : 2_500_000_000) {
            lastCheck = now
            for candidate in selected.map({ [$0] }) ?? candidates { sendCheck(to: candidate, remote: remoteICE) }
        }
        if let dtls, case .handshaking = dtls.state, let delay = dtls.retransmitDelayMilliseconds,
            now >= lastDTLSTimer + UInt64(delay) * 1_000_000
        {
            lastDTLSTimer = now
            for datagram in dtls.handleTimeout() { send(datagram) }
        }
    }

    private func sendCheck(to address: TransportAddress, remote: ICECredentials) {
        var check = STUNMessageBuilder(type: .bindingRequest, transactionID: .random())
        check.append(.username, string: "\(remote.ufrag):\(localICE.ufrag)")
        check.append(.priority, uint32: 0x7E00_00FF)
        check.append(.iceControlling, uint64: tieBreaker)
        check.appendFlag(.useCandidate)
        check.appendMessageIntegrity(key: STUNIntegrity.shortTermKey(password: remote.password))
        check.appendFingerprint()
        counters.checks += 1
        send(check.bytes, to: address)
    }

    fileprivate func receive(_ envelope: AddressedEnvelope<ByteBuffer>) {
        guard let source = TransportAddress(envelope.remoteAddress) else { return }
        var buffer = envelope.data
        buffer.withUnsafeMutableReadableBytes { bytes in
            switch PacketKind(UnsafeRawBufferPointer(bytes)) {
            case .stun:
                guard let message = try? STUNMessage(parsing: UnsafeRawBufferPointer(bytes)), let remoteICE,
                    message.type == .bindingSuccess, message.hasValidIntegrity(key: STUNIntegrity.shortTermKey(password: remoteICE.password))
                else { return }
                if selected == nil {
                    selected = source
                    startDTLS()
                }
            case .dtls:
                guard let dtls, source == selected else { return }
                for datagram in dtls.receive(UnsafeRawBufferPointer(bytes)) { send(datagram) }
                if case .connected(let keys) = dtls.state, srtpInbound == nil {
                    srtpInbound = try? SRTPSession(keys.remote, direction: .inbound)
                }
            case .rtp:
                guard let srtpInbound, let length = try? srtpInbound.unprotectRTP(bytes, length: bytes.count) else {
                    return counters.srtpFailures += 1
                }
                let packet = UnsafeRawBufferPointer(rebasing: bytes[0..<length])
                guard let header = RTPHeader(packet), let track = tracksBySSRC[header.ssrc] else { return }
                counters.rtp += 1
                onRTP?(packet, header, track, NIODeadline.now().uptimeNanoseconds)
            default:
                break  // RTCP from the server (sender reports) is not needed to record
            }
        }
    }

    private func startDTLS() {
        guard dtls == nil, let remoteFingerprint, let endpoint = try? DTLSEndpoint(context: dtlsContext, role: .client, remoteFingerprint: remoteFingerprint)
        else { return }
        dtls = endpoint
        lastDTLSTimer = NIODeadline.now().uptimeNanoseconds
        for datagram in endpoint.start() { send(datagram) }
    }

    private func send(_ bytes: [UInt8], to address: TransportAddress? = nil) {
        guard let channel, let target = address ?? selected else { return }
        channel.writeAndFlush(AddressedEnvelope(remoteAddress: SocketAddress(target), data: channel.allocator.buffer(bytes: bytes)), promise: nil)
    }
}

private final class ReceiveHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let connection: SubscriberConnection

    init(connection: SubscriberConnection) { self.connection = connection }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        connection.receive(unwrapInboundIn(data))
    }
}
