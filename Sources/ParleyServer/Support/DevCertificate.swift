import Addresses
import Crypto
import Foundation
import SwiftASN1
import X509

/// A self-signed certificate for dev mode on a LAN address: a phone on the same network opens
/// the web client over HTTPS (browsers give a camera only to a secure page) after accepting it
/// once. Made in `directory` (P-256, a year, the addresses and `localhost` as names) and reused
/// while it still names every address.
public enum DevCertificate {
    public struct Files: Sendable {
        public var cert: String
        public var key: String
        /// SHA-256 of the certificate, as browsers show it (AA:BB:…).
        public var fingerprint: String
    }

    public static func ensure(directory: String, addresses: [IPAddress], now: Date = Date()) throws -> Files {
        let certPath = (directory as NSString).appendingPathComponent("dev-cert.pem")
        let keyPath = (directory as NSString).appendingPathComponent("dev-key.pem")
        let names: [GeneralName] = [.dnsName("localhost")] + addresses.map { .ipAddress(ASN1OctetString(contentBytes: ArraySlice($0.bytes))) }
        if let existing = try? String(contentsOfFile: certPath, encoding: .utf8),
           FileManager.default.fileExists(atPath: keyPath),
           let certificate = try? Certificate(pemEncoded: existing),
           certificate.notValidAfter > now.addingTimeInterval(24 * 3600),
           let covered = try? certificate.extensions.subjectAlternativeNames,
           names.allSatisfy({ covered.contains($0) })
        {
            return Files(cert: certPath, key: keyPath, fingerprint: try fingerprint(of: certificate))
        }
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName {
            CommonName("Parley dev certificate")
            OrganizationName("Parley")
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(365 * 24 * 3600),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(names)
            },
            issuerPrivateKey: .init(key))
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try key.pemRepresentation.write(toFile: keyPath, atomically: true, encoding: .utf8)
        chmod(keyPath, 0o600)
        try certificate.serializeAsPEM().pemString.write(toFile: certPath, atomically: true, encoding: .utf8)
        return Files(cert: certPath, key: keyPath, fingerprint: try fingerprint(of: certificate))
    }

    static func fingerprint(of certificate: Certificate) throws -> String {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return ServerCertificates.fingerprint(der: serializer.serializedBytes)
    }
}
