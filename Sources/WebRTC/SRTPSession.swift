import CParleyOpenSSL

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
    /// Too short for its header and trailer, or not version 2.
    case malformed
    /// OpenSSL refused a key or an operation.
    case crypto

    public var description: String {
        switch self {
        case .authenticationFailed: "SRTP authentication failed"
        case .replayed: "SRTP packet replayed"
        case .bufferTooSmall: "buffer has no room for the SRTP trailer"
        case .malformed: "SRTP packet malformed"
        case .crypto: "SRTP cipher error"
        }
    }
}

/// One direction of SRTP/SRTCP protection (RFC 3711 AES_CM_128_HMAC_SHA1_80, RFC 7714
/// AEAD_AES_128_GCM): an outbound session protects what we send, an inbound one checks and
/// decrypts what we receive, with a 1,024-packet replay window per SSRC. Framing, key derivation,
/// rollover counters and replay windows are here; the ciphers are OpenSSL's, keyed once per session.
/// (Debian's libsrtp2 does its crypto through NSS, which set up a PKCS#11 context per packet: four
/// times the cost, and a fifth of the server's CPU under load.) Not thread-safe: a transport's
/// sessions live on its media worker.
public final class SRTPSession {
    public enum Direction: Sendable { case inbound, outbound }

    /// Bytes a packet may grow by when protected: SRTCP's 4-byte index plus the GCM tag.
    public static let maxTrailer = 20
    // What protecting RTP reads comes first: the object's first two cache lines, which the
    // forwarding loop prefetches.
    public let direction: Direction
    public let profile: SRTPProfile
    private let rtpCipher: OpaquePointer
    /// The session salts (14 bytes for AES-CM, 12 for GCM) and a scratch IV, in one allocation.
    private let rtpSalt: UnsafeMutablePointer<UInt8>
    private let iv: UnsafeMutablePointer<UInt8>
    private var rtpStreams = SRTPStreams()
    private let rtpAuth: OpaquePointer?
    private let rtcpCipher: OpaquePointer
    private let rtcpAuth: OpaquePointer?
    private let rtcpSalt: UnsafeMutablePointer<UInt8>
    private var rtcpStreams = SRTPStreams()
    private var isGCM: Bool { profile == .aeadAES128GCM }
    private var tagLength: Int { isGCM ? 16 : 10 }

    public init(_ material: SRTPKeyMaterial, direction: Direction) throws(SRTPError) {
        self.direction = direction
        self.profile = material.profile
        let gcm = material.profile == .aeadAES128GCM
        let saltLength = material.profile.saltLength
        let derive = SRTPKeyDerivation(masterKey: material.key, masterSalt: material.salt)
        var rtpKey = derive(label: 0, length: 16), rtcpKey = derive(label: 3, length: 16)
        var rtpAuthKey = gcm ? [] : derive(label: 1, length: 20), rtcpAuthKey = gcm ? [] : derive(label: 4, length: 20)
        defer {
            // Session keys live on in OpenSSL's contexts only.
            for index in rtpKey.indices { rtpKey[index] = 0; rtcpKey[index] = 0 }
            for index in rtpAuthKey.indices { rtpAuthKey[index] = 0; rtcpAuthKey[index] = 0 }
        }
        let decrypt: Int32 = gcm && direction == .inbound ? 1 : 0
        let storage = UnsafeMutablePointer<UInt8>.allocate(capacity: 48)
        storage.initialize(repeating: 0, count: 48)
        rtpSalt = storage
        rtcpSalt = storage + 16
        iv = storage + 32
        rtpSalt.update(from: derive(label: 2, length: saltLength), count: saltLength)
        rtcpSalt.update(from: derive(label: 5, length: saltLength), count: saltLength)
        guard let rtp = parley_aes128_context(rtpKey, gcm ? 1 : 0, decrypt),
              let rtcp = parley_aes128_context(rtcpKey, gcm ? 1 : 0, decrypt) else {
            storage.deallocate()
            throw .crypto
        }
        rtpCipher = rtp
        rtcpCipher = rtcp
        rtpAuth = gcm ? nil : parley_hmac_sha1_context(rtpAuthKey, 20)
        rtcpAuth = gcm ? nil : parley_hmac_sha1_context(rtcpAuthKey, 20)
        if !gcm, rtpAuth == nil || rtcpAuth == nil { throw .crypto }
    }

    deinit {
        EVP_CIPHER_CTX_free(rtpCipher)
        EVP_CIPHER_CTX_free(rtcpCipher)
        if let rtpAuth { parley_hmac_free(rtpAuth) }
        if let rtcpAuth { parley_hmac_free(rtcpAuth) }
        rtpSalt.update(repeating: 0, count: 48)
        rtpSalt.deallocate()
    }

    /// Protects the RTP packet in `buffer[0..<length]` in place; returns the new length.
    /// `buffer` must have `maxTrailer` bytes of room after `length`.
    public func protectRTP(_ buffer: UnsafeMutableRawBufferPointer, length: Int) throws(SRTPError) -> Int {
        try checkRoom(buffer, length)
        let bytes = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
        guard let headerLength = Self.rtpHeaderLength(bytes, length) else { throw .malformed }
        let ssrc = Self.readUInt32(bytes + 8), sequence = UInt16(bytes[2]) << 8 | UInt16(bytes[3])
        let index = rtpStreams.withStream(ssrc) { stream in
            let index = stream.estimate(sequence)
            stream.advance(to: index)
            return index
        }
        let payloadLength = length - headerLength
        if isGCM {
            buildGCMIV(salt: rtpSalt, ssrc: ssrc, index: index)
            guard parley_aes_gcm_seal(rtpCipher, iv, bytes, Int32(headerLength), nil, 0, bytes + headerLength, Int32(payloadLength), bytes + length) == 1
            else { throw .crypto }
            return length + 16
        }
        buildCounterIV(salt: rtpSalt, ssrc: ssrc, index: index)
        guard parley_aes_ctr_xor(rtpCipher, iv, bytes + headerLength, Int32(payloadLength)) == 1 else { throw .crypto }
        var roc = UInt32(truncatingIfNeeded: index >> 16).bigEndian
        let tagged = withUnsafeBytes(of: &roc) { rocBytes in
            parley_hmac_sha1_tag(rtpAuth, bytes, Int32(length), rocBytes.baseAddress, 4, bytes + length, 10)
        }
        guard tagged == 1 else { throw .crypto }
        return length + 10
    }

    /// What `protectRTP` reads first, for a loop that protects for many sessions in a row.
    /// Takes the session unretained: a retain would be an atomic write to a line still on its way.
    @usableFromInline
    static func prefetchRTPProtection(of session: Unmanaged<SRTPSession>) {
        session._withUnsafeGuaranteedRef { $0.prefetchRTPProtection() }
    }

    @inline(__always)
    private func prefetchRTPProtection() {
        Prefetch.memory(UnsafeRawPointer(rtpCipher), lines: 2)
        Prefetch.memory(rtpSalt, lines: 1)
        rtpStreams.prefetch()
    }

    /// Checks and decrypts the SRTP packet in `buffer[0..<length]` in place; returns the RTP length.
    public func unprotectRTP(_ buffer: UnsafeMutableRawBufferPointer, length: Int) throws(SRTPError) -> Int {
        guard length >= 0, length <= buffer.count else { throw .bufferTooSmall }
        let bytes = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let tagLength = tagLength
        guard length >= 12 + tagLength, let headerLength = Self.rtpHeaderLength(bytes, length - tagLength) else { throw .malformed }
        let ssrc = Self.readUInt32(bytes + 8), sequence = UInt16(bytes[2]) << 8 | UInt16(bytes[3])
        let (index, fresh) = rtpStreams.peek(ssrc) { stream in
            let index = stream.estimate(sequence)
            return (index, stream.isFresh(index))
        } ?? (UInt64(sequence), true)
        if !fresh { throw .replayed }
        let payloadLength = length - tagLength - headerLength
        if isGCM {
            buildGCMIV(salt: rtpSalt, ssrc: ssrc, index: index)
            guard parley_aes_gcm_open(rtpCipher, iv, bytes, Int32(headerLength), nil, 0, bytes + headerLength, Int32(payloadLength),
                                      bytes + length - 16) == 1
            else { throw .authenticationFailed }
        } else {
            var roc = UInt32(truncatingIfNeeded: index >> 16).bigEndian
            try withUnsafeBytes(of: &roc) { rocBytes throws(SRTPError) in
                try checkHMAC(rtpAuth, bytes, length - 10, suffix: rocBytes.baseAddress, suffixLength: 4)
            }
            buildCounterIV(salt: rtpSalt, ssrc: ssrc, index: index)
            guard parley_aes_ctr_xor(rtpCipher, iv, bytes + headerLength, Int32(payloadLength)) == 1 else { throw .crypto }
        }
        rtpStreams.withStream(ssrc) { $0.accept(index) }
        return length - tagLength
    }

    public func protectRTCP(_ buffer: UnsafeMutableRawBufferPointer, length: Int) throws(SRTPError) -> Int {
        try checkRoom(buffer, length)
        guard length >= 8 else { throw .malformed }
        let bytes = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let ssrc = Self.readUInt32(bytes + 4)
        let index = rtcpStreams.withStream(ssrc) { stream in stream.nextRTCPIndex() }
        // The E bit: every SRTCP packet we send is encrypted.
        var trailer = (UInt32(0x8000_0000) | UInt32(index)).bigEndian
        if isGCM {
            buildGCMIV(salt: rtcpSalt, ssrc: ssrc, index: UInt64(index))
            let sealed = withUnsafeBytes(of: &trailer) { word in
                parley_aes_gcm_seal(rtcpCipher, iv, bytes, 8, word.baseAddress, 4, bytes + 8, Int32(length - 8), bytes + length)
            }
            guard sealed == 1 else { throw .crypto }
            withUnsafeBytes(of: &trailer) { word in (bytes + length + 16).update(from: word.baseAddress!.assumingMemoryBound(to: UInt8.self), count: 4) }
            return length + 20
        }
        buildCounterIV(salt: rtcpSalt, ssrc: ssrc, index: UInt64(index))
        guard parley_aes_ctr_xor(rtcpCipher, iv, bytes + 8, Int32(length - 8)) == 1 else { throw .crypto }
        withUnsafeBytes(of: &trailer) { word in (bytes + length).update(from: word.baseAddress!.assumingMemoryBound(to: UInt8.self), count: 4) }
        guard parley_hmac_sha1_tag(rtcpAuth, bytes, Int32(length + 4), nil, 0, bytes + length + 4, 10) == 1 else { throw .crypto }
        return length + 14
    }

    public func unprotectRTCP(_ buffer: UnsafeMutableRawBufferPointer, length: Int) throws(SRTPError) -> Int {
        guard length >= 0, length <= buffer.count else { throw .bufferTooSmall }
        let tagLength = tagLength
        guard length >= 8 + 4 + tagLength else { throw .malformed }
        let bytes = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
        guard bytes[0] >> 6 == 2 else { throw .malformed }
        let ssrc = Self.readUInt32(bytes + 4)
        // AES-CM: E+index, then the tag. GCM: the tag (part of the cipher output), then E+index.
        let trailerOffset = isGCM ? length - 4 : length - 4 - tagLength
        let trailer = Self.readUInt32(bytes + trailerOffset)
        let encrypted = trailer & 0x8000_0000 != 0
        let index = UInt64(trailer & 0x7FFF_FFFF)
        if let known = rtcpStreams.peek(ssrc, { $0.isFresh(index) }), !known { throw .replayed }
        if isGCM {
            buildGCMIV(salt: rtcpSalt, ssrc: ssrc, index: UInt64(index))
            let bodyEnd = length - 4 - 16
            // An unencrypted packet (E clear) is authenticated whole, as additional data.
            let opened = encrypted
                ? parley_aes_gcm_open(rtcpCipher, iv, bytes, 8, bytes + trailerOffset, 4, bytes + 8, Int32(bodyEnd - 8), bytes + bodyEnd)
                : parley_aes_gcm_open(rtcpCipher, iv, bytes, Int32(bodyEnd), bytes + trailerOffset, 4, bytes + bodyEnd, 0, bytes + bodyEnd)
            guard opened == 1 else { throw .authenticationFailed }
            rtcpStreams.withStream(ssrc) { $0.accept(index) }
            return bodyEnd
        }
        try checkHMAC(rtcpAuth, bytes, length - 10, suffix: nil, suffixLength: 0)
        if encrypted {
            buildCounterIV(salt: rtcpSalt, ssrc: ssrc, index: index)
            guard parley_aes_ctr_xor(rtcpCipher, iv, bytes + 8, Int32(trailerOffset - 8)) == 1 else { throw .crypto }
        }
        rtcpStreams.withStream(ssrc) { $0.accept(index) }
        return trailerOffset
    }

    // MARK: Framing helpers

    private func checkRoom(_ buffer: UnsafeMutableRawBufferPointer, _ length: Int) throws(SRTPError) {
        guard direction == .outbound, length >= 0, length <= buffer.count, buffer.count - length >= Self.maxTrailer else {
            throw .bufferTooSmall
        }
    }

    private func checkHMAC(
        _ context: OpaquePointer?, _ bytes: UnsafeMutablePointer<UInt8>, _ length: Int, suffix: UnsafeRawPointer?, suffixLength: Int32
    ) throws(SRTPError) {
        var computed: (UInt64, UInt16) = (0, 0)
        let ok = withUnsafeMutableBytes(of: &computed) { tag in
            parley_hmac_sha1_tag(context, bytes, Int32(length), suffix, suffixLength, tag.baseAddress, 10)
        }
        guard ok == 1 else { throw .crypto }
        // Compared without an early exit, so timing tells nothing about where a forged tag differs.
        var difference: UInt8 = 0
        withUnsafeBytes(of: &computed) { tag in
            for offset in 0..<10 { difference |= tag[offset] ^ bytes[length + offset] }
        }
        guard difference == 0 else { throw .authenticationFailed }
    }

    /// RFC 3711 4.1.1: (salt * 2^16) XOR (SSRC * 2^64) XOR (index * 2^16).
    private func buildCounterIV(salt: UnsafeMutablePointer<UInt8>, ssrc: UInt32, index: UInt64) {
        iv.update(from: salt, count: 14)
        iv[14] = 0
        iv[15] = 0
        xorIV(at: 4, ssrc: ssrc, index: index)
    }

    /// XORs the SSRC into the 4 bytes at `offset` and the 48-bit index into the 6 bytes after them.
    @inline(__always)
    private func xorIV(at offset: Int, ssrc: UInt32, index: UInt64) {
        let raw = UnsafeMutableRawPointer(iv)
        raw.storeBytes(of: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self) ^ ssrc.bigEndian, toByteOffset: offset, as: UInt32.self)
        let high = UInt16(truncatingIfNeeded: index >> 32), low = UInt32(truncatingIfNeeded: index)
        raw.storeBytes(of: raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt16.self) ^ high.bigEndian, toByteOffset: offset + 4, as: UInt16.self)
        raw.storeBytes(of: raw.loadUnaligned(fromByteOffset: offset + 6, as: UInt32.self) ^ low.bigEndian, toByteOffset: offset + 6, as: UInt32.self)
    }

    /// RFC 7714 8.1 and 9.1: (00 00 || SSRC || 48-bit index) XOR salt, where RTP's index is
    /// ROC || sequence number and SRTCP's is its 31-bit index.
    private func buildGCMIV(salt: UnsafeMutablePointer<UInt8>, ssrc: UInt32, index: UInt64) {
        iv.update(from: salt, count: 12)
        xorIV(at: 2, ssrc: ssrc, index: index)
    }

    private static func readUInt32(_ bytes: UnsafePointer<UInt8>) -> UInt32 {
        UInt32(bytes[0]) << 24 | UInt32(bytes[1]) << 16 | UInt32(bytes[2]) << 8 | UInt32(bytes[3])
    }

    /// The RTP header's length (fixed part, CSRCs, extension) when it fits in `length`.
    static func rtpHeaderLength(_ bytes: UnsafePointer<UInt8>, _ length: Int) -> Int? {
        guard length >= 12, bytes[0] >> 6 == 2 else { return nil }
        var headerLength = 12 + 4 * Int(bytes[0] & 0x0F)
        if bytes[0] & 0x10 != 0 {
            guard length >= headerLength + 4 else { return nil }
            headerLength += 4 + 4 * (Int(bytes[headerLength + 2]) << 8 | Int(bytes[headerLength + 3]))
        }
        return headerLength <= length ? headerLength : nil
    }
}

/// RFC 3711 4.3: session keys and salts from the master key and salt with the AES-CM PRF
/// (key derivation rate 0). RFC 7714's 12-byte master salt is zero-padded on the right to 14.
struct SRTPKeyDerivation {
    let masterKey: [UInt8]
    let masterSalt: [UInt8]

    func callAsFunction(label: UInt8, length: Int) -> [UInt8] {
        var iv = [UInt8](repeating: 0, count: 16)
        for (offset, byte) in masterSalt.prefix(14).enumerated() { iv[offset] = byte }
        // key_id = label || r (48 bits, 0 at rate 0), right-aligned with the 14-byte salt.
        iv[7] ^= label
        var output = [UInt8](repeating: 0, count: length)
        guard let context = parley_aes128_context(masterKey, 0, 0) else { return output }
        defer { EVP_CIPHER_CTX_free(context) }
        _ = parley_aes_ctr_xor(context, iv, &output, Int32(length))
        return output
    }
}
