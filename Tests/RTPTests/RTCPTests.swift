import Testing
@testable import RTP

/// SR (1 report block) + SDES CNAME, hand-encoded from the RFC 3550 §6.4.1 and §6.5 layouts.
let handEncodedSenderReport = hex("""
    81 C8 00 0C  12 34 56 78
    DA 7A 0B 1C  40 00 00 00
    00 01 5F 90  00 00 00 64  00 00 3E 80
    9A BC DE F0  40 00 00 05  00 01 00 10  00 00 00 20  0B 1C 40 00  00 01 00 00
    """)
let handEncodedSourceDescription = hex("""
    81 CA 00 04  12 34 56 78
    01 09 75 73 65 72 40 68 6F 73 74 00
    """)
let handEncodedBlock = ReportBlock(
    ssrc: 0x9ABC_DEF0, fractionLost: 0x40, cumulativeLost: 5, extendedHighestSequence: 0x0001_0010, jitter: 0x20,
    lastSenderReport: 0x0B1C_4000, delaySinceLastSenderReport: 0x0001_0000)

@Suite struct RTCPParseTests {
    @Test func handEncodedCompound() throws {
        let compound = handEncodedSenderReport + handEncodedSourceDescription
        let packets = rtcpPackets(compound)
        #expect(packets.count == 2)
        try compound.withUnsafeBytes { raw in
            #expect(RTCPCompoundIterator.isValidCompound(raw))
            var iterator = RTCPCompoundIterator(raw)
            let firstPacket = iterator.next()
            let first = try #require(firstPacket)
            #expect(first.packetType == .senderReport && first.count == 1 && first.range == 0..<52)
            let report = try #require(RTCPSenderReport(first))
            #expect(report.ssrc == 0x1234_5678)
            #expect(report.ntp == NTPTimestamp(seconds: 0xDA7A_0B1C, fraction: 0x4000_0000))
            #expect(report.rtpTimestamp == 90000)
            #expect(report.packetCount == 100)
            #expect(report.octetCount == 16000)
            #expect(Array(report.reportBlocks) == [handEncodedBlock])
            #expect(RTCPReceiverReport(first) == nil)

            let secondPacket = iterator.next()
            let second = try #require(secondPacket)
            #expect(second.packetType == .sourceDescription && second.range == 52..<72)
            let chunks = Array(try #require(RTCPSourceDescription(second)))
            #expect(chunks.count == 1)
            #expect(chunks.first?.ssrc == 0x1234_5678)
            #expect(chunks.first?.cnameString == "user@host")
            let end = iterator.next()
            #expect(end == nil)
            #expect(!iterator.isMalformed)
        }
    }

    @Test func buildersReproduceHandEncodedBytes() {
        let report = RTCPBuilder.senderReport(
            ssrc: 0x1234_5678, ntp: NTPTimestamp(seconds: 0xDA7A_0B1C, fraction: 0x4000_0000), rtpTimestamp: 90000,
            packetCount: 100, octetCount: 16000, reportBlocks: [handEncodedBlock])
        #expect(report == handEncodedSenderReport)
        #expect(RTCPBuilder.sourceDescription(ssrc: 0x1234_5678, cname: "user@host") == handEncodedSourceDescription)
    }

    @Test func iteratorStopsAtMalformedPackets() {
        let trailingGarbage = handEncodedSourceDescription + [0x81, 0xC9]
        trailingGarbage.withUnsafeBytes { raw in
            var iterator = RTCPCompoundIterator(raw)
            #expect(iterator.next() != nil)
            #expect(iterator.next() == nil)
            #expect(iterator.isMalformed)
            #expect(!RTCPCompoundIterator.isValidCompound(raw))
        }
        var badVersion = handEncodedSourceDescription
        badVersion[0] = 0x41
        #expect(rtcpPackets(badVersion).isEmpty)
        var tooLong = handEncodedSourceDescription
        tooLong[3] = 5  // declares 24 bytes, 20 present
        #expect(rtcpPackets(tooLong).isEmpty)
        for length in 0..<handEncodedSenderReport.count {
            #expect(rtcpPackets(Array(handEncodedSenderReport.prefix(length))).isEmpty, "prefix \(length)")
        }
        [UInt8]().withUnsafeBytes { #expect(!RTCPCompoundIterator.isValidCompound($0)) }
    }

    @Test func reportCountBeyondBodyIsRejected() {
        var report = handEncodedSenderReport
        report[0] = 0x82  // claims two blocks
        #expect(withFirstRTCP(report) { RTCPSenderReport($0) } == nil)
    }

    @Test func paddingIsStrippedFromBody() throws {
        // BYE for one SSRC followed by 4 padding bytes (count in the last one).
        let bye = hex("A1 CB 00 02  00 00 00 2A  00 00 00 04")
        let ssrcs = withFirstRTCP(bye) { packet -> [UInt32]? in
            #expect(packet.padding && packet.bodyLength == 4)
            return RTCPBye(packet).map { Array($0.ssrcs) }
        }
        #expect(ssrcs == [42])
        var badPadding = bye
        badPadding[11] = 9
        #expect(rtcpPackets(badPadding).isEmpty)
    }

    @Test func transportCCIsRecognised() throws {
        let bytes = hex("8F CD 00 05  00 00 00 01  00 00 00 02  00 0A 00 01  FF FF FE 07  20 01 04 00")
        let feedback = try #require(withFirstRTCP(bytes) { RTCPTransportCC($0) })
        #expect(feedback.senderSSRC == 1 && feedback.mediaSSRC == 2)
        #expect(feedback.baseSequenceNumber == 10)
        #expect(feedback.packetStatusCount == 1)
        #expect(feedback.referenceTime == -2)
        #expect(feedback.feedbackPacketCount == 7)
        #expect(feedback.chunksAndDeltas.count == 4)
        #expect(withFirstRTCP(bytes) { RTCPGenericNack($0) } == nil)
    }

    @Test func sdesWithSeveralChunksAndItems() {
        // Chunk 1: NAME item then CNAME; chunk 2: CNAME only.
        let bytes = hex("""
            82 CA 00 06
            00 00 00 01  02 01 41 01  02 63 31 00
            00 00 00 02  01 03 63 32 32 00 00 00
            """)
        let chunks = withFirstRTCP(bytes) { RTCPSourceDescription($0).map { Array($0).map { ($0.ssrc, $0.cnameString) } } }
        #expect(chunks?.map(\.0) == [1, 2])
        #expect(chunks?.map(\.1) == ["c1", "c22"])
    }
}

@Suite struct RTCPRoundTripTests {
    @Test func senderReportWithBlocks() throws {
        let blocks = [
            ReportBlock(ssrc: 1, fractionLost: 255, cumulativeLost: -3, extendedHighestSequence: 0x0002_FFFF, jitter: 12, lastSenderReport: 5, delaySinceLastSenderReport: 6),
            ReportBlock(ssrc: 2, cumulativeLost: 0x7F_FFFF),
        ]
        let ntp = NTPTimestamp(unixNanoseconds: 1_700_000_000_123_456_789)
        let bytes = try #require(RTCPBuilder.senderReport(ssrc: 9, ntp: ntp, rtpTimestamp: 1, packetCount: 2, octetCount: 3, reportBlocks: blocks))
        #expect(bytes.count == 28 + 48)
        let report = try #require(withFirstRTCP(bytes) { RTCPSenderReport($0).map { ($0.ssrc, $0.ntp, $0.rtpTimestamp, $0.packetCount, $0.octetCount, Array($0.reportBlocks)) } })
        #expect(report.0 == 9 && report.1 == ntp && report.2 == 1 && report.3 == 2 && report.4 == 3)
        #expect(report.5 == blocks)
    }

    @Test func receiverReport() throws {
        let blocks = [ReportBlock(ssrc: 77, fractionLost: 3, cumulativeLost: 4, extendedHighestSequence: 5, jitter: 6, lastSenderReport: 7, delaySinceLastSenderReport: 8)]
        let bytes = try #require(RTCPBuilder.receiverReport(ssrc: 1, reportBlocks: blocks))
        let decoded = withFirstRTCP(bytes) { RTCPReceiverReport($0).map { ($0.ssrc, Array($0.reportBlocks)) } }
        #expect(decoded?.0 == 1 && decoded?.1 == blocks)
        // Empty RR (a keep-alive) is 8 bytes.
        #expect(RTCPBuilder.receiverReport(ssrc: 1, reportBlocks: [])?.count == 8)
        #expect(RTCPBuilder.receiverReport(ssrc: 1, reportBlocks: Array(repeating: blocks[0], count: 32)) == nil)
    }

    @Test func sourceDescription() throws {
        for cname in ["", "a", "ab", "abc", "abcd", String(repeating: "x", count: 255)] {
            let bytes = try #require(RTCPBuilder.sourceDescription(ssrc: 5, cname: cname))
            #expect(bytes.count % 4 == 0)
            let chunk = withFirstRTCP(bytes) { RTCPSourceDescription($0)?.first { _ in true } }
            #expect(chunk?.ssrc == 5)
            #expect(chunk?.cnameString == cname)
        }
        #expect(RTCPBuilder.sourceDescription(ssrc: 5, cname: String(repeating: "x", count: 256)) == nil)
    }

    @Test func bye() throws {
        let bytes = try #require(RTCPBuilder.bye(ssrcs: [1, 0xFFFF_FFFF]))
        #expect(withFirstRTCP(bytes) { RTCPBye($0).map { Array($0.ssrcs) } } == [1, 0xFFFF_FFFF])
    }

    @Test func genericNackPacking() throws {
        let lost: [UInt16] = [100, 101, 103, 117, 118, 200]
        let bytes = try #require(RTCPBuilder.genericNack(senderSSRC: 1, mediaSSRC: 2, lostSequenceNumbers: lost))
        #expect(bytes.count == 12 + 3 * 4)
        try withFirstRTCP(bytes) { packet -> Void? in
            let nack = try #require(RTCPGenericNack(packet))
            #expect(nack.senderSSRC == 1 && nack.mediaSSRC == 2)
            #expect(Array(nack.entries) == [
                NackEntry(packetID: 100, lostBitmask: 0b101), NackEntry(packetID: 117, lostBitmask: 0b1),
                NackEntry(packetID: 200, lostBitmask: 0),
            ])
            var decoded: [UInt16] = []
            nack.forEachLostSequenceNumber { decoded.append($0) }
            #expect(decoded == lost)
            return ()
        }
    }

    @Test func genericNackEdges() throws {
        // Exactly 16 after the pid still fits in one entry; wrap across 65535.
        let lost: [UInt16] = [65535, 0, 15, 16, 16]
        let bytes = try #require(RTCPBuilder.genericNack(senderSSRC: 1, mediaSSRC: 2, lostSequenceNumbers: lost))
        var decoded: [UInt16] = []
        withFirstRTCP(bytes) { RTCPGenericNack($0)?.forEachLostSequenceNumber { decoded.append($0) } }
        #expect(decoded == [65535, 0, 15, 16])
        #expect(bytes.count == 12 + 8)  // 65535 + 16 = 15 → entry 1 covers 65535...15, 16 starts entry 2
        #expect(RTCPBuilder.genericNack(senderSSRC: 1, mediaSSRC: 2, lostSequenceNumbers: []) == nil)
        // No room: nil rather than a truncated packet.
        var small = [UInt8](repeating: 0, count: 15)
        let written = small.withUnsafeMutableBytes {
            RTCPBuilder.genericNack(senderSSRC: 1, mediaSSRC: 2, lostSequenceNumbers: lost, into: $0)
        }
        #expect(written == nil)
    }

    @Test func pictureLossIndication() throws {
        let bytes = try #require(RTCPBuilder.pictureLossIndication(senderSSRC: 3, mediaSSRC: 4))
        #expect(bytes == hex("81 CE 00 02 00 00 00 03 00 00 00 04"))
        let pli = withFirstRTCP(bytes) { RTCPPictureLossIndication($0) }
        #expect(pli?.senderSSRC == 3 && pli?.mediaSSRC == 4)
        #expect(withFirstRTCP(bytes) { RTCPFullIntraRequest($0) } == nil)
    }

    @Test func fullIntraRequest() throws {
        let entries = [FIREntry(ssrc: 10, sequenceNumber: 1), FIREntry(ssrc: 11, sequenceNumber: 255)]
        let bytes = try #require(RTCPBuilder.fullIntraRequest(senderSSRC: 3, entries: entries))
        let fir = withFirstRTCP(bytes) { RTCPFullIntraRequest($0).map { ($0.senderSSRC, $0.mediaSSRC, Array($0.entries)) } }
        #expect(fir?.0 == 3 && fir?.1 == 0 && fir?.2 == entries)
    }

    @Test func rembBitrateEncoding() throws {
        for bitrate: UInt64 in [1_500_000, 30_000_000, 1_234_567, 0, 262_143, 262_144, UInt64.max] {
            let bytes = try #require(RTCPBuilder.remb(senderSSRC: 1, bitrate: bitrate, ssrcs: [5, 6]))
            let remb = try #require(withFirstRTCP(bytes) { RTCPREMB($0).map { ($0.bitrate, Array($0.ssrcs)) } })
            #expect(remb.0 <= bitrate, "never above: \(bitrate)")
            // Lost precision is below one step of the 18-bit mantissa.
            #expect(bitrate - remb.0 <= bitrate >> 17, "within precision: \(bitrate)")
            #expect(remb.1 == [5, 6])
        }
        let exact = try #require(RTCPBuilder.remb(senderSSRC: 1, bitrate: 1_500_000, ssrcs: []))
        #expect(withFirstRTCP(exact) { RTCPREMB($0)?.bitrate } == 1_500_000)
        let thirty = try #require(RTCPBuilder.remb(senderSSRC: 1, bitrate: 30_000_000, ssrcs: [9]))
        #expect(withFirstRTCP(thirty) { RTCPREMB($0)?.bitrate } == 30_000_000)
        #expect(RTCPREMB.encode(1_234_567) == (3, 154_320))
    }

    @Test func rembDecodeSaturates() {
        // exp 63, mantissa max: far beyond 64 bits.
        let bytes = hex("8F CE 00 04  00 00 00 01  00 00 00 00  52 45 4D 42  00 FF FF FF")
        #expect(withFirstRTCP(bytes) { RTCPREMB($0)?.bitrate } == UInt64.max)
        var notREMB = bytes
        notREMB[12] = 0x51
        #expect(withFirstRTCP(notREMB) { RTCPREMB($0) } == nil)
        var tooManySSRCs = bytes
        tooManySSRCs[16] = 1
        #expect(withFirstRTCP(tooManySSRCs) { RTCPREMB($0) } == nil)
    }

    @Test func feedbackSSRCRewrite() throws {
        let compound = try [
            #require(RTCPBuilder.receiverReport(ssrc: 0xAAAA, reportBlocks: [ReportBlock(ssrc: 0xAAAA)])),
            #require(RTCPBuilder.genericNack(senderSSRC: 0xEEEE, mediaSSRC: 0xAAAA, lostSequenceNumbers: [1])),
            #require(RTCPBuilder.pictureLossIndication(senderSSRC: 0xEEEE, mediaSSRC: 0xAAAA)),
            #require(RTCPBuilder.fullIntraRequest(senderSSRC: 0xEEEE, entries: [FIREntry(ssrc: 0xAAAA, sequenceNumber: 1), FIREntry(ssrc: 0xBBBB, sequenceNumber: 2)])),
            #require(RTCPBuilder.remb(senderSSRC: 0xEEEE, bitrate: 1000, ssrcs: [0xAAAA, 0xCCCC])),
        ].flatMap { $0 }
        var bytes = compound
        let rewrittenCount = bytes.withUnsafeMutableBytes { raw in
            RTCPFeedbackRewriter.rewrite(raw, senderSSRC: 0x5555) { ssrc in
                switch ssrc {
                case 0xAAAA: 0x1111
                case 0xBBBB: 0x2222
                default: nil
                }
            }
        }
        #expect(rewrittenCount == 4)
        let packets = rtcpPackets(bytes)
        #expect(packets.count == 5)
        #expect(packets[0] == rtcpPackets(compound)[0])  // reports untouched
        let nack = withFirstRTCP(packets[1]) { RTCPGenericNack($0).map { ($0.senderSSRC, $0.mediaSSRC) } }
        #expect(nack?.0 == 0x5555 && nack?.1 == 0x1111)
        #expect(withFirstRTCP(packets[2]) { RTCPPictureLossIndication($0)?.mediaSSRC } == 0x1111)
        #expect(withFirstRTCP(packets[3]) { RTCPFullIntraRequest($0).map { $0.entries.map(\.ssrc) } } == [0x1111, 0x2222])
        #expect(withFirstRTCP(packets[4]) { RTCPREMB($0).map { Array($0.ssrcs) } } == [0x1111, 0xCCCC])
        #expect(withFirstRTCP(packets[4]) { RTCPREMB($0)?.senderSSRC } == 0x5555)
    }

    @Test func buildersRefuseSmallBuffers() {
        var buffer = [UInt8](repeating: 0, count: 11)
        buffer.withUnsafeMutableBytes { raw in
            #expect(RTCPBuilder.pictureLossIndication(senderSSRC: 1, mediaSSRC: 2, into: raw) == nil)
            #expect(RTCPBuilder.bye(ssrcs: [1, 2], into: raw) == nil)
            #expect(RTCPBuilder.remb(senderSSRC: 1, bitrate: 1, ssrcs: [UInt32](), into: raw) == nil)
            #expect(RTCPBuilder.sourceDescription(ssrc: 1, cname: [UInt8](), into: raw) == nil)
            #expect(RTCPBuilder.fullIntraRequest(senderSSRC: 1, entries: [FIREntry](), into: raw) == nil)
        }
    }
}
