import Addresses
import STUN

/// Local or remote ICE credentials (RFC 8445 §5.3): the ufrag names the session in USERNAME, the
/// password keys MESSAGE-INTEGRITY.
public struct ICECredentials: Sendable, Equatable {
    public var ufrag: String
    public var password: String

    public init(ufrag: String, password: String) {
        self.ufrag = ufrag
        self.password = password
    }

    /// Fresh credentials: a 8-character ufrag and a 24-character password (RFC 8839 asks for at
    /// least 4 and 22 characters of ice-char). Randomness is injected for tests.
    public static func random(using generator: inout some RandomNumberGenerator) -> ICECredentials {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        func text(_ count: Int) -> String { String((0..<count).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }) }
        return ICECredentials(ufrag: text(8), password: text(24))
    }

    public static func random() -> ICECredentials {
        var generator = SystemRandomNumberGenerator()
        return random(using: &generator)
    }
}

/// The ICE-lite side of one transport (RFC 8445 §2.5, §7.3): it never sends checks, answers the
/// controlling peer's checks, adopts the pair the peer nominates with USE-CANDIDATE, and tracks
/// consent (RFC 7675): without a valid check or authenticated media for `consentTimeout`, the
/// transport is dead. Pure state: time is passed in, responses are returned as bytes.
public struct ICELiteAgent: Sendable {
    public enum Outcome: Equatable, Sendable {
        /// Send `response` to the check's source. `nominated` is set when this check selected the pair.
        case respond(response: [UInt8], nominated: Bool)
        /// Answer with an error response (400 or 401) but change nothing.
        case reject(response: [UInt8], reason: DropReason)
        /// Not for us, or not worth an answer (a response, an indication, a bad fingerprint).
        case drop(DropReason)
    }

    public enum DropReason: String, Equatable, Sendable {
        case notARequest = "not_a_request"
        case badFingerprint = "bad_fingerprint"
        case missingUsername = "missing_username"
        case wrongUsername = "wrong_username"
        case badIntegrity = "bad_integrity"
        case unknownAttribute = "unknown_attribute"
    }

    public private(set) var local: ICECredentials
    /// Nil until the peer's description arrives: a check may come before our answer is applied
    /// on the subscriber transport. Our password still authenticates it.
    public private(set) var remote: ICECredentials?
    /// The address the peer nominated; media and DTLS go there.
    public private(set) var selectedAddress: TransportAddress?
    /// Addresses that sent a valid check, so an early DTLS packet from them is accepted.
    public private(set) var validatedAddresses: Set<TransportAddress> = []
    public let consentTimeoutNanoseconds: UInt64
    private var lastConsentNanoseconds: UInt64
    private static let maxValidatedAddresses = 16

    static let understoodAttributes: Set<STUNAttributeType> = [
        .username, .messageIntegrity, .messageIntegritySHA256, .fingerprint, .priority, .useCandidate, .iceControlled,
        .iceControlling,
        // Chromium's GOOG-NETWORK-INFO (0xC057) is comprehension-optional, so it needs no entry.
    ]

    public init(local: ICECredentials, remote: ICECredentials?, consentTimeoutNanoseconds: UInt64 = 30_000_000_000, now: UInt64) {
        self.local = local
        self.remote = remote
        self.consentTimeoutNanoseconds = consentTimeoutNanoseconds
        self.lastConsentNanoseconds = now
    }

    /// The peer's credentials from its description (or a re-offer: RFC 8445 §9 restart if they changed).
    public mutating func setRemote(_ credentials: ICECredentials) { remote = credentials }

    /// ICE restart: new local credentials; the selected pair stays until a check under the new
    /// credentials nominates again, so media keeps flowing meanwhile.
    public mutating func restart(local newLocal: ICECredentials, remote newRemote: ICECredentials?) {
        local = newLocal
        remote = newRemote
        validatedAddresses.removeAll()
        if let selectedAddress { validatedAddresses.insert(selectedAddress) }
    }

    public mutating func handle(_ message: STUNMessage, from source: TransportAddress, now: UInt64) -> Outcome {
        guard message.type == .bindingRequest else { return .drop(.notARequest) }
        // RFC 8445 §7.2.2: ICE checks carry FINGERPRINT; without a valid one this is not ICE.
        guard message.hasValidFingerprint else { return .drop(.badFingerprint) }
        guard let username = message.string(.username) else {
            return .reject(response: errorResponse(to: message, code: 400, reason: "Bad Request"), reason: .missingUsername)
        }
        guard usernameMatches(username) else {
            return .reject(response: errorResponse(to: message, code: 401, reason: "Unauthorized"), reason: .wrongUsername)
        }
        guard message.hasValidIntegrity(key: STUNIntegrity.shortTermKey(password: local.password)) else {
            return .reject(response: errorResponse(to: message, code: 401, reason: "Unauthorized"), reason: .badIntegrity)
        }
        let unknown = message.unknownComprehensionRequired(known: Self.understoodAttributes)
        guard unknown.isEmpty else {
            var builder = STUNMessageBuilder(responding: message, class: .errorResponse)
            builder.appendErrorCode(420, reason: "Unknown Attribute")
            builder.appendUnknownAttributes(unknown)
            builder.appendMessageIntegrity(key: STUNIntegrity.shortTermKey(password: local.password))
            builder.appendFingerprint()
            return .reject(response: builder.bytes, reason: .unknownAttribute)
        }

        lastConsentNanoseconds = now
        if validatedAddresses.count < Self.maxValidatedAddresses { validatedAddresses.insert(source) }
        var nominated = false
        if message.contains(.useCandidate), selectedAddress != source {
            selectedAddress = source
            nominated = true
        }
        var builder = STUNMessageBuilder(responding: message, class: .successResponse)
        builder.append(.xorMappedAddress, xorAddress: source)
        builder.appendMessageIntegrity(key: STUNIntegrity.shortTermKey(password: local.password))
        builder.appendFingerprint()
        return .respond(response: builder.bytes, nominated: nominated)
    }

    /// Authenticated media (SRTP that unprotected, DTLS after the handshake) also shows consent.
    public mutating func noteAuthenticatedTraffic(now: UInt64) {
        lastConsentNanoseconds = max(lastConsentNanoseconds, now)
    }

    public func consentExpired(now: UInt64) -> Bool {
        now > lastConsentNanoseconds && now - lastConsentNanoseconds > consentTimeoutNanoseconds
    }

    /// Whether a non-STUN packet from `address` belongs to this session.
    public func accepts(_ address: TransportAddress) -> Bool {
        selectedAddress == address || validatedAddresses.contains(address)
    }

    /// USERNAME is "ourUfrag:theirUfrag" on checks the peer sends us (RFC 8445 §7.2.2).
    private func usernameMatches(_ username: String) -> Bool {
        guard let colon = username.firstIndex(of: ":") else { return false }
        guard username[..<colon] == local.ufrag else { return false }
        guard let remote else { return true }
        return username[username.index(after: colon)...] == remote.ufrag
    }

    private func errorResponse(to request: STUNMessage, code: Int, reason: String) -> [UInt8] {
        var builder = STUNMessageBuilder(responding: request, class: .errorResponse)
        builder.appendErrorCode(code, reason: reason)
        builder.appendFingerprint()
        return builder.bytes
    }

    /// The local ufrag a check is addressed to, so a worker can find the transport it belongs to.
    public static func localUfrag(of message: STUNMessage) -> Substring? {
        guard let username = message.string(.username), let colon = username.firstIndex(of: ":") else { return nil }
        return username[..<colon]
    }
}
