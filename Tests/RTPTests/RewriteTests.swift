import Testing
@testable import RTP

/// Applies `body` to a rewriter over a copy of `bytes` and returns the rewritten bytes.
func rewritten(_ bytes: [UInt8], _ body: (inout RTPPacketRewriter) -> Void) -> [UInt8]? {
    var copy = bytes
    let ok = copy.withUnsafeMutableBytes { raw -> Bool in
        guard var rewriter = RTPPacketRewriter(raw) else { return false }
        body(&rewriter)
        return true
    }
    return ok ? copy : nil
}

@Suite struct RewriteTests {
    @Test func headerFieldsRoundTrip() throws {
        let original = TestRTP.packet(marker: false, payloadType: 96, csrcs: [5], payload: [1, 2, 3, 4, 5])
        let bytes = try #require(rewritten(original) { rewriter in
            rewriter.setSSRC(0x0BAD_F00D)
            rewriter.setSequenceNumber(65535)
            rewriter.setTimestamp(42)
            rewriter.setPayloadType(0xFF)  // high bit must not leak into the marker
            rewriter.setMarker(true)
            #expect(rewriter.header.ssrc == 0x0BAD_F00D)
        })
        let header = try #require(parseHeader(bytes))
        #expect(header.ssrc == 0x0BAD_F00D)
        #expect(header.sequenceNumber == 65535)
        #expect(header.timestamp == 42)
        #expect(header.payloadType == 0x7F)
        #expect(header.marker)
        #expect(header.csrcCount == 1)
        #expect(Array(bytes[header.payloadRange]) == [1, 2, 3, 4, 5])

        let back = try #require(rewritten(bytes) { rewriter in
            rewriter.setMarker(false)
            rewriter.setPayloadType(96)
        })
        #expect(parseHeader(back)?.marker == false)
        #expect(parseHeader(back)?.payloadType == 96)
    }

    @Test func payloadTypeMapDropsWhatWasNotMapped() {
        var map = PayloadTypeMap()
        #expect(map[0] == PayloadTypeMap.drop)
        #expect(map[111] == PayloadTypeMap.drop)
        map[0] = 0
        map[96] = 100
        map[111] = 109
        map[200] = 1
        #expect(map[0] == 0)
        #expect(map[96] == 100)
        #expect(map[111] == 109)
        #expect(map[63] == PayloadTypeMap.drop)
        #expect(map[200] == PayloadTypeMap.drop, "not a valid payload type")
    }

    @Test func rejectsInvalidPacket() {
        #expect(rewritten([0x80, 0, 0]) { _ in } == nil)
    }

    @Test func remapsOneByteIDsAndDropsToPadding() throws {
        let data = TestRTP.oneByte([(1, [0x85]), (2, [1, 2, 3]), (3, [0xAA, 0xBB]), (4, Array("v".utf8))])
        let original = TestRTP.packet(extensionProfile: 0xBEDE, extensionData: data)
        var map = ExtensionIDMap()
        map[1] = 5
        map[2] = 0  // drop
        map[3] = 3
        map[4] = 15  // not representable in the one-byte form: dropped too
        let bytes = try #require(rewritten(original) { #expect($0.remapExtensionIDs(map)) })
        let elements = extensionElements(bytes)
        #expect(elements.map(\.id) == [5, 3])
        #expect(elements.map(\.data) == [[0x85], [0xAA, 0xBB]])
        // The dropped element became zero bytes; the packet length is unchanged.
        #expect(Array(bytes[18..<22]) == [0, 0, 0, 0])
        #expect(bytes.count == original.count)
        #expect(parseHeader(bytes)?.payloadRange == parseHeader(original)?.payloadRange)
    }

    @Test func remapsTwoByteIDs() throws {
        let data = TestRTP.twoByte([(1, [9]), (2, [7, 7]), (3, [])])
        let original = TestRTP.packet(extensionProfile: 0x1000, extensionData: data)
        var map = ExtensionIDMap()
        map[1] = 200
        map[3] = 4
        let bytes = try #require(rewritten(original) { #expect($0.remapExtensionIDs(map)) })
        let elements = extensionElements(bytes)
        #expect(elements.map(\.id) == [200, 4])
        #expect(elements.map(\.data) == [[9], []])
    }

    @Test func remapWithoutExtensionReportsFalse() throws {
        _ = try #require(rewritten(TestRTP.packet()) { #expect(!$0.remapExtensionIDs(.identity)) })
    }

    @Test func identityMapKeepsBytes() throws {
        let original = TestRTP.packet(extensionProfile: 0xBEDE, extensionData: TestRTP.oneByte([(1, [1]), (14, [2, 3])]))
        #expect(rewritten(original) { $0.remapExtensionIDs(.identity) } == original)
        var map = ExtensionIDMap()
        map[255] = 9
        #expect(map[255] == 9 && map[0] == 0 && ExtensionIDMap.identity[200] == 200)
    }

    @Test func writesAbsSendTimeAndTransportSequence() throws {
        let data = TestRTP.oneByte([(2, [0, 0, 0]), (3, [0, 0]), (4, [0])])
        let original = TestRTP.packet(extensionProfile: 0xBEDE, extensionData: data)
        let sendTime = AbsSendTime(nanoseconds: 1_500_000_000)
        let bytes = try #require(rewritten(original) { rewriter in
            #expect(rewriter.writeAbsSendTime(sendTime, id: 2))
            #expect(rewriter.writeTransportSequenceNumber(0xBEEF, id: 3))
            #expect(!rewriter.writeTransportSequenceNumber(1, id: 4))  // element too short
            #expect(!rewriter.writeAbsSendTime(sendTime, id: 9))  // absent
        })
        let elements = extensionElements(bytes)
        let absData = try #require(elements.first { $0.id == 2 }?.data)
        let twccData = try #require(elements.first { $0.id == 3 }?.data)
        absData.withUnsafeBytes { #expect(AbsSendTime(extensionData: $0) == sendTime) }
        twccData.withUnsafeBytes { #expect(TransportSequenceNumber.read($0) == 0xBEEF) }
    }
}

@Suite struct ExtensionPayloadTests {
    @Test func audioLevel() {
        [UInt8(0xAA)].withUnsafeBytes { raw in
            #expect(AudioLevel(extensionData: raw) == AudioLevel(voiceActivity: true, level: 42))
        }
        [UInt8(0x7F)].withUnsafeBytes { raw in
            #expect(AudioLevel(extensionData: raw) == AudioLevel(voiceActivity: false, level: 127))
        }
        [UInt8]().withUnsafeBytes { #expect(AudioLevel(extensionData: $0) == nil) }
        var byte: [UInt8] = [0]
        byte.withUnsafeMutableBytes { #expect(AudioLevel(voiceActivity: true, level: 3).write(to: $0)) }
        #expect(byte == [0x83])
    }

    @Test func absSendTimeFixedPoint() {
        // 1.5 s = 1.5 × 2^18 in 6.18 fixed point.
        #expect(AbsSendTime(nanoseconds: 1_500_000_000).rawValue == 393_216)
        // Wraps every 64 s.
        #expect(AbsSendTime(nanoseconds: 65_500_000_000).rawValue == 393_216)
        #expect(AbsSendTime(nanoseconds: 1_500_000_000).nanoseconds == 1_500_000_000)
        [UInt8(0x06), 0x00, 0x00].withUnsafeBytes { #expect(AbsSendTime(extensionData: $0)?.rawValue == 0x06_0000) }
        [UInt8(0x06), 0x00].withUnsafeBytes { #expect(AbsSendTime(extensionData: $0) == nil) }
        #expect(AbsSendTime(nanoseconds: -1).rawValue <= 0xFF_FFFF)
    }

    @Test func transportSequence() {
        [UInt8(0x12), 0x34].withUnsafeBytes { #expect(TransportSequenceNumber.read($0) == 0x1234) }
        [UInt8(0x12)].withUnsafeBytes { #expect(TransportSequenceNumber.read($0) == nil) }
    }
}
