import Addresses
import STUN

/// Where a transport's datagrams go out. The media worker implements it over its UDP socket.
public protocol DatagramSink: AnyObject {
    func send(_ datagram: UnsafeRawBufferPointer, to address: TransportAddress)
    /// The peer nominated (or moved to) `address`: packets from it now belong to `transport`.
    func transport(_ transport: WebRTCTransport, didSelect address: TransportAddress, previous: TransportAddress?)
    /// How to reach `address`, resolved once so that each packet need not look it up; nil
    /// when the sink has no faster way than `send(_:to:)`.
    func route(to address: TransportAddress) -> DatagramRoute?
    func send(_ datagram: UnsafeRawBufferPointer, via route: DatagramRoute)
    /// Where the next datagram to `route` can be written in place, so it is not built elsewhere
    /// and copied; `commitSendSlot` queues what was written. Nil when the sink has no slots.
    func sendSlot(via route: DatagramRoute) -> UnsafeMutableRawBufferPointer?
    func commitSendSlot(length: Int, via route: DatagramRoute)
}

/// A resolved way out: the peer's address, the sink's socket for it and the address in the
/// kernel's form.
public struct DatagramRoute: Sendable {
    public let address: TransportAddress
    public let socket: Int
    public let rawAddress: RawSocketAddress

    public init(address: TransportAddress, socket: Int, rawAddress: RawSocketAddress) {
        self.address = address
        self.socket = socket
        self.rawAddress = rawAddress
    }
}

extension DatagramSink {
    public func route(to address: TransportAddress) -> DatagramRoute? { nil }
    public func send(_ datagram: UnsafeRawBufferPointer, via route: DatagramRoute) { send(datagram, to: route.address) }
    public func sendSlot(via route: DatagramRoute) -> UnsafeMutableRawBufferPointer? { nil }
    public func commitSendSlot(length: Int, via route: DatagramRoute) {}
}

/// What a transport reports to the SFU above it.
public protocol WebRTCTransportDelegate: AnyObject {
    func transportDidConnect(_ transport: WebRTCTransport)
    /// A decrypted RTP packet; `packet` may be rewritten in place (it is the receive buffer).
    func transport(_ transport: WebRTCTransport, didReceiveRTP packet: UnsafeMutableRawBufferPointer)
    func transport(_ transport: WebRTCTransport, didReceiveRTCP packet: UnsafeMutableRawBufferPointer)
    func transport(_ transport: WebRTCTransport, didClose reason: WebRTCTransport.CloseReason)
}

/// One ICE-lite + DTLS-SRTP transport (a client's publisher or subscriber PeerConnection): it
/// answers checks, runs the handshake in the role the SDP negotiated, then protects and
/// unprotects media. It lives on its media worker's event loop and is not thread-safe.
public final class WebRTCTransport {
    public enum State: Equatable, Sendable { case new, checking, connecting, connected, closed }

    public enum CloseReason: String, Equatable, Sendable {
        case consentExpired = "consent_expired"
        case dtlsFailed = "dtls_failed"
        case peerClosed = "peer_closed"
        case local = "closed"
    }

    /// What the peer's description says about this transport.
    public struct RemoteParameters: Sendable, Equatable {
        public var ice: ICECredentials
        public var fingerprint: CertificateFingerprint
        /// Our DTLS role, from the two setup attributes.
        public var dtlsRole: DTLSEndpoint.Role

        public init(ice: ICECredentials, fingerprint: CertificateFingerprint, dtlsRole: DTLSEndpoint.Role) {
            self.ice = ice
            self.fingerprint = fingerprint
            self.dtlsRole = dtlsRole
        }
    }

    public let id: String
    public private(set) var state: State = .new
    /// `srtpOutbound` without reference counting, for the send path: a retain is an atomic write
    /// to the session's line, which is cold when a packet fans out to many subscribers.
    @usableFromInline private(set) var outbound: Unmanaged<SRTPSession>?
    public private(set) var ice: ICELiteAgent
    public private(set) var remote: RemoteParameters?
    public private(set) var counters = TransportCounters()
    /// Strong, because a weak reference costs a side-table load on every packet sent; the port
    /// clears it when it unregisters the transport, which breaks the cycle.
    public var sink: (any DatagramSink)? {
        didSet { route = nil }
    }
    /// The sink's route to the selected address, looked up when the address changes.
    private var route: DatagramRoute?
    public weak var delegate: (any WebRTCTransportDelegate)?

    private let dtlsContext: DTLSContext
    private var dtls: DTLSEndpoint?
    private var srtpInbound: SRTPSession?
    private var srtpOutbound: SRTPSession? {
        didSet { outbound = srtpOutbound.map { Unmanaged.passUnretained($0) } }
    }
    /// Where DTLS came from before a nomination, so a server-role handshake can answer.
    private var dtlsPeer: TransportAddress?
    /// DTLS that arrives before the peer's answer is applied (the subscriber transport's client
    /// may send its ClientHello first). Bounded.
    private var earlyDTLS: [([UInt8], TransportAddress)] = []
    private var nextDTLSTimer: UInt64?
    private let mtu: Int

    public init(
        id: String, localICE: ICECredentials, dtlsContext: DTLSContext, consentTimeoutNanoseconds: UInt64 = 30_000_000_000,
        mtu: Int = 1200, now: UInt64
    ) {
        self.id = id
        self.ice = ICELiteAgent(local: localICE, remote: nil, consentTimeoutNanoseconds: consentTimeoutNanoseconds, now: now)
        self.dtlsContext = dtlsContext
        self.mtu = mtu
    }

    public var localICE: ICECredentials { ice.local }
    /// Our certificate's fingerprint, as our SDP announces it.
    public var localFingerprint: CertificateFingerprint { dtlsContext.certificate.fingerprint }
    public var selectedAddress: TransportAddress? { ice.selectedAddress }
    public var isConnected: Bool { state == .connected }

    /// Applies the peer's description. The first call creates the DTLS endpoint in the negotiated
    /// role; a later one with new ICE credentials is an ICE restart and keeps DTLS as it is.
    public func configure(remote newRemote: RemoteParameters, now: UInt64) throws(DTLSError) {
        guard state != .closed else { return }
        if let remote {
            if remote.ice != newRemote.ice { ice.setRemote(newRemote.ice) }
            self.remote = RemoteParameters(ice: newRemote.ice, fingerprint: remote.fingerprint, dtlsRole: remote.dtlsRole)
            return
        }
        remote = newRemote
        ice.setRemote(newRemote.ice)
        let endpoint = try DTLSEndpoint(context: dtlsContext, role: newRemote.dtlsRole, remoteFingerprint: newRemote.fingerprint, mtu: mtu)
        dtls = endpoint
        if state == .new { state = .checking }
        // A client starts once it has somewhere to send; a server waits for the ClientHello.
        if endpoint.role == .client, ice.selectedAddress != nil { startClientHandshake(now: now) }
        let queued = earlyDTLS
        earlyDTLS.removeAll()
        for (datagram, source) in queued { datagram.withUnsafeBytes { handleDTLS($0, from: source, now: now) } }
    }

    /// ICE restart on our side: new local credentials (the caller puts them in the next SDP).
    public func restartICE(local: ICECredentials) {
        ice.restart(local: local, remote: remote?.ice)
    }

    // MARK: Receiving

    /// One datagram from `source`. `datagram` is the receive buffer: SRTP is unprotected in place.
    public func receive(_ datagram: UnsafeMutableRawBufferPointer, from source: TransportAddress, now: UInt64) {
        guard state != .closed else { return }
        switch PacketKind(UnsafeRawBufferPointer(datagram)) {
        case .stun:
            handleSTUN(UnsafeRawBufferPointer(datagram), from: source, now: now)
        case .dtls:
            guard ice.accepts(source) else { return counters.droppedUnknownSource += 1 }
            handleDTLS(UnsafeRawBufferPointer(datagram), from: source, now: now)
        case .rtp:
            guard ice.accepts(source) else { return counters.droppedUnknownSource += 1 }
            guard let srtpInbound else { return counters.droppedBeforeKeys += 1 }
            do {
                let length = try srtpInbound.unprotectRTP(datagram, length: datagram.count)
                counters.rtpPacketsIn += 1
                counters.rtpBytesIn += UInt64(datagram.count)
                ice.noteAuthenticatedTraffic(now: now)
                delegate?.transport(self, didReceiveRTP: UnsafeMutableRawBufferPointer(rebasing: datagram[0..<length]))
            } catch {
                counters.srtpFailures += 1
            }
        case .rtcp:
            guard ice.accepts(source) else { return counters.droppedUnknownSource += 1 }
            guard let srtpInbound else { return counters.droppedBeforeKeys += 1 }
            do {
                let length = try srtpInbound.unprotectRTCP(datagram, length: datagram.count)
                counters.rtcpPacketsIn += 1
                counters.rtcpBytesIn += UInt64(datagram.count)
                ice.noteAuthenticatedTraffic(now: now)
                delegate?.transport(self, didReceiveRTCP: UnsafeMutableRawBufferPointer(rebasing: datagram[0..<length]))
            } catch {
                counters.srtcpFailures += 1
            }
        case .turnChannelData, .unknown:
            counters.droppedMalformed += 1
        }
    }

    func handleSTUN(_ datagram: UnsafeRawBufferPointer, from source: TransportAddress, now: UInt64) {
        guard let message = try? STUNMessage(parsing: datagram) else { return counters.droppedMalformed += 1 }
        handleSTUN(message, from: source, now: now)
    }

    /// A check the worker already parsed (it routes checks by the ufrag in USERNAME).
    public func handleSTUN(_ message: STUNMessage, from source: TransportAddress, now: UInt64) {
        guard state != .closed else { return }
        let previous = ice.selectedAddress
        switch ice.handle(message, from: source, now: now) {
        case .respond(let response, let nominated):
            counters.stunChecks += 1
            response.withUnsafeBytes { sink?.send($0, to: source) }
            if nominated {
                sink?.transport(self, didSelect: source, previous: previous)
                route = nil
                if dtls?.role == .client, case .handshaking = dtls?.state, nextDTLSTimer == nil { startClientHandshake(now: now) }
            }
            if state == .new { state = .checking }
        case .reject(let response, _):
            counters.stunRejected += 1
            response.withUnsafeBytes { sink?.send($0, to: source) }
        case .drop:
            counters.stunRejected += 1
        }
    }

    private func handleDTLS(_ datagram: UnsafeRawBufferPointer, from source: TransportAddress, now: UInt64) {
        guard let dtls else {
            if earlyDTLS.count < 8 { earlyDTLS.append((Array(datagram), source)) }
            return
        }
        dtlsPeer = source
        counters.dtlsPacketsIn += 1
        let wasHandshaking = dtls.state == .handshaking
        sendDTLS(dtls.receive(datagram), now: now)
        switch dtls.state {
        case .connected(let keys) where wasHandshaking:
            ice.noteAuthenticatedTraffic(now: now)
            installKeys(keys)
        case .closed where !wasHandshaking || state == .connected:
            close(.peerClosed)
        case .failed:
            counters.dtlsFailures += 1
            close(.dtlsFailed)
        default:
            break
        }
    }

    private func installKeys(_ keys: DTLSSRTPKeys) {
        do {
            srtpInbound = try SRTPSession(keys.remote, direction: .inbound)
            srtpOutbound = try SRTPSession(keys.local, direction: .outbound)
        } catch {
            counters.dtlsFailures += 1
            close(.dtlsFailed)
            return
        }
        nextDTLSTimer = nil
        state = .connected
        delegate?.transportDidConnect(self)
    }

    private func startClientHandshake(now: UInt64) {
        guard let dtls else { return }
        state = .connecting
        sendDTLS(dtls.start(), now: now)
    }

    private func sendDTLS(_ datagrams: [[UInt8]], now: UInt64) {
        if let dtls, let delay = dtls.retransmitDelayMilliseconds {
            nextDTLSTimer = now + UInt64(max(delay, 1)) * 1_000_000
        } else {
            nextDTLSTimer = nil
        }
        guard let address = ice.selectedAddress ?? dtlsPeer else { return }
        if state == .checking { state = .connecting }
        for datagram in datagrams {
            counters.dtlsPacketsOut += 1
            datagram.withUnsafeBytes { sink?.send($0, to: address) }
        }
    }

    // MARK: Sending

    /// Builds an RTP packet where it leaves from, protects it and sends it: in the sink's send
    /// slot when it has one, so a forwarded copy is written once rather than built in a scratch
    /// buffer and copied again. `build` writes the packet at the start of the buffer it gets (the
    /// SRTP trailer's room is kept past its end) and returns the length, or nil to send nothing.
    /// Returns false when not connected or nothing was sent.
    @discardableResult
    public func sendRTP(building build: (UnsafeMutableRawBufferPointer) -> Int?) -> Bool {
        guard let outbound, let sink, let address = ice.selectedAddress ?? dtlsPeer else { return false }
        guard let route = route(to: address, through: sink), let slot = sink.sendSlot(via: route) else {
            // A sink without send slots (tests' capturing sinks): build on the stack, then send a copy.
            return withUnsafeTemporaryAllocation(byteCount: 2048, alignment: 16) { buffer in
                guard let length = build(UnsafeMutableRawBufferPointer(rebasing: buffer[..<(buffer.count - SRTPSession.maxTrailer)])) else { return false }
                return sendRTP(buffer, length: length)
            }
        }
        guard let length = build(UnsafeMutableRawBufferPointer(rebasing: slot[..<(slot.count - SRTPSession.maxTrailer)])),
            let protected = protectRTP(slot, length: length, with: outbound)
        else { return false }
        sink.commitSendSlot(length: protected, via: route)
        return true
    }

    /// Protects an RTP packet in place and sends it. `buffer` must have room for the SRTP trailer
    /// (`SRTPSession.maxTrailer` bytes past `length`). Returns false when not connected or on failure.
    @discardableResult
    public func sendRTP(_ buffer: UnsafeMutableRawBufferPointer, length: Int) -> Bool {
        guard let outbound, let address = ice.selectedAddress ?? dtlsPeer,
            let protected = protectRTP(buffer, length: length, with: outbound)
        else { return false }
        sendMedia(UnsafeRawBufferPointer(rebasing: buffer[0..<protected]), to: address)
        return true
    }

    /// Protects RTP in place and counts it; nil (counted as a failure) when protection fails.
    private func protectRTP(_ buffer: UnsafeMutableRawBufferPointer, length: Int, with outbound: Unmanaged<SRTPSession>) -> Int? {
        guard let protected = outbound._withUnsafeGuaranteedRef({ session in try? session.protectRTP(buffer, length: length) }) else {
            counters.srtpFailures += 1
            return nil
        }
        counters.rtpPacketsOut += 1
        counters.rtpBytesOut += UInt64(protected)
        return protected
    }

    @discardableResult
    public func sendRTCP(_ buffer: UnsafeMutableRawBufferPointer, length: Int) -> Bool {
        guard let srtpOutbound, let address = ice.selectedAddress ?? dtlsPeer else { return false }
        guard let protected = try? srtpOutbound.protectRTCP(buffer, length: length) else {
            counters.srtcpFailures += 1
            return false
        }
        counters.rtcpPacketsOut += 1
        counters.rtcpBytesOut += UInt64(protected)
        sendMedia(UnsafeRawBufferPointer(rebasing: buffer[0..<protected]), to: address)
        return true
    }

    /// For a loop about to send through many transports (see `Prefetch`): the SRTP session this
    /// transport points to. Call once the transport itself is in cache.
    @inlinable
    public func prefetchSendingSession() {
        Prefetch.memory(outbound?.toOpaque(), lines: 2)
    }

    /// The next level down: the session's cipher, salt and stream state.
    @inlinable
    public func prefetchSendingCipher() {
        if let outbound { SRTPSession.prefetchRTPProtection(of: outbound) }
    }

    /// SRTP and SRTCP go out by the cached route (no lookup per packet).
    private func sendMedia(_ datagram: UnsafeRawBufferPointer, to address: TransportAddress) {
        guard let sink else { return }
        if let route = route(to: address, through: sink) { sink.send(datagram, via: route) } else { sink.send(datagram, to: address) }
    }

    /// The sink's route to `address`, looked up again only when the address changes.
    private func route(to address: TransportAddress, through sink: any DatagramSink) -> DatagramRoute? {
        if route?.address != address { route = sink.route(to: address) }
        return route
    }

    /// Convenience for the control path (tests, RTCP built as arrays).
    @discardableResult
    public func sendRTCP(_ packet: [UInt8]) -> Bool {
        var buffer = packet + [UInt8](repeating: 0, count: SRTPSession.maxTrailer + 4)
        return buffer.withUnsafeMutableBytes { sendRTCP($0, length: packet.count) }
    }

    // MARK: Time

    /// Runs timers: DTLS retransmission and consent. The worker calls it every tick.
    public func tick(now: UInt64) {
        guard state != .closed else { return }
        if ice.consentExpired(now: now) {
            close(.consentExpired)
            return
        }
        if let due = nextDTLSTimer, now >= due, let dtls {
            sendDTLS(dtls.handleTimeout(), now: now)
            if case .failed = dtls.state {
                counters.dtlsFailures += 1
                close(.dtlsFailed)
            }
        }
    }

    /// Sends close_notify when connected, frees the crypto state and reports `reason` once.
    public func close(_ reason: CloseReason = .local) {
        guard state != .closed else { return }
        if let dtls, reason != .peerClosed, let address = ice.selectedAddress ?? dtlsPeer {
            for datagram in dtls.close() { datagram.withUnsafeBytes { sink?.send($0, to: address) } }
        }
        state = .closed
        dtls = nil
        srtpInbound = nil
        srtpOutbound = nil
        earlyDTLS.removeAll()
        nextDTLSTimer = nil
        delegate?.transport(self, didClose: reason)
    }
}

/// Per-transport packet counters, plain integers on the worker's thread; the worker sums them
/// into its metrics.
public struct TransportCounters: Sendable, Equatable {
    public var rtpPacketsIn: UInt64 = 0
    public var rtpBytesIn: UInt64 = 0
    public var rtpPacketsOut: UInt64 = 0
    public var rtpBytesOut: UInt64 = 0
    public var rtcpPacketsIn: UInt64 = 0
    public var rtcpBytesIn: UInt64 = 0
    public var rtcpPacketsOut: UInt64 = 0
    public var rtcpBytesOut: UInt64 = 0
    public var dtlsPacketsIn: UInt64 = 0
    public var dtlsPacketsOut: UInt64 = 0
    public var stunChecks: UInt64 = 0
    public var stunRejected: UInt64 = 0
    public var srtpFailures: UInt64 = 0
    public var srtcpFailures: UInt64 = 0
    public var dtlsFailures: UInt64 = 0
    public var droppedUnknownSource: UInt64 = 0
    public var droppedBeforeKeys: UInt64 = 0
    public var droppedMalformed: UInt64 = 0

    public init() {}
}
