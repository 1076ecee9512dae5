import Testing
@testable import WebRTC

/// Two endpoints in one process, datagrams passed by hand: the handshake, the keys, the checks.
@Suite(.timeLimit(.minutes(2))) struct DTLSTests {
    static let context: DTLSContext = try! DTLSContext(certificate: DTLSCertificate())
    static let otherContext: DTLSContext = try! DTLSContext(certificate: DTLSCertificate())

    /// Delivers every datagram each side produces to the other until both are quiet.
    static func pump(_ client: DTLSEndpoint, _ server: DTLSEndpoint, first: [[UInt8]], maxRounds: Int = 20) -> Int {
        var toServer = first
        var toClient: [[UInt8]] = []
        var datagrams = 0
        for _ in 0..<maxRounds where !(toServer.isEmpty && toClient.isEmpty) {
            datagrams += toServer.count + toClient.count
            toClient = toServer.flatMap { datagram in datagram.withUnsafeBytes { server.receive($0) } }
            toServer = toClient.flatMap { datagram in datagram.withUnsafeBytes { client.receive($0) } }
            if toServer.isEmpty { toClient = [] }
        }
        return datagrams
    }

    @Test func handshakeExportsMatchingKeysAndEveryDatagramFitsTheMTU() throws {
        let client = try DTLSEndpoint(context: Self.context, role: .client, remoteFingerprint: Self.otherContext.certificate.fingerprint, mtu: 1200)
        let server = try DTLSEndpoint(context: Self.otherContext, role: .server, remoteFingerprint: Self.context.certificate.fingerprint, mtu: 1200)
        let hello = client.start()
        #expect(!hello.isEmpty)
        #expect(server.start().isEmpty)
        var sizes: [Int] = []
        var toServer = hello
        for _ in 0..<10 where !toServer.isEmpty {
            sizes += toServer.map(\.count)
            let toClient = toServer.flatMap { d in d.withUnsafeBytes { server.receive($0) } }
            sizes += toClient.map(\.count)
            toServer = toClient.flatMap { d in d.withUnsafeBytes { client.receive($0) } }
        }
        guard case .connected(let clientKeys) = client.state, case .connected(let serverKeys) = server.state else {
            Issue.record("not connected: client \(client.state), server \(server.state)")
            return
        }
        #expect(clientKeys.profile == .aeadAES128GCM)
        #expect(clientKeys.local == serverKeys.remote)
        #expect(clientKeys.remote == serverKeys.local)
        #expect(clientKeys.local != clientKeys.remote)
        #expect(sizes.allSatisfy { $0 <= 1200 }, "\(sizes)")
        #expect(client.retransmitDelayMilliseconds == nil)
    }

    @Test func aPeerWhoseCertificateDoesNotMatchItsFingerprintIsRefused() throws {
        let impostor = CertificateFingerprint(algorithm: "sha-256", bytes: [UInt8](repeating: 0xAB, count: 32))
        let client = try DTLSEndpoint(context: Self.context, role: .client, remoteFingerprint: Self.otherContext.certificate.fingerprint)
        let server = try DTLSEndpoint(context: Self.otherContext, role: .server, remoteFingerprint: impostor)
        _ = Self.pump(client, server, first: client.start())
        guard case .failed(.fingerprintMismatch) = server.state else {
            Issue.record("server state \(server.state)")
            return
        }
    }

    @Test func theProfileBothSidesShareIsChosen() throws {
        let cmOnly = try DTLSContext(certificate: DTLSCertificate(), profiles: [.aes128CMSHA1_80])
        let client = try DTLSEndpoint(context: cmOnly, role: .client, remoteFingerprint: Self.context.certificate.fingerprint)
        let server = try DTLSEndpoint(context: Self.context, role: .server, remoteFingerprint: cmOnly.certificate.fingerprint)
        _ = Self.pump(client, server, first: client.start())
        guard case .connected(let keys) = server.state else {
            Issue.record("server state \(server.state)")
            return
        }
        #expect(keys.profile == .aes128CMSHA1_80)
        #expect(keys.local.salt.count == 14)
    }

    @Test func aLostFlightIsRetransmittedWhenTheTimerFires() throws {
        let client = try DTLSEndpoint(context: Self.context, role: .client, remoteFingerprint: Self.otherContext.certificate.fingerprint)
        let lost = client.start()
        #expect(!lost.isEmpty)
        let delay = try #require(client.retransmitDelayMilliseconds)
        #expect(delay > 0 && delay <= 1000)
        // OpenSSL's timer reads the wall clock, so this one test waits for it.
        var resent: [[UInt8]] = []
        for _ in 0..<30 where resent.isEmpty {
            usleep(100_000)
            resent = client.handleTimeout()
        }
        #expect(!resent.isEmpty)
    }

    @Test func garbageNeverCrashesAndFailsTheHandshake() throws {
        let server = try DTLSEndpoint(context: Self.context, role: .server, remoteFingerprint: Self.otherContext.certificate.fingerprint)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for length in [1, 13, 14, 25, 100, 1200] {
            var bytes = [UInt8](repeating: 0, count: length)
            for i in bytes.indices {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17
                bytes[i] = UInt8(truncatingIfNeeded: state)
            }
            bytes[0] = 22  // handshake content type, so OpenSSL parses it
            _ = bytes.withUnsafeBytes { server.receive($0) }
        }
        if case .connected = server.state { Issue.record("garbage completed a handshake") }
    }

    @Test func closeNotifyReachesThePeer() throws {
        let client = try DTLSEndpoint(context: Self.context, role: .client, remoteFingerprint: Self.otherContext.certificate.fingerprint)
        let server = try DTLSEndpoint(context: Self.otherContext, role: .server, remoteFingerprint: Self.context.certificate.fingerprint)
        _ = Self.pump(client, server, first: client.start())
        let goodbye = client.close()
        #expect(!goodbye.isEmpty)
        for d in goodbye { _ = d.withUnsafeBytes { server.receive($0) } }
        #expect(server.state == .closed)
    }

    @Test func fingerprintsParseFromSDPAndPrintBack() {
        let text = "sha-256 F3:BA:E9:FE:99:4B:64:6F:63:5A:97:80:A1:4D:C3:FD:78:75:29:F9:2A:47:E9:FC:08:9D:2C:04:40:07:40:9C"
        let parsed = CertificateFingerprint(sdpValue: text)
        #expect(parsed?.bytes.count == 32)
        #expect(parsed?.description == text)
        #expect(CertificateFingerprint(sdpValue: "sha-256 F3:BA:ZZ") == nil)
        #expect(CertificateFingerprint(sdpValue: "sha-256") == nil)
        #expect(Self.context.certificate.fingerprint.bytes.count == 32)
    }
}

#if canImport(Glibc)
import Glibc
#endif
