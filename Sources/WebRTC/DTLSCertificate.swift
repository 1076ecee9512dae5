import CParleyOpenSSL

public enum DTLSError: Error, Equatable, CustomStringConvertible {
    case certificate(String)
    case handshake(String)
    case fingerprintMismatch(expected: String, got: String)
    case noSRTPProfile
    case closed

    public var description: String {
        switch self {
        case .certificate(let why): "DTLS certificate: \(why)"
        case .handshake(let why): "DTLS handshake failed: \(why)"
        case .fingerprintMismatch(let expected, let got): "DTLS peer certificate fingerprint \(got) does not match the SDP's \(expected)"
        case .noSRTPProfile: "DTLS peer negotiated no SRTP protection profile"
        case .closed: "DTLS association closed by the peer"
        }
    }

    /// The reason OpenSSL queued for the last failure, drained from its error queue.
    static func openSSLReason() -> String {
        var reasons: [String] = []
        while case let code = ERR_get_error(), code != 0 {
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            reasons.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return reasons.isEmpty ? "unknown" : reasons.joined(separator: "; ")
    }
}

/// A certificate fingerprint as SDP carries it: `sha-256 AB:CD:…` (RFC 8122).
public struct CertificateFingerprint: Sendable, Equatable, CustomStringConvertible {
    public let algorithm: String
    public let bytes: [UInt8]

    public init(algorithm: String, bytes: [UInt8]) {
        self.algorithm = algorithm.lowercased()
        self.bytes = bytes
    }

    /// Parses the `a=fingerprint` value, e.g. `sha-256 F3:BA:…`.
    public init?(sdpValue: String) {
        let parts = sdpValue.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 2 else { return nil }
        var bytes: [UInt8] = []
        for pair in parts[1].split(separator: ":") {
            guard pair.count == 2, let byte = UInt8(pair, radix: 16) else { return nil }
            bytes.append(byte)
        }
        guard !bytes.isEmpty else { return nil }
        self.init(algorithm: String(parts[0]), bytes: bytes)
    }

    public var hex: String {
        bytes.map { byte in
            let digits = String(byte, radix: 16, uppercase: true)
            return digits.count == 1 ? "0" + digits : digits
        }.joined(separator: ":")
    }

    /// The `a=fingerprint` value.
    public var description: String { "\(algorithm) \(hex)" }
}

/// A self-signed ECDSA P-256 certificate made when the server starts; its SHA-256 fingerprint
/// goes in every SDP Parley writes. Shared by all transports (read-only after creation).
public final class DTLSCertificate: @unchecked Sendable {
    let key: OpaquePointer  // EVP_PKEY
    let certificate: OpaquePointer  // X509
    public let fingerprint: CertificateFingerprint

    /// Makes a new key pair and certificate, valid from a day ago for `validDays` days.
    public init(commonName: String = "parley", validDays: Int = 30, serial: Int = Int.random(in: 1..<Int(Int32.max))) throws(DTLSError) {
        guard let key = parley_ec_p256_key() else { throw .certificate("key generation: \(DTLSError.openSSLReason())") }
        guard let certificate = X509_new() else {
            EVP_PKEY_free(key)
            throw .certificate("X509_new failed")
        }
        self.key = key
        self.certificate = certificate
        X509_set_version(certificate, 2)
        ASN1_INTEGER_set(X509_get_serialNumber(certificate), serial)
        X509_gmtime_adj(X509_getm_notBefore(certificate), -86_400)
        X509_gmtime_adj(X509_getm_notAfter(certificate), validDays * 86_400)
        X509_set_pubkey(certificate, key)
        let name = X509_get_subject_name(certificate)
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, commonName, -1, -1, 0)
        X509_set_issuer_name(certificate, name)
        guard X509_sign(certificate, key, EVP_sha256()) > 0 else {
            let reason = DTLSError.openSSLReason()
            X509_free(certificate)
            EVP_PKEY_free(key)
            throw .certificate("signing: \(reason)")
        }
        guard let digest = Self.sha256(of: certificate) else {
            X509_free(certificate)
            EVP_PKEY_free(key)
            throw .certificate("digest failed")
        }
        fingerprint = CertificateFingerprint(algorithm: "sha-256", bytes: digest)
    }

    deinit {
        X509_free(certificate)
        EVP_PKEY_free(key)
    }

    /// The fingerprint of `certificate` with the hash SDP named (sha-256, sha-1, sha-384, sha-512).
    static func digest(of certificate: OpaquePointer, algorithm: String) -> [UInt8]? {
        let md: OpaquePointer?
        switch algorithm.lowercased() {
        case "sha-256": md = EVP_sha256()
        case "sha-1": md = EVP_sha1()
        case "sha-384": md = EVP_sha384()
        case "sha-512": md = EVP_sha512()
        default: return nil
        }
        var buffer = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        guard X509_digest(certificate, md, &buffer, &length) == 1 else { return nil }
        return Array(buffer.prefix(Int(length)))
    }

    static func sha256(of certificate: OpaquePointer) -> [UInt8]? { digest(of: certificate, algorithm: "sha-256") }
}
