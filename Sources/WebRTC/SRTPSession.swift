import CParleySRTP

/// The SRTP protection profiles Parley negotiates through DTLS use_srtp (RFC 5764, RFC 7714).
public enum SRTPProfile: Sendable, Equatable, CaseIterable {
    case aeadAES128GCM
    case aes128CMSHA1_80

    /// The IANA DTLS-SRTP protection profile id, as OpenSSL reports it.
    public var dtlsID: UInt {
        switch self {
        case .aes128CMSHA1_80: 0x0001
        case .aeadAES128GCM: 0x0007
        }
    }

    public init?(dtlsID: UInt) {
        guard let profile = Self.allCases.first(where: { $0.dtlsID == dtlsID }) else { return nil }
        self = profile
    }

    /// The OpenSSL name, for `SSL_CTX_set_tlsext_use_srtp`.
    var openSSLName: String {
        switch self {
        case .aes128CMSHA1_80: "SRTP_AES128_CM_SHA1_80"
        case .aeadAES128GCM: "SRTP_AEAD_AES_128_GCM"
        }
    }

    public var keyLength: Int { 16 }
    public var saltLength: Int {
        switch self {
        case .aes128CMSHA1_80: 14
        case .aeadAES128GCM: 12
        }
    }
}

/// Keys for one direction: the master key followed by the master salt.
public struct SRTPKeyMaterial: Sendable, Equatable {
    public let profile: SRTPProfile
    public let key: [UInt8]
    public let salt: [UInt8]

    public init(profile: SRTPProfile, key: [UInt8], salt: [UInt8]) {
        precondition(key.count == profile.keyLength && salt.count == profile.saltLength, "SRTP key material of the wrong size")
        self.profile = profile
        self.key = key
        self.salt = salt
    }
}

public enum SRTPError: Error, Equatable, CustomStringConvertible {
    case authenticationFailed
    case replayed
    case bufferTooSmall
    case library(Int)

    public var description: String {
        switch self {
        case .authenticationFailed: "SRTP authentication failed"
        case .replayed: "SRTP packet replayed"
        case .bufferTooSmall: "buffer has no room for the SRTP trailer"
        case .library(let status): "libsrtp error \(status)"
        }
    }

    init(status: srtp_err_status_t) {
        switch status {
        case srtp_err_status_auth_fail: self = .authenticationFailed
        case srtp_err_status_replay_fail, srtp_err_status_replay_old: self = .replayed
        default: self = .library(Int(status.rawValue))
        }
    }
}

/// One direction of SRTP/SRTCP protection over libsrtp2: an outbound session protects what we
/// send, an inbound one checks and decrypts what we receive (with replay protection).
/// Not thread-safe: a transport's sessions live on its media worker.
public final class SRTPSession {
    public enum Direction: Sendable { case inbound, outbound }

    /// Bytes a packet may grow by when protected; keep this much room after the payload.
    public static let maxTrailer = Int(parley_srtp_max_trailer())

    private var session: srtp_t?
    public let direction: Direction

    public init(_ material: SRTPKeyMaterial, direction: Direction) throws(SRTPError) {
        Self.initialiseLibrary
        self.direction = direction
        var policy = srtp_policy_t()
        switch material.profile {
        case .aes128CMSHA1_80:
            parley_srtp_policy_aes_cm_128_hmac_sha1_80(&policy.rtp)
            parley_srtp_policy_aes_cm_128_hmac_sha1_80(&policy.rtcp)
        case .aeadAES128GCM:
            srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtp)
            srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtcp)
        }
        policy.ssrc.type = direction == .inbound ? ssrc_any_inbound : ssrc_any_outbound
        policy.window_size = 1024
        // A retransmission answering a NACK resends a packet already protected once.
        policy.allow_repeat_tx = 1
        var keyAndSalt = material.key + material.salt
        let status = keyAndSalt.withUnsafeMutableBufferPointer { buffer -> srtp_err_status_t in
            policy.key = buffer.baseAddress
            policy.next = nil
            return srtp_create(&session, &policy)
        }
        // libsrtp copied the key; do not leave it lying in memory.
        for index in keyAndSalt.indices { keyAndSalt[index] = 0 }
        guard status == srtp_err_status_ok else { throw SRTPError(status: status) }
    }

    deinit {
        if let session { srtp_dealloc(session) }
    }

    private static let initialiseLibrary: Void = {
        let status = srtp_init()
        precondition(status == srtp_err_status_ok, "srtp_init failed: \(status)")
    }()

    /// Protects the RTP packet in `buffer[0..<length]` in place; returns the new length.
    /// `buffer` must have `maxTrailer` bytes of room after `length`.
    public func protectRTP(_ buffer: UnsafeMutableRawBufferPointer, length: Int) throws(SRTPError) -> Int {
        try run(buffer, length, srtp_protect)
    }

    /// Checks and decrypts the SRTP packet in `buffer[0..<length]` in place; returns the RTP length.
    public func unprotectRTP(_ buffer: UnsafeMutableRawBufferPointer, length: Int) throws(SRTPError) -> Int {
        try run(buffer, length, srtp_unprotect)
    }

    public func protectRTCP(_ buffer: UnsafeMutableRawBufferPointer, length: Int) throws(SRTPError) -> Int {
        try run(buffer, length, srtp_protect_rtcp)
    }

    public func unprotectRTCP(_ buffer: UnsafeMutableRawBufferPointer, length: Int) throws(SRTPError) -> Int {
        try run(buffer, length, srtp_unprotect_rtcp)
    }

    private func run(
        _ buffer: UnsafeMutableRawBufferPointer, _ length: Int,
        _ operation: (srtp_t?, UnsafeMutableRawPointer?, UnsafeMutablePointer<Int32>?) -> srtp_err_status_t
    ) throws(SRTPError) -> Int {
        let growing = direction == .outbound
        guard length >= 0, length <= buffer.count, !growing || buffer.count - length >= Self.maxTrailer else {
            throw .bufferTooSmall
        }
        var newLength = Int32(length)
        let status = operation(session, buffer.baseAddress, &newLength)
        guard status == srtp_err_status_ok else { throw SRTPError(status: status) }
        return Int(newLength)
    }
}
