import Addresses
import Crypto
import Foundation
import STUN

/// The long-term credentials TURN accepts (RFC 8489 §9.2): static users from config, and
/// coturn's TURN REST scheme, where `username = "<unix expiry>:<identity>"` and the password is
/// `base64(HMAC-SHA1(shared secret, username))`, so signaling can mint credentials that TURN
/// checks without sharing any state.
public struct TURNCredentials: Sendable {
    public enum Lookup: Equatable, Sendable {
        /// The MESSAGE-INTEGRITY key, and who the quota counts it against.
        case key([UInt8], identity: String)
        case unknownUser
        case expired
    }

    public let realm: String
    public let sharedSecret: [UInt8]
    public let staticUsers: [String: String]

    public init(realm: String, sharedSecret: [UInt8], staticUsers: [String: String] = [:]) {
        self.realm = realm
        self.sharedSecret = sharedSecret
        self.staticUsers = staticUsers
    }

    /// The key for `username` at `unixTime` (seconds).
    public func lookup(username: String, unixTime: UInt64) -> Lookup {
        if let password = staticUsers[username] {
            return .key(STUNIntegrity.longTermKey(username: username, realm: realm, password: password), identity: username)
        }
        guard !sharedSecret.isEmpty else { return .unknownUser }
        // coturn also accepts a bare timestamp; the identity is what follows the first colon.
        let parts = username.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard let expiry = UInt64(parts[0]) else { return .unknownUser }
        guard expiry >= unixTime else { return .expired }
        let password = Self.restPassword(secret: sharedSecret, username: username)
        let identity = parts.count == 2 ? String(parts[1]) : username
        return .key(STUNIntegrity.longTermKey(username: username, realm: realm, password: password), identity: identity)
    }

    /// A fresh REST credential for `identity`, valid until `expiry` (unix seconds).
    public func restCredential(identity: String, expiry: UInt64) -> (username: String, password: String) {
        let username = "\(expiry):\(identity)"
        return (username, Self.restPassword(secret: sharedSecret, username: username))
    }

    public static func restPassword(secret: [UInt8], username: String) -> String {
        let mac = HMAC<Insecure.SHA1>.authenticationCode(for: Array(username.utf8), using: SymmetricKey(data: secret))
        return Data(mac).base64EncodedString()
    }
}

/// Stateless nonces: the issue time and a MAC over it and the client's address, so any worker
/// can check a nonce, and one stolen from another client is useless. A nonce older than the
/// lifetime is stale (438), which makes clients re-authenticate with a fresh one.
public struct NonceIssuer: Sendable {
    private let key: SymmetricKey
    public let lifetimeSeconds: UInt64

    public init(key: [UInt8], lifetimeSeconds: UInt64) {
        self.key = SymmetricKey(data: key)
        self.lifetimeSeconds = lifetimeSeconds
    }

    public func issue(for client: IPAddress, unixTime: UInt64) -> String {
        let time = String(unixTime, radix: 16)
        return time + "-" + mac(time: time, client: client)
    }

    public func isValid(_ nonce: String, for client: IPAddress, unixTime: UInt64) -> Bool {
        let parts = nonce.split(separator: "-", maxSplits: 1)
        guard parts.count == 2, parts[0].count <= 16, let issued = UInt64(parts[0], radix: 16) else { return false }
        guard issued <= unixTime + 5, unixTime - min(unixTime, issued) < lifetimeSeconds else { return false }
        let expected = mac(time: String(parts[0]), client: client)
        return expected.utf8.elementsEqual(parts[1].utf8)
    }

    private func mac(time: String, client: IPAddress) -> String {
        var hmac = HMAC<SHA256>(key: key)
        hmac.update(data: Array(time.utf8))
        hmac.update(data: client.bytes)
        return hmac.finalize().prefix(12).map { String(format: "%02x", $0) }.joined()
    }
}
