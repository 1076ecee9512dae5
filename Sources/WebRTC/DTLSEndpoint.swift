import CParleyOpenSSL

/// An SSL_CTX for DTLS 1.2 with our certificate and the SRTP profiles we offer. Made once per
/// certificate and shared: OpenSSL allows SSL_new from any thread once the context is set up.
public final class DTLSContext: @unchecked Sendable {
    let context: OpaquePointer  // SSL_CTX
    public let certificate: DTLSCertificate
    public let profiles: [SRTPProfile]

    public init(certificate: DTLSCertificate, profiles: [SRTPProfile] = [.aeadAES128GCM, .aes128CMSHA1_80]) throws(DTLSError) {
        guard let context = SSL_CTX_new(DTLS_method()) else { throw .certificate("SSL_CTX_new: \(DTLSError.openSSLReason())") }
        self.context = context
        self.certificate = certificate
        self.profiles = profiles
        guard parley_ssl_ctx_set_dtls12_only(context) == 1,
            SSL_CTX_use_certificate(context, certificate.certificate) == 1,
            SSL_CTX_use_PrivateKey(context, certificate.key) == 1,
            SSL_CTX_check_private_key(context) == 1
        else { throw .certificate(DTLSError.openSSLReason()) }
        parley_ssl_ctx_verify_peer_by_fingerprint(context)
        // Returns 0 on success (unlike most of OpenSSL).
        guard SSL_CTX_set_tlsext_use_srtp(context, profiles.map(\.openSSLName).joined(separator: ":")) == 0 else {
            throw .certificate("use_srtp: \(DTLSError.openSSLReason())")
        }
    }

    deinit { SSL_CTX_free(context) }
}

/// Keys for SRTP in both directions, exported from a finished DTLS handshake (RFC 5764 §4.2).
public struct DTLSSRTPKeys: Sendable, Equatable {
    public let profile: SRTPProfile
    /// Protects what this endpoint sends.
    public let local: SRTPKeyMaterial
    /// Unprotects what the peer sends.
    public let remote: SRTPKeyMaterial
}

/// One DTLS association driven through memory BIOs, so the transport owns the socket: datagrams
/// go in through `receive`, and whatever OpenSSL wants sent comes back as datagrams no larger
/// than the MTU. Timers are the caller's: ask `retransmitDelayMilliseconds`, call `handleTimeout`.
/// Not thread-safe: it lives on its transport's media worker.
public final class DTLSEndpoint {
    public enum Role: Sendable, Equatable { case client, server }

    public enum State: Equatable {
        case handshaking
        case connected(DTLSSRTPKeys)
        case failed(DTLSError)
        case closed
    }

    public let role: Role
    public private(set) var state: State = .handshaking
    /// The fingerprint the peer's SDP announced; its certificate must match it.
    public var remoteFingerprint: CertificateFingerprint
    private let ssl: OpaquePointer
    private let incoming: OpaquePointer  // BIO we write received datagrams into
    private let outgoing: OpaquePointer  // BIO OpenSSL writes records into
    private let mtu: Int
    private var scratch = [UInt8](repeating: 0, count: 2048)

    public init(context: DTLSContext, role: Role, remoteFingerprint: CertificateFingerprint, mtu: Int = 1200) throws(DTLSError) {
        guard let ssl = SSL_new(context.context) else { throw .handshake("SSL_new: \(DTLSError.openSSLReason())") }
        guard let incoming = BIO_new(BIO_s_mem()), let outgoing = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            throw .handshake("BIO_new failed")
        }
        // An empty read BIO means "no datagram yet", not end of file.
        parley_bio_set_mem_eof_return(incoming, -1)
        parley_bio_set_mem_eof_return(outgoing, -1)
        SSL_set_bio(ssl, incoming, outgoing)  // the SSL owns both BIOs now
        parley_ssl_set_mtu(ssl, mtu)
        switch role {
        case .client: SSL_set_connect_state(ssl)
        case .server: SSL_set_accept_state(ssl)
        }
        self.ssl = ssl
        self.incoming = incoming
        self.outgoing = outgoing
        self.role = role
        self.remoteFingerprint = remoteFingerprint
        self.mtu = mtu
    }

    deinit { SSL_free(ssl) }

    /// Starts the handshake. A client returns its ClientHello; a server returns nothing and waits.
    public func start() -> [[UInt8]] {
        guard role == .client else { return [] }
        advanceHandshake()
        return drainDatagrams()
    }

    /// Feeds one received DTLS datagram; returns the datagrams to send in reply.
    public func receive(_ datagram: UnsafeRawBufferPointer) -> [[UInt8]] {
        guard !datagram.isEmpty else { return [] }
        switch state {
        case .failed, .closed: return []
        case .handshaking, .connected: break
        }
        _ = BIO_write(incoming, datagram.baseAddress, Int32(datagram.count))
        if case .handshaking = state {
            advanceHandshake()
        } else {
            readApplicationData()
        }
        return drainDatagrams()
    }

    /// Milliseconds until OpenSSL wants `handleTimeout` called, or nil when no timer runs.
    public var retransmitDelayMilliseconds: Int? {
        guard case .handshaking = state else { return nil }
        let delay = parley_dtls_timeout_ms(ssl)
        return delay < 0 ? nil : delay
    }

    /// Retransmits the last flight if its timer expired; returns what to send.
    public func handleTimeout() -> [[UInt8]] {
        guard case .handshaking = state else { return [] }
        if parley_dtls_handle_timeout(ssl) < 0 {
            state = .failed(.handshake("retransmission limit: \(DTLSError.openSSLReason())"))
        }
        return drainDatagrams()
    }

    /// Sends close_notify and stops.
    public func close() -> [[UInt8]] {
        switch state {
        case .connected, .handshaking:
            SSL_shutdown(ssl)
            state = .closed
            return drainDatagrams()
        case .failed, .closed:
            return []
        }
    }

    private func advanceHandshake() {
        let result = SSL_do_handshake(ssl)
        if result == 1 {
            finishHandshake()
            return
        }
        let error = SSL_get_error(ssl, result)
        switch error {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return
        case SSL_ERROR_ZERO_RETURN:
            state = .closed
        default:
            state = .failed(.handshake(DTLSError.openSSLReason()))
        }
    }

    private func finishHandshake() {
        guard let peer = SSL_get1_peer_certificate(ssl) else {
            state = .failed(.handshake("peer sent no certificate"))
            return
        }
        defer { X509_free(peer) }
        let digest = DTLSCertificate.digest(of: peer, algorithm: remoteFingerprint.algorithm) ?? []
        guard constantTimeEqual(digest, remoteFingerprint.bytes) else {
            state = .failed(.fingerprintMismatch(
                expected: remoteFingerprint.description,
                got: CertificateFingerprint(algorithm: remoteFingerprint.algorithm, bytes: digest).description))
            return
        }
        guard let selected = SSL_get_selected_srtp_profile(ssl), let profile = SRTPProfile(dtlsID: UInt(selected.pointee.id)) else {
            state = .failed(.noSRTPProfile)
            return
        }
        let keyLength = profile.keyLength
        let saltLength = profile.saltLength
        var material = [UInt8](repeating: 0, count: 2 * (keyLength + saltLength))
        let label = "EXTRACTOR-dtls_srtp"
        let exported = SSL_export_keying_material(ssl, &material, material.count, label, label.utf8.count, nil, 0, 0)
        guard exported == 1 else {
            state = .failed(.handshake("keying material export: \(DTLSError.openSSLReason())"))
            return
        }
        // Laid out as client key, server key, client salt, server salt.
        let clientKey = Array(material[0..<keyLength])
        let serverKey = Array(material[keyLength..<(2 * keyLength)])
        let clientSalt = Array(material[(2 * keyLength)..<(2 * keyLength + saltLength)])
        let serverSalt = Array(material[(2 * keyLength + saltLength)...])
        let client = SRTPKeyMaterial(profile: profile, key: clientKey, salt: clientSalt)
        let server = SRTPKeyMaterial(profile: profile, key: serverKey, salt: serverSalt)
        state = .connected(role == .client
            ? DTLSSRTPKeys(profile: profile, local: client, remote: server)
            : DTLSSRTPKeys(profile: profile, local: server, remote: client))
    }

    /// After the handshake, DTLS records are alerts (close_notify) or a retransmitted flight;
    /// reading lets OpenSSL answer them. Application data is not used (no data channels yet).
    private func readApplicationData() {
        while true {
            let read = scratch.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
            if read > 0 { continue }
            let error = SSL_get_error(ssl, read)
            if error == SSL_ERROR_ZERO_RETURN {
                state = .closed
            } else if error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE {
                ERR_clear_error()
            }
            return
        }
    }

    /// What OpenSSL wrote, split into its records and packed into datagrams of at most `mtu` bytes.
    /// A memory BIO joins a whole flight into one buffer, which may be larger than the path allows.
    private func drainDatagrams() -> [[UInt8]] {
        let pending = Int(BIO_ctrl_pending(outgoing))
        guard pending > 0 else { return [] }
        var bytes = [UInt8](repeating: 0, count: pending)
        let read = Int(BIO_read(outgoing, &bytes, Int32(pending)))
        guard read > 0 else { return [] }
        var datagrams: [[UInt8]] = []
        var current: [UInt8] = []
        var offset = 0
        while offset < read {
            let recordLength: Int
            if read - offset >= 13 {
                recordLength = 13 + (Int(bytes[offset + 11]) << 8 | Int(bytes[offset + 12]))
            } else {
                recordLength = read - offset
            }
            let end = min(read, offset + recordLength)
            if !current.isEmpty && current.count + (end - offset) > mtu {
                datagrams.append(current)
                current = []
            }
            current.append(contentsOf: bytes[offset..<end])
            offset = end
        }
        if !current.isEmpty { datagrams.append(current) }
        return datagrams
    }
}

/// Compares two digests without an early exit.
func constantTimeEqual(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
    guard lhs.count == rhs.count else { return false }
    var difference: UInt8 = 0
    for index in lhs.indices { difference |= lhs[index] ^ rhs[index] }
    return difference == 0
}
