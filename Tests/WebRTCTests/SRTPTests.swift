import Testing
@testable import WebRTC

@Suite struct SRTPTests {
    static func rtpPacket(sequence: UInt16, payload: Int = 160) -> [UInt8] {
        var packet: [UInt8] = [0x80, 111, UInt8(sequence >> 8), UInt8(sequence & 0xFF), 0, 0, 0x03, 0xC0, 0x12, 0x34, 0x56, 0x78]
        packet += (0..<payload).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        return packet
    }

    static func material(_ profile: SRTPProfile, seed: UInt8) -> SRTPKeyMaterial {
        SRTPKeyMaterial(
            profile: profile, key: (0..<16).map { seed &+ UInt8($0) }, salt: (0..<profile.saltLength).map { seed &* 3 &+ UInt8($0) })
    }

    @Test(arguments: SRTPProfile.allCases)
    func protectThenUnprotectGivesThePacketBack(profile: SRTPProfile) throws {
        let keys = Self.material(profile, seed: 9)
        let sender = try SRTPSession(keys, direction: .outbound)
        let receiver = try SRTPSession(keys, direction: .inbound)
        for sequence in UInt16(1)...50 {
            let plain = Self.rtpPacket(sequence: sequence)
            var buffer = plain + [UInt8](repeating: 0, count: SRTPSession.maxTrailer)
            let protectedLength = try buffer.withUnsafeMutableBytes { try sender.protectRTP($0, length: plain.count) }
            #expect(protectedLength > plain.count)
            #expect(Array(buffer[12..<plain.count]) != Array(plain[12...]), "payload is encrypted")
            let length = try buffer.withUnsafeMutableBytes { try receiver.unprotectRTP($0, length: protectedLength) }
            #expect(Array(buffer[0..<length]) == plain)
        }
    }

    static func rtpPacket(sequence: UInt16, ssrc: UInt32) -> [UInt8] {
        var packet = rtpPacket(sequence: sequence, payload: 40)
        packet.replaceSubrange(8..<12, with: withUnsafeBytes(of: ssrc.bigEndian, Array.init))
        return packet
    }

    /// A session's stream table grows past its first block and past the linear search (a
    /// subscriber of a large room); every SSRC keeps its own index and replay window.
    @Test(arguments: SRTPProfile.allCases)
    func manyStreamsInOneSessionKeepTheirOwnState(profile: SRTPProfile) throws {
        let keys = Self.material(profile, seed: 5)
        let sender = try SRTPSession(keys, direction: .outbound)
        let receiver = try SRTPSession(keys, direction: .inbound)
        let ssrcs = (UInt32(1)...20).map { $0 &* 0x0101_0101 }
        var wires: [UInt32: ([UInt8], Int)] = [:]
        for round in UInt16(0)..<3 {
            for (offset, ssrc) in ssrcs.enumerated() {
                // Each stream starts at its own sequence number, one near the wrap.
                let sequence = UInt16(truncatingIfNeeded: offset * 3_000 + 65_534) &+ round
                let plain = Self.rtpPacket(sequence: sequence, ssrc: ssrc)
                var wire = plain + [UInt8](repeating: 0, count: SRTPSession.maxTrailer)
                let length = try wire.withUnsafeMutableBytes { try sender.protectRTP($0, length: plain.count) }
                var received = wire
                let plainLength = try received.withUnsafeMutableBytes { try receiver.unprotectRTP($0, length: length) }
                #expect(Array(received[0..<plainLength]) == plain)
                wires[ssrc] = (wire, length)
            }
        }
        for ssrc in ssrcs {
            var (wire, length) = wires[ssrc]!
            #expect(throws: SRTPError.replayed) {
                try wire.withUnsafeMutableBytes { _ = try receiver.unprotectRTP($0, length: length) }
            }
        }
    }

    @Test func aTamperedPacketFailsAuthenticationAndAReplayIsRefused() throws {
        let keys = Self.material(.aes128CMSHA1_80, seed: 1)
        let sender = try SRTPSession(keys, direction: .outbound)
        let receiver = try SRTPSession(keys, direction: .inbound)
        let plain = Self.rtpPacket(sequence: 7)
        var wire = plain + [UInt8](repeating: 0, count: SRTPSession.maxTrailer)
        let length = try wire.withUnsafeMutableBytes { try sender.protectRTP($0, length: plain.count) }
        var tampered = wire
        tampered[20] ^= 0x01
        #expect(throws: SRTPError.authenticationFailed) {
            try tampered.withUnsafeMutableBytes { _ = try receiver.unprotectRTP($0, length: length) }
        }
        var first = wire
        _ = try first.withUnsafeMutableBytes { try receiver.unprotectRTP($0, length: length) }
        #expect(throws: SRTPError.replayed) {
            try wire.withUnsafeMutableBytes { _ = try receiver.unprotectRTP($0, length: length) }
        }
    }

    @Test func wrongKeysFailAndSRTCPRoundTrips() throws {
        let sender = try SRTPSession(Self.material(.aeadAES128GCM, seed: 4), direction: .outbound)
        let stranger = try SRTPSession(Self.material(.aeadAES128GCM, seed: 5), direction: .inbound)
        let receiver = try SRTPSession(Self.material(.aeadAES128GCM, seed: 4), direction: .inbound)
        // A receiver report: V=2, RC=0, PT=201, length 1, sender SSRC.
        let rtcp: [UInt8] = [0x80, 201, 0, 1, 0xDE, 0xAD, 0xBE, 0xEF]
        var buffer = rtcp + [UInt8](repeating: 0, count: SRTPSession.maxTrailer)
        let length = try buffer.withUnsafeMutableBytes { try sender.protectRTCP($0, length: rtcp.count) }
        var copy = buffer
        #expect(throws: SRTPError.authenticationFailed) {
            try copy.withUnsafeMutableBytes { _ = try stranger.unprotectRTCP($0, length: length) }
        }
        let back = try buffer.withUnsafeMutableBytes { try receiver.unprotectRTCP($0, length: length) }
        #expect(Array(buffer[0..<back]) == rtcp)
    }

    @Test func keysFromADTLSHandshakeProtectBothWays() throws {
        let a = try DTLSContext(certificate: DTLSCertificate())
        let b = try DTLSContext(certificate: DTLSCertificate())
        let client = try DTLSEndpoint(context: a, role: .client, remoteFingerprint: b.certificate.fingerprint)
        let server = try DTLSEndpoint(context: b, role: .server, remoteFingerprint: a.certificate.fingerprint)
        _ = DTLSTests.pump(client, server, first: client.start())
        guard case .connected(let clientKeys) = client.state, case .connected(let serverKeys) = server.state else {
            Issue.record("no handshake")
            return
        }
        let send = try SRTPSession(clientKeys.local, direction: .outbound)
        let receive = try SRTPSession(serverKeys.remote, direction: .inbound)
        let plain = Self.rtpPacket(sequence: 1000)
        var buffer = plain + [UInt8](repeating: 0, count: SRTPSession.maxTrailer)
        let length = try buffer.withUnsafeMutableBytes { try send.protectRTP($0, length: plain.count) }
        let back = try buffer.withUnsafeMutableBytes { try receive.unprotectRTP($0, length: length) }
        #expect(Array(buffer[0..<back]) == plain)
    }

    @Test func aBufferWithoutRoomForTheTrailerIsRefused() throws {
        let sender = try SRTPSession(Self.material(.aes128CMSHA1_80, seed: 2), direction: .outbound)
        var exact = Self.rtpPacket(sequence: 1)
        let count = exact.count
        #expect(throws: SRTPError.bufferTooSmall) {
            try exact.withUnsafeMutableBytes { _ = try sender.protectRTP($0, length: count) }
        }
    }
}
