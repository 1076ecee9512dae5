import Testing
@testable import RTP

@Suite struct RTPHeaderTests {
    @Test func parsesFixedHeader() throws {
        let bytes = TestRTP.packet(marker: true, payloadType: 111, sequenceNumber: 0xFFFE, timestamp: 0x0102_0304, ssrc: 0xCAFE_BABE)
        let header = try #require(parseHeader(bytes))
        #expect(header.version == 2)
        #expect(!header.padding && !header.hasExtension)
        #expect(header.csrcCount == 0)
        #expect(header.marker)
        #expect(header.payloadType == 111)
        #expect(header.sequenceNumber == 0xFFFE)
        #expect(header.timestamp == 0x0102_0304)
        #expect(header.ssrc == 0xCAFE_BABE)
        #expect(header.headerLength == 12)
        #expect(header.payloadLength == 4)
        #expect(header.payloadRange == 12..<16)
        #expect(header.extensionRange.isEmpty)
    }

    @Test func parsesCSRCs() throws {
        let bytes = TestRTP.packet(csrcs: [0xAAAA_AAAA, 0xBBBB_BBBB])
        let header = try #require(parseHeader(bytes))
        #expect(header.csrcCount == 2)
        #expect(header.headerLength == 20)
        bytes.withUnsafeBytes { raw in
            #expect(header.csrc(at: 0, in: raw) == 0xAAAA_AAAA)
            #expect(header.csrc(at: 1, in: raw) == 0xBBBB_BBBB)
            #expect(header.csrc(at: 2, in: raw) == nil)
        }
    }

    @Test func parsesOneByteExtensionsWithPaddingBetween() throws {
        // audio level (id 1), a zero padding byte, transport-cc (id 3), mid (id 4).
        let data = TestRTP.oneByte([(1, [0x85])]) + [0] + TestRTP.oneByte([(3, [0x01, 0x02]), (4, Array("a1".utf8))])
        let bytes = TestRTP.packet(csrcs: [7], extensionProfile: 0xBEDE, extensionData: data)
        let header = try #require(parseHeader(bytes))
        #expect(header.hasExtension)
        #expect(header.extensionProfile == 0xBEDE)
        #expect(header.extensionRange == 20..<32)
        #expect(header.headerLength == 32)
        #expect(header.payloadLength == 4)
        let elements = extensionElements(bytes)
        #expect(elements.map(\.id) == [1, 3, 4])
        #expect(elements.map(\.data) == [[0x85], [0x01, 0x02], Array("a1".utf8)])
        bytes.withUnsafeBytes { raw in
            #expect(header.extensionElement(id: 3, in: raw) == 24..<26)
            #expect(header.extensionElement(id: 2, in: raw) == nil)
            let elements = header.extensionElements(in: raw)
            #expect(elements.form == .oneByte)
            let mid = elements.first(id: 4).flatMap { MidExtension.range(of: $0, in: raw) }
            #expect(mid.map { Array(raw[$0]) } == Array("a1".utf8))
        }
    }

    @Test func oneByteID15StopsParsing() {
        let data = TestRTP.oneByte([(2, [9])]) + [0xF0, 0x11, 0x22]
        let bytes = TestRTP.packet(extensionProfile: 0xBEDE, extensionData: data)
        #expect(extensionElements(bytes).map(\.id) == [2])
    }

    @Test func truncatedElementEndsIteration() {
        // id 5 claims 4 data bytes but the 4-byte block only holds 2 after it.
        let data: [UInt8] = [0x10, 0xAA, 0x53, 0xBB]
        let bytes = TestRTP.packet(extensionProfile: 0xBEDE, extensionData: data)
        #expect(extensionElements(bytes).map(\.id) == [1])
    }

    @Test func parsesTwoByteExtensionsWithAppBits() throws {
        let data = TestRTP.twoByte([(1, [0x7F]), (200, [])]) + [0, 0] + TestRTP.twoByte([(30, Array(repeating: 0xAB, count: 20))])
        let bytes = TestRTP.packet(extensionProfile: 0x1005, extensionData: data)
        let header = try #require(parseHeader(bytes))
        #expect(header.extensionProfile == 0x1005)
        #expect(RTPHeaderExtensionForm(profile: header.extensionProfile) == .twoByte(appBits: 5))
        let elements = extensionElements(bytes)
        #expect(elements.map(\.id) == [1, 200, 30])
        #expect(elements.map(\.data.count) == [1, 0, 20])
    }

    @Test func unknownProfileHasNoElements() throws {
        let bytes = TestRTP.packet(extensionProfile: 0x1234, extensionData: [0x10, 0xAA, 0, 0])
        let header = try #require(parseHeader(bytes))
        #expect(header.hasExtension && header.headerLength == 20)
        #expect(extensionElements(bytes).isEmpty)
    }

    @Test func paddingIsExcludedFromPayload() throws {
        let bytes = TestRTP.packet(payload: [9, 9, 9], paddingLength: 5)
        let header = try #require(parseHeader(bytes))
        #expect(header.padding)
        #expect(header.paddingLength == 5)
        #expect(header.payloadLength == 3)
        // Padding-only packet: all bytes after the header are padding.
        let paddingOnly = TestRTP.packet(payload: [], paddingLength: 200)
        #expect(parseHeader(paddingOnly)?.payloadLength == 0)
    }

    @Test func rejectsEveryTruncation() throws {
        let data = TestRTP.oneByte([(1, [0x85]), (3, [1, 2])])
        let bytes = TestRTP.packet(csrcs: [1, 2], extensionProfile: 0xBEDE, extensionData: data, payload: [1, 2, 3])
        let header = try #require(parseHeader(bytes))
        for length in 0..<bytes.count {
            let prefix = Array(bytes.prefix(length))
            if length < header.headerLength {
                #expect(parseHeader(prefix) == nil, "prefix \(length)")
            } else {
                #expect(parseHeader(prefix)?.payloadLength == length - header.headerLength, "prefix \(length)")
            }
        }
        // With padding, cutting bytes off the end makes the last byte a bogus padding count.
        let padded = TestRTP.packet(payload: [], paddingLength: 4)
        for length in 0..<padded.count {
            #expect(parseHeader(Array(padded.prefix(length))) == nil, "padded prefix \(length)")
        }
    }

    @Test func rejectsBadVersion() {
        for version: UInt8 in [0, 1, 3] {
            #expect(parseHeader(TestRTP.packet(firstByte: version << 6)) == nil)
        }
    }

    @Test func rejectsCSRCCountBeyondPacket() {
        // Claims 15 CSRCs but holds 1 word after the fixed header.
        var bytes = TestRTP.packet(payload: [1, 2, 3, 4])
        bytes[0] = 0x8F
        #expect(parseHeader(bytes) == nil)
    }

    @Test func rejectsExtensionLengthBeyondPacket() {
        var bytes = TestRTP.packet(extensionProfile: 0xBEDE, extensionData: [0x10, 1, 0, 0], payload: [])
        #expect(parseHeader(bytes) != nil)
        bytes[15] = 2  // two words declared, one present
        #expect(parseHeader(bytes) == nil)
        // X bit set but not even room for the extension header.
        var short = TestRTP.packet(payload: [0, 0])
        short[0] |= 0x10
        #expect(parseHeader(short) == nil)
    }

    @Test func rejectsBadPaddingCounts() {
        var zero = TestRTP.packet(payload: [1, 2, 3], paddingLength: 1)
        zero[zero.count - 1] = 0
        #expect(parseHeader(zero) == nil)
        var tooLong = TestRTP.packet(payload: [1, 2, 3], paddingLength: 1)
        tooLong[tooLong.count - 1] = 5  // only 4 bytes after the header
        #expect(parseHeader(tooLong) == nil)
        tooLong[tooLong.count - 1] = 4  // exactly the bytes after the header: allowed
        #expect(parseHeader(tooLong)?.payloadLength == 0)
    }
}
