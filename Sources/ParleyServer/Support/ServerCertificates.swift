import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOSSL

/// The certificate and key of `tls.certFile` and `tls.keyFile`, for HTTPS, WSS and TURN over TLS.
/// `reload()` (SIGHUP) reads them again; every handshake after it uses the new ones (through
/// NIOSSL's context callback), so a renewed certificate needs no restart and drops no connection.
final class ServerCertificates: Sendable {
    let certFile: String
    let keyFile: String
    private let current: NIOLockedValueBox<(chain: [NIOSSLCertificate], key: NIOSSLPrivateKey)>

    init(certFile: String, keyFile: String) throws {
        self.certFile = certFile
        self.keyFile = keyFile
        current = NIOLockedValueBox(try Self.load(certFile: certFile, keyFile: keyFile))
    }

    /// Reads both files again; on an error the old pair stays in use.
    func reload() throws {
        let fresh = try Self.load(certFile: certFile, keyFile: keyFile)
        current.withLockedValue { $0 = fresh }
    }

    /// The leaf certificate's SHA-256 fingerprint, as browsers show it (AA:BB:…).
    var fingerprint: String {
        let leaf = current.withLockedValue { $0.chain.first }
        guard let der = try? leaf?.toDERBytes() else { return "" }
        return Self.fingerprint(der: der)
    }

    /// SHA-256 of a certificate's DER bytes as browsers show it (AA:BB:…).
    static func fingerprint(der: [UInt8]) -> String {
        SHA256.hash(data: der).map { String(format: "%02X", $0) }.joined(separator: ":")
    }

    /// A server configuration whose certificate and key are read at each handshake.
    func configuration() -> TLSConfiguration {
        let (chain, key) = current.withLockedValue { $0 }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.sslContextCallback = { [current] _, promise in
            let (chain, key) = current.withLockedValue { $0 }
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = chain.map { .certificate($0) }
            override.privateKey = .privateKey(key)
            promise.succeed(override)
        }
        return configuration
    }

    static func load(certFile: String, keyFile: String) throws -> (chain: [NIOSSLCertificate], key: NIOSSLPrivateKey) {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certFile)
        } catch {
            throw ConfigError("tls.certFile \(certFile): not a readable PEM certificate (\(error))")
        }
        guard !chain.isEmpty else { throw ConfigError("tls.certFile \(certFile) holds no certificate") }
        do {
            return (chain, try NIOSSLPrivateKey(file: keyFile, format: .pem))
        } catch {
            throw ConfigError("tls.keyFile \(keyFile): not a readable PEM private key (\(error))")
        }
    }
}
