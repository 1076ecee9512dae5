import Crypto
import Foundation

/// What one node of a cluster shows another when it relays a client's signaling to it: its
/// name, the time, and an HMAC-SHA256 of both under the cluster's shared secret. A node accepts a
/// relayed connection only with a credential of the moment from a node that knows the secret.
public enum ClusterCredential {
    /// `node.unixTime.signature` (signature in hex).
    public static func sign(node: String, unixTime: Int64, secret: [UInt8]) -> String {
        "\(node).\(unixTime).\(signature(node: node, unixTime: unixTime, secret: secret))"
    }

    /// The relaying node's name, or nil when the credential is malformed, signed with another
    /// secret, or more than `maxSkew` seconds away from `now`.
    public static func verify(_ credential: String, now: Int64, secret: [UInt8], maxSkew: Int64 = 60) -> String? {
        let parts = credential.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 3, let time = Int64(parts[parts.count - 2]), abs(now - time) <= maxSkew else { return nil }
        let node = parts.dropLast(2).joined(separator: ".")
        let expected = signature(node: node, unixTime: time, secret: secret)
        let given = String(parts[parts.count - 1])
        // The signature is a secret until it is right.
        return ConstantTime.equal(given, expected) && !node.isEmpty ? node : nil
    }

    /// The secret nodes share when `cluster.secret` is not set: derived from the API keys, which
    /// every node of a cluster must share anyway.
    public static func derivedSecret(apiKeys: [String: String]) -> [UInt8] {
        let material = apiKeys.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: "\n")
        return Array(SHA256.hash(data: Data("parley-cluster\n\(material)".utf8)))
    }

    static func signature(node: String, unixTime: Int64, secret: [UInt8]) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Data("\(node)\n\(unixTime)".utf8), using: SymmetricKey(data: secret))
        return mac.map { String(format: "%02x", $0) }.joined()
    }
}
