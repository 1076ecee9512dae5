import CParleySRTP
import Testing
@testable import WebRTC

/// Parley's SRTP against libsrtp2, the reference implementation: what one protects the other
/// must accept, for both profiles, RTP and SRTCP, across a sequence number wrap, with CSRCs and a
/// header extension. Also RFC 3711's key derivation vectors.
@Suite(.serialized) struct SRTPReferenceTests {
    /// One direction of libsrtp2, with the policy Parley used to give it.
    final class Reference {
        private var session: srtp_t?
        static let initialised: Void = {
            let status = srtp_init()
            precondition(status == srtp_err_status_ok, "srtp_init failed: \(status)")
        }()

        init(_ material: SRTPKeyMaterial, inbound: Bool) {
            Self.initialised
            var policy = srtp_policy_t()
            switch material.profile {
            case .aes128CMSHA1_80:
                parley_srtp_policy_aes_cm_128_hmac_sha1_80(&policy.rtp)
                parley_srtp_policy_aes_cm_128_hmac_sha1_80(&policy.rtcp)
            case .aeadAES128GCM:
                srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtp)
                srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtcp)
            }
            policy.ssrc.type = inbound ? ssrc_any_inbound : ssrc_any_outbound
            policy.window_size = 1024
            var keyAndSalt = material.key + material.salt
            let status = keyAndSalt.withUnsafeMutableBufferPointer { buffer -> srtp_err_status_t in
                policy.key = buffer.baseAddress
                return srtp_create(&session, &policy)
            }
            precondition(status == srtp_err_status_ok)
        }

        deinit { srtp_dealloc(session) }

        func run(_ packet: [UInt8], _ operation: (srtp_t?, UnsafeMutableRawPointer?, UnsafeMutablePointer<Int32>?) -> srtp_err_status_t) -> [UInt8]? {
            var buffer = packet + [UInt8](repeating: 0, count: 64)
            var length = Int32(packet.count)
            let status = buffer.withUnsafeMutableBytes { operation(session, $0.baseAddress, &length) }
            return status == srtp_err_status_ok ? Array(buffer[0..<Int(length)]) : nil
        }
    }

    static func ours(_ session: SRTPSession, _ packet: [UInt8], rtcp: Bool, protect: Bool) throws -> [UInt8] {
        var buffer = packet + [UInt8](repeating: 0, count: SRTPSession.maxTrailer)
        let length = try buffer.withUnsafeMutableBytes { bytes in
            switch (rtcp, protect) {
            case (false, true): try session.protectRTP(bytes, length: packet.count)
            case (false, false): try session.unprotectRTP(bytes, length: packet.count)
            case (true, true): try session.protectRTCP(bytes, length: packet.count)
            case (true, false): try session.unprotectRTCP(bytes, length: packet.count)
            }
        }
        return Array(buffer[0..<length])
    }

    /// RTP with two CSRCs and a one-byte-header extension, so the header is longer than 12 bytes.
    static func rtpPacket(sequence: UInt16, ssrc: UInt32, payload: Int) -> [UInt8] {
        var packet: [UInt8] = [0x92, 111, UInt8(sequence >> 8), UInt8(truncatingIfNeeded: sequence), 0, 1, 0x10, 0]
        packet += withUnsafeBytes(of: ssrc.bigEndian, Array.init)
        packet += [0, 0, 0, 1, 0, 0, 0, 2]
        packet += [0xBE, 0xDE, 0, 1, 0x10, 0x7F, 0, 0]
        packet += (0..<payload).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(sequence)) }
        return packet
    }

    static func rtcpPacket(ssrc: UInt32, filler: UInt8) -> [UInt8] {
        // A sender report with no report blocks: header, SSRC, 20 bytes of sender info.
        [0x80, 200, 0, 6] + withUnsafeBytes(of: ssrc.bigEndian, Array.init) + [UInt8](repeating: filler, count: 20)
    }

    @Test(arguments: SRTPProfile.allCases)
    func rtpCrossesBothWaysAcrossASequenceWrap(profile: SRTPProfile) throws {
        let keys = SRTPTests.material(profile, seed: 21)
        let ourSender = try SRTPSession(keys, direction: .outbound), ourReceiver = try SRTPSession(keys, direction: .inbound)
        let theirSender = Reference(keys, inbound: false), theirReceiver = Reference(keys, inbound: true)
        for step in 0..<40 {
            let sequence = UInt16(truncatingIfNeeded: 65_510 + step)
            for ssrc: UInt32 in [0x1111_2222, 0xCAFE_F00D] {
                let plain = Self.rtpPacket(sequence: sequence, ssrc: ssrc, payload: 100 + step)
                let ourWire = try Self.ours(ourSender, plain, rtcp: false, protect: true)
                let theirWire = try #require(theirSender.run(plain, srtp_protect))
                #expect(ourWire == theirWire, "same keys, same packet, same bytes (sequence \(sequence))")
                #expect(theirReceiver.run(ourWire, srtp_unprotect) == plain)
                #expect(try Self.ours(ourReceiver, theirWire, rtcp: false, protect: false) == plain)
            }
        }
    }

    @Test(arguments: SRTPProfile.allCases)
    func srtcpCrossesBothWays(profile: SRTPProfile) throws {
        let keys = SRTPTests.material(profile, seed: 77)
        let ourSender = try SRTPSession(keys, direction: .outbound), ourReceiver = try SRTPSession(keys, direction: .inbound)
        let theirSender = Reference(keys, inbound: false), theirReceiver = Reference(keys, inbound: true)
        for round in UInt8(0)..<5 {
            let plain = Self.rtcpPacket(ssrc: 0x0BAD_CAFE, filler: round)
            let ourWire = try Self.ours(ourSender, plain, rtcp: true, protect: true)
            let theirWire = try #require(theirSender.run(plain, srtp_protect_rtcp))
            #expect(ourWire == theirWire, "round \(round)")
            #expect(theirReceiver.run(ourWire, srtp_unprotect_rtcp) == plain)
            #expect(try Self.ours(ourReceiver, theirWire, rtcp: true, protect: false) == plain)
            #expect(throws: SRTPError.replayed) { try Self.ours(ourReceiver, theirWire, rtcp: true, protect: false) }
        }
    }

    @Test func aRetransmissionWithinTheWindowIsAcceptedOnceAndAnOldOneRefused() throws {
        let keys = SRTPTests.material(.aeadAES128GCM, seed: 3)
        let sender = try SRTPSession(keys, direction: .outbound), receiver = try SRTPSession(keys, direction: .inbound)
        var wires: [[UInt8]] = []
        for sequence in UInt16(0)..<1_200 {
            wires.append(try Self.ours(sender, Self.rtpPacket(sequence: sequence, ssrc: 5, payload: 20), rtcp: false, protect: true))
        }
        // 1,000-1,199 arrive first; 199 comes 1,000 behind (inside the 1,024 window), 100 outside it.
        for wire in wires[1_000...] { _ = try Self.ours(receiver, wire, rtcp: false, protect: false) }
        _ = try Self.ours(receiver, wires[199], rtcp: false, protect: false)
        #expect(throws: SRTPError.replayed) { try Self.ours(receiver, wires[199], rtcp: false, protect: false) }
        #expect(throws: SRTPError.replayed) { try Self.ours(receiver, wires[100], rtcp: false, protect: false) }
    }

    /// Bad input is refused with an error, never a crash or a "decrypted" packet: random bytes of
    /// every short length, and real packets with bytes changed or cut.
    @Test(arguments: SRTPProfile.allCases)
    func garbageAndDamagedPacketsAreRefused(profile: SRTPProfile) throws {
        let keys = SRTPTests.material(profile, seed: 40)
        let sender = try SRTPSession(keys, direction: .outbound), receiver = try SRTPSession(keys, direction: .inbound)
        var generator = SystemRandomNumberGenerator()
        for length in 0..<200 {
            for _ in 0..<20 {
                var garbage = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
                if length > 0, Bool.random(using: &generator) { garbage[0] = 0x80 | (garbage[0] & 0x3F) }
                #expect(throws: SRTPError.self) { try Self.ours(receiver, garbage, rtcp: false, protect: false) }
                #expect(throws: SRTPError.self) { try Self.ours(receiver, garbage, rtcp: true, protect: false) }
            }
        }
        let rtp = try Self.ours(sender, Self.rtpPacket(sequence: 9, ssrc: 9, payload: 60), rtcp: false, protect: true)
        let rtcp = try Self.ours(sender, Self.rtcpPacket(ssrc: 9, filler: 1), rtcp: true, protect: true)
        for (wire, isRTCP) in [(rtp, false), (rtcp, true)] {
            for offset in wire.indices {
                var damaged = wire
                damaged[offset] ^= 0x04
                #expect(throws: SRTPError.self) { try Self.ours(receiver, damaged, rtcp: isRTCP, protect: false) }
            }
            for cut in 0..<wire.count {
                #expect(throws: SRTPError.self) { try Self.ours(receiver, Array(wire[0..<cut]), rtcp: isRTCP, protect: false) }
            }
        }
    }

    /// RFC 3711 appendix B.3.
    @Test func keyDerivationMatchesRFC3711() {
        func hex(_ text: String) -> [UInt8] {
            stride(from: 0, to: text.count, by: 2).map { UInt8(text.dropFirst($0).prefix(2), radix: 16)! }
        }
        let derive = SRTPKeyDerivation(masterKey: hex("E1F97A0D3E018BE0D64FA32C06DE4139"), masterSalt: hex("0EC675AD498AFEEBB6960B3AABE6"))
        #expect(derive(label: 0, length: 16) == hex("C61E7A93744F39EE10734AFE3FF7A087"))
        #expect(derive(label: 2, length: 14) == hex("30CBBC08863D8C85D49DB34A9AE1"))
        #expect(derive(label: 1, length: 20) == hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"))
    }
}
