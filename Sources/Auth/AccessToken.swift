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
/// Read leniently, as RFC 7519 makes every claim optional: `nbf` may be absent, times may be
/// numbers with a fraction, and LiveKit's `video` claims stand in for `grants`, so tokens minted by
/// other tools (LiveKit's server SDKs, any JWT library) are accepted. `TokenVerifier` refuses what
/// Parley needs and is missing, by name.
public struct AccessClaims: JWTPayload, Equatable {
    public var iss: String
    public var sub: String
    public var nbf: Int64?
    public var exp: Int64
    public var name: String?
    public var metadata: String?
    public var grants: Grants

    public init(
        apiKey: String, identity: String, notBefore: Int64?, expires: Int64,
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

    enum CodingKeys: String, CodingKey { case iss, sub, nbf, exp, name, metadata, grants, video }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        iss = try c.decodeIfPresent(String.self, forKey: .iss) ?? ""
        sub = try c.decodeIfPresent(String.self, forKey: .sub) ?? ""
        nbf = try Self.numericDate(c, .nbf)
        exp = try Self.numericDate(c, .exp) ?? 0
        name = try c.decodeIfPresent(String.self, forKey: .name)
        metadata = try c.decodeIfPresent(String.self, forKey: .metadata)
        if let grants = try c.decodeIfPresent(Grants.self, forKey: .grants) {
            self.grants = grants
        } else if let video = try c.decodeIfPresent(LiveKitVideoGrant.self, forKey: .video) {
            self.grants = video.grants
        } else {
            self.grants = Grants()
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(iss, forKey: .iss)
        try c.encode(sub, forKey: .sub)
        try c.encodeIfPresent(nbf, forKey: .nbf)
        try c.encode(exp, forKey: .exp)
        try c.encodeIfPresent(name, forKey: .name)
        try c.encodeIfPresent(metadata, forKey: .metadata)
        try c.encode(grants, forKey: .grants)
    }

    /// A NumericDate (RFC 7519 §2): seconds, possibly with a fraction.
    static func numericDate(_ c: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys) throws -> Int64? {
        if let whole = try? c.decodeIfPresent(Int64.self, forKey: key) { return whole }
        return try c.decodeIfPresent(Double.self, forKey: key).map { Int64($0) }
    }

    // Time checks live in `TokenVerifier`, where the clock is injected.
    public func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// LiveKit's `video` claims, as its server SDKs mint them. Absent `canPublish` and `canSubscribe`
/// mean allowed (as in LiveKit); `canPublishData` follows `canPublish` when absent.
public struct LiveKitVideoGrant: Codable, Sendable, Equatable {
    public var room: String?
    public var roomJoin: Bool?
    public var roomCreate: Bool?
    public var roomList: Bool?
    public var roomAdmin: Bool?
    public var roomRecord: Bool?
    public var canPublish: Bool?
    public var canSubscribe: Bool?
    public var canPublishData: Bool?
    public var hidden: Bool?
    public var recorder: Bool?

    public init(_ grants: Grants) {
        room = grants.room
        roomJoin = grants.join ? true : nil
        roomAdmin = grants.admin && grants.room != nil ? true : nil
        roomCreate = grants.admin && grants.room == nil ? true : nil
        roomList = grants.admin && grants.room == nil ? true : nil
        roomRecord = grants.record ? true : nil
        canPublish = grants.publish
        canSubscribe = grants.subscribe
        canPublishData = grants.chat
        hidden = grants.hidden ? true : nil
        recorder = grants.record && grants.hidden ? true : nil
    }

    /// Parley's grants for these claims: `roomAdmin` (in its room) and `roomCreate` (anywhere) are
    /// admin; `roomRecord` and `recorder` are record.
    public var grants: Grants {
        let publish = canPublish ?? true
        return Grants(
            room: room, join: roomJoin ?? false, publish: publish, subscribe: canSubscribe ?? true,
            chat: canPublishData ?? publish, admin: (roomAdmin ?? false) || (roomCreate ?? false),
            record: (roomRecord ?? false) || (recorder ?? false), hidden: hidden ?? false)
    }
}

/// A webhook's `Authorization`: LiveKit's scheme, so its receivers verify it. The body's SHA-256
/// (base64) is a claim of a short-lived token signed with the API secret.
struct WebhookClaims: JWTPayload {
    var iss: String
    var nbf: Int64
    var exp: Int64
    var sha256: String

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// A token in LiveKit's shape (`video` in place of `grants`), for apps and tools that expect it.
struct LiveKitClaims: JWTPayload {
    var iss: String
    var sub: String
    var nbf: Int64
    var exp: Int64
    var name: String?
    var metadata: String?
    var video: LiveKitVideoGrant

    func verify(using algorithm: some JWTAlgorithm) async throws {}
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
    case missingIssuer

    public var description: String {
        switch self {
        case .malformed: "token is not a well-formed JWT (three base64url parts, a JSON header and claims)"
        case .unknownKey(let key): "token issuer \"\(key)\" is not a known API key"
        case .badSignature: "token signature does not verify"
        case .expired: "token has expired"
        case .notYetValid: "token is not valid yet (nbf)"
        case .missingIdentity: "token has no identity (sub)"
        case .noExpiry: "token has no expiry (exp): Parley refuses tokens that never expire"
        case .missingIssuer: "token names no API key (iss)"
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

    /// The `Authorization` header of a webhook request carrying `body`: a JWT (no "Bearer") whose
    /// `sha256` claim is the base64 SHA-256 of the body, valid for five minutes.
    public func webhookAuthorization(body: Data, now: Date = Date()) async throws -> String {
        let issuedAt = Int64(now.timeIntervalSince1970)
        let digest = Data(SHA256.hash(data: body)).base64EncodedString()
        return try await keys.sign(WebhookClaims(iss: apiKey, nbf: issuedAt, exp: issuedAt + 300, sha256: digest))
    }

    /// The same token in LiveKit's shape: `video` claims in place of `grants`.
    public func mintLiveKit(
        identity: String, grants: Grants, name: String? = nil, metadata: String? = nil,
        ttl: Int64 = 6 * 3600, now: Date = Date()
    ) async throws -> String {
        let issuedAt = Int64(now.timeIntervalSince1970)
        let claims = LiveKitClaims(
            iss: apiKey, sub: identity, nbf: issuedAt, exp: issuedAt + ttl, name: name, metadata: metadata,
            video: LiveKitVideoGrant(grants))
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
        guard !unverified.iss.isEmpty else { throw .missingIssuer }
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
        if let notBefore = claims.nbf, nowSeconds + leeway < notBefore { throw .notYetValid }
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
