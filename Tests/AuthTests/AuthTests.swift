import Auth
import Crypto
import Foundation
import Testing

@Suite struct TokenTests {
    static let start = Date(timeIntervalSince1970: 1_800_000_000)

    func verifier(at date: Date = start, secrets: [String: String] = ["devkey": "secret"], leeway: Int64 = 0) async -> TokenVerifier {
        await TokenVerifier(secrets: secrets, leeway: leeway, now: { date })
    }

    func mint(
        key: String = "devkey", secret: String = "secret", grants: Grants = Grants(room: "standup", join: true, chat: true),
        ttl: Int64 = 3600, at date: Date = start
    ) async throws -> String {
        try await TokenIssuer(apiKey: key, secret: secret).mint(
            identity: "alice", grants: grants, name: "Alice", metadata: "m", ttl: ttl, now: date)
    }

    @Test func mintedTokenVerifiesWithItsClaims() async throws {
        let token = try await mint()
        let claims = try await verifier().verify(token)
        #expect(claims.iss == "devkey")
        #expect(claims.identity == "alice")
        #expect(claims.name == "Alice")
        #expect(claims.metadata == "m")
        #expect(claims.grants == Grants(room: "standup", join: true, chat: true))
        #expect(claims.exp - (claims.nbf ?? 0) == 3600)
    }

    /// A JWT signed here by hand (HS256 over the header and the given claims), as any JWT library
    /// would make it: no Parley code in the minting.
    static func handMade(_ claims: String, secret: String = "secret") -> String {
        func base64url(_ data: Data) -> String {
            data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
                .replacingOccurrences(of: "=", with: "")
        }
        let signingInput = base64url(Data(#"{"alg":"HS256","typ":"JWT"}"#.utf8)) + "." + base64url(Data(claims.utf8))
        let mac = HMAC<SHA256>.authenticationCode(for: Data(signingInput.utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return signingInput + "." + base64url(Data(mac))
    }

    @Test func everyRegisteredClaimButWhatParleyNeedsIsOptional() async throws {
        // No nbf, a fractional exp (RFC 7519 NumericDate), no name.
        let token = Self.handMade(#"{"iss":"devkey","sub":"bob","exp":1800003600.5,"grants":{"room":"r","join":true}}"#)
        let claims = try await verifier().verify(token)
        #expect(claims.identity == "bob" && claims.nbf == nil && claims.exp == 1_800_003_600)
        #expect(claims.grants == Grants(room: "r", join: true))
    }

    @Test func aRefusalNamesWhatIsWrong() async throws {
        await #expect(throws: TokenError.missingIssuer) {
            try await verifier().verify(Self.handMade(#"{"sub":"bob","exp":1800003600}"#))
        }
        await #expect(throws: TokenError.noExpiry) {
            try await verifier().verify(Self.handMade(#"{"iss":"devkey","sub":"bob"}"#))
        }
        await #expect(throws: TokenError.missingIdentity) {
            try await verifier().verify(Self.handMade(#"{"iss":"devkey","exp":1800003600}"#))
        }
        await #expect(throws: TokenError.badSignature) {
            try await verifier().verify(Self.handMade(#"{"iss":"devkey","sub":"bob","exp":1800003600}"#, secret: "wrong"))
        }
        await #expect(throws: TokenError.malformed) { try await verifier().verify("not.a.jwt") }
        #expect(TokenError.noExpiry.description.contains("exp") && TokenError.missingIssuer.description.contains("iss"))
    }

    @Test func liveKitVideoClaimsStandInForGrants() async throws {
        // As LiveKit's server SDKs mint a join token: absent canPublish/canSubscribe mean allowed.
        let join = Self.handMade(#"{"iss":"devkey","sub":"lk","nbf":1799999000,"exp":1800003600,"name":"LK","video":{"roomJoin":true,"room":"r"}}"#)
        let claims = try await verifier().verify(join)
        #expect(claims.name == "LK")
        #expect(claims.grants == Grants(room: "r", join: true, publish: true, subscribe: true, chat: true))
        let viewer = Self.handMade(
            #"{"iss":"devkey","sub":"v","exp":1800003600,"video":{"roomJoin":true,"room":"r","canPublish":false,"hidden":true}}"#)
        #expect(try await verifier().verify(viewer).grants == Grants(room: "r", join: true, subscribe: true, hidden: true))
        let server = Self.handMade(#"{"iss":"devkey","sub":"api","exp":1800003600,"video":{"roomCreate":true,"roomList":true}}"#)
        let serverGrants = try await verifier().verify(server).grants
        #expect(serverGrants.admin && serverGrants.room == nil && !serverGrants.join)
        let recorder = Self.handMade(#"{"iss":"devkey","sub":"rec","exp":1800003600,"video":{"roomJoin":true,"room":"r","recorder":true,"hidden":true}}"#)
        #expect(try await verifier().verify(recorder).grants.record)
    }

    @Test func aTokenMintedInLiveKitsShapeReadsBackTheSameGrants() async throws {
        let grants = Grants(room: "r", join: true, publish: true, subscribe: false, chat: true, record: true)
        let token = try await TokenIssuer(apiKey: "devkey", secret: "secret").mintLiveKit(
            identity: "alice", grants: grants, name: "Alice", ttl: 60, now: Self.start)
        let claims = try await verifier().verify(token)
        #expect(claims.grants == grants && claims.name == "Alice" && claims.exp == claims.nbf.map { $0 + 60 })
        let payload = String(token.split(separator: ".")[1])
        let padded = payload.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
            + String(repeating: "=", count: (4 - payload.count % 4) % 4)
        let data = try #require(Data(base64Encoded: padded))
        let json = String(decoding: data, as: UTF8.self)
        #expect(json.contains(#""video":{"#) && !json.contains("grants"))
    }

    @Test func expiredTokenIsRefused() async throws {
        let token = try await mint(ttl: 60)
        await #expect(throws: TokenError.expired) {
            try await verifier(at: Self.start.addingTimeInterval(61)).verify(token)
        }
        // Leeway tolerates small clock skew.
        _ = try await verifier(at: Self.start.addingTimeInterval(61), leeway: 5).verify(token)
    }

    @Test func notYetValidTokenIsRefused() async throws {
        let token = try await mint(at: Self.start.addingTimeInterval(120))
        await #expect(throws: TokenError.notYetValid) { try await verifier().verify(token) }
    }

    @Test func wrongSecretFailsSignature() async throws {
        let token = try await mint(secret: "not-the-secret")
        await #expect(throws: TokenError.badSignature) { try await verifier().verify(token) }
    }

    @Test func unknownIssuerIsRefused() async throws {
        let token = try await mint(key: "otherkey", secret: "other-secret")
        await #expect(throws: TokenError.unknownKey("otherkey")) { try await verifier().verify(token) }
    }

    @Test func severalKeysEachVerifyTheirOwnTokens() async throws {
        let secrets = ["k1": "first-secret-value", "k2": "second-secret-value"]
        let v = await verifier(secrets: secrets)
        #expect(try await v.verify(try await mint(key: "k1", secret: "first-secret-value")).iss == "k1")
        #expect(try await v.verify(try await mint(key: "k2", secret: "second-secret-value")).iss == "k2")
        await #expect(throws: TokenError.badSignature) {
            try await v.verify(try await mint(key: "k1", secret: "second-secret-value"))
        }
    }

    @Test func garbageIsMalformed() async {
        for garbage in ["", "abc", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.sig"] {
            await #expect(throws: TokenError.malformed) { try await verifier().verify(garbage) }
        }
    }

    @Test func tamperedPayloadFailsSignature() async throws {
        let token = try await mint()
        var parts = token.split(separator: ".").map(String.init)
        // Re-encode the payload with admin granted, keeping the original signature.
        var payload = parts[1].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while payload.count % 4 != 0 { payload += "=" }
        let json = String(decoding: Data(base64Encoded: payload)!, as: UTF8.self)
            .replacingOccurrences(of: "\"admin\":false", with: "\"admin\":true")
        parts[1] = Data(json.utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        await #expect(throws: TokenError.badSignature) { try await verifier().verify(parts.joined(separator: ".")) }
    }

    /// A token signed elsewhere with the plain 6-byte secret (as PyJWT or jose would) verifies:
    /// padding short secrets to jwt-kit's minimum must not change signatures.
    @Test func shortSecretSignaturesMatchOtherLibraries() async throws {
        // Made with Python: hmac.new(b"secret", header + b"." + payload, hashlib.sha256), base64url.
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJkZXZrZXkiLCJzdWIiOiJib2IiLCJuYmYiOjAsImV4cCI6MTgwMDAwMzYwMCwiZ3JhbnRzIjp7InJvb20iOiJyIiwiam9pbiI6dHJ1ZX19.HADGsROdZq49dSxMoH7FmTFOWV0YXMJn5vj_jQz0YuA"
        let claims = try await verifier().verify(token)
        #expect(claims.identity == "bob")
        #expect(claims.grants.join)
        #expect(!claims.grants.chat)
    }

    @Test func tokenWithoutExpiryIsRefused() async throws {
        let token = try await mint(ttl: -1_800_000_000)  // exp = 0
        await #expect(throws: TokenError.noExpiry) { try await verifier().verify(token) }
    }

    @Test func grantNamesParse() {
        var grants = Grants()
        for name in Grants.names {
            let known = grants.enable(name)
            #expect(known, "\(name)")
        }
        let unknown = grants.enable("superuser")
        #expect(!unknown)
        #expect(grants.join && grants.publish && grants.subscribe && grants.chat && grants.admin && grants.record && grants.hidden)
    }
}
