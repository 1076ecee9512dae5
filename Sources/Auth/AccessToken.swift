import Foundation
import Crypto
import JWTKit

/// What a token lets its holder do. Field names are the wire contract (PROTOCOL.md).
public struct Grants: Codable, Sendable, Equatable {
    public var room: String?
    public var join: Bool
    public var publish: Bool
    public var subscribe: Bool
    public var chat: Bool
    public var admin: Bool
    public var record: Bool
    public var hidden: Bool

    public init(
        room: String? = nil, join: Bool = false, publish: Bool = false, subscribe: Bool = false,
        chat: Bool = false, admin: Bool = false, record: Bool = false, hidden: Bool = false
    ) {
        self.room = room
        self.join = join
        self.publish = publish
        self.subscribe = subscribe
        self.chat = chat
        self.admin = admin
        self.record = record
        self.hidden = hidden
    }

    /// The names `parley token create --grant` accepts.
    public static let names = ["join", "publish", "subscribe", "chat", "admin", "record", "hidden"]

    /// Sets the named grant; returns false for a name that is not a grant.
    public mutating func enable(_ name: String) -> Bool {
        switch name {
        case "join": join = true
        case "publish": publish = true
        case "subscribe": subscribe = true
        case "chat": chat = true
        case "admin": admin = true
        case "record": record = true
        case "hidden": hidden = true
        default: return false
        }
        return true
    }

    // Missing booleans mean "not granted", so tokens minted by other tools stay valid.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        room = try c.decodeIfPresent(String.self, forKey: .room)
        join = try c.decodeIfPresent(Bool.self, forKey: .join) ?? false
        publish = try c.decodeIfPresent(Bool.self, forKey: .publish) ?? false
        subscribe = try c.decodeIfPresent(Bool.self, forKey: .subscribe) ?? false
        chat = try c.decodeIfPresent(Bool.self, forKey: .chat) ?? false
        admin = try c.decodeIfPresent(Bool.self, forKey: .admin) ?? false
        record = try c.decodeIfPresent(Bool.self, forKey: .record) ?? false
        hidden = try c.decodeIfPresent(Bool.self, forKey: .hidden) ?? false
    }
}

/// The claims of a Parley access token: `iss` is the API key, `sub` the participant's identity.
public struct AccessClaims: JWTPayload, Equatable {
    public var iss: String
    public var sub: String
    public var nbf: Int64
    public var exp: Int64
    public var name: String?
    public var metadata: String?
    public var grants: Grants

    public init(
        apiKey: String, identity: String, notBefore: Int64, expires: Int64,
        name: String? = nil, metadata: String? = nil, grants: Grants
    ) {
        self.iss = apiKey
        self.sub = identity
        self.nbf = notBefore
        self.exp = expires
        self.name = name
        self.metadata = metadata
        self.grants = grants
    }

    public var identity: String { sub }

    // Time checks live in `TokenVerifier`, where the clock is injected.
    public func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Why a token was refused. Every case maps to `unauthorized` on the wire; the reason goes to logs
/// and to the error message so a developer can tell what to fix.
public enum TokenError: Error, Equatable, CustomStringConvertible {
    case malformed
    case unknownKey(String)
    case badSignature
    case expired
    case notYetValid
    case missingIdentity
    case noExpiry

    public var description: String {
        switch self {
        case .malformed: "token is not a well-formed JWT"
        case .unknownKey(let key): "token issuer \"\(key)\" is not a known API key"
        case .badSignature: "token signature does not verify"
        case .expired: "token has expired"
        case .notYetValid: "token is not valid yet (nbf)"
        case .missingIdentity: "token has no identity (sub)"
        case .noExpiry: "token has no expiry (exp)"
        }
    }
}

/// Mints HS256 tokens for one API key.
public struct TokenIssuer: Sendable {
    public let apiKey: String
    private let keys: JWTKeyCollection

    public init(apiKey: String, secret: String) async {
        self.apiKey = apiKey
        self.keys = await JWTKeyCollection().add(hmac: hmacKey(secret), digestAlgorithm: .sha256)
    }

    /// A token for `identity`, valid from `now` for `ttl` seconds.
    public func mint(
        identity: String, grants: Grants, name: String? = nil, metadata: String? = nil,
        ttl: Int64 = 6 * 3600, now: Date = Date()
    ) async throws -> String {
        let issuedAt = Int64(now.timeIntervalSince1970)
        let claims = AccessClaims(
            apiKey: apiKey, identity: identity, notBefore: issuedAt, expires: issuedAt + ttl,
            name: name, metadata: metadata, grants: grants)
        return try await keys.sign(claims)
    }
}

/// Checks tokens against the configured API keys (`iss` picks the secret).
public struct TokenVerifier: Sendable {
    private let keysByIssuer: [String: JWTKeyCollection]
    private let now: @Sendable () -> Date
    /// Seconds of clock skew tolerated on `nbf` and `exp`.
    public let leeway: Int64

    public init(secrets: [String: String], leeway: Int64 = 0, now: @escaping @Sendable () -> Date = { Date() }) async {
        var keys: [String: JWTKeyCollection] = [:]
        for (apiKey, secret) in secrets {
            keys[apiKey] = await JWTKeyCollection().add(hmac: hmacKey(secret), digestAlgorithm: .sha256)
        }
        self.keysByIssuer = keys
        self.leeway = leeway
        self.now = now
    }

    public func verify(_ token: String) async throws(TokenError) -> AccessClaims {
        let unverified: AccessClaims
        do {
            // Any collection can decode without verifying; it only reads the issuer.
            unverified = try await JWTKeyCollection().unverified(token, as: AccessClaims.self)
        } catch {
            throw .malformed
        }
        guard let keys = keysByIssuer[unverified.iss] else { throw .unknownKey(unverified.iss) }
        let claims: AccessClaims
        do {
            claims = try await keys.verify(token, as: AccessClaims.self)
        } catch {
            throw .badSignature
        }
        let nowSeconds = Int64(now().timeIntervalSince1970)
        // A token that never expires can never be revoked: refuse it.
        guard claims.exp > 0 else { throw .noExpiry }
        if nowSeconds > claims.exp + leeway { throw .expired }
        if nowSeconds + leeway < claims.nbf { throw .notYetValid }
        if claims.sub.isEmpty { throw .missingIdentity }
        return claims
    }
}

/// The HMAC key for an API secret. HMAC zero-pads keys shorter than the hash's block size (64
/// bytes for SHA-256), so padding a short secret with zeros to 32 bytes signs identically: tokens
/// stay interoperable with other JWT libraries, and jwt-kit's minimum key length is met.
func hmacKey(_ secret: String) -> HMACKey {
    var bytes = Array(secret.utf8)
    if bytes.count < 32 { bytes += Array(repeating: 0, count: 32 - bytes.count) }
    return HMACKey(key: SymmetricKey(data: bytes))
}
