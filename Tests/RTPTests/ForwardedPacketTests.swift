import Testing
@testable import RTP

/// Rebuilding a packet for one subscriber: the header rewritten, the extension block renumbered
/// with the SFU's own elements added, RTX's original sequence number; and the reverse (RTX
/// unwrapped), and H.264 keyframe starts.
@Suite struct ForwardedPacketTests {
    /// Marker set; mid (id 1, "0"), audio level (id 2) and a 4-byte element (id 6) nobody maps; payload 1…20.
    static let source: [UInt8] = [0x90, 0x80 | 96, 0x01, 0x00, 0, 0, 0x10, 0, 0xAA, 0xBB, 0xCC, 0xDD]
        + [0xBE, 0xDE, 0, 3, 0x10, 0x30, 0x20, 0x85, 0x63, 1, 2, 3, 4, 0, 0, 0] + Array(1...20)

    func write(_ fields: ForwardedPacket.Fields, map: ExtensionIDMap) -> ([UInt8], ForwardedPacket.Written)? {
        var output = [UInt8](repeating: 0xEE, count: 1500)
        let written = Self.source.withUnsafeBytes { source in
            output.withUnsafeMutableBytes { ForwardedPacket.write(source, header: RTPHeader(source)!, fields: fields, extensionMap: map, into: $0) }
        }
        return written.map { (Array(output[..<$0.length]), $0) }
    }

    @Test func headerAndExtensionsAreRewrittenAndTheSFUsOwnAdded() throws {
        var fields = ForwardedPacket.Fields(ssrc: 0x1122_3344, sequenceNumber: 7, timestamp: 900, payloadType: 100)
        fields.transportSequenceID = 5
        fields.transportSequence = 0x0102
        var map = ExtensionIDMap()
        map[2] = 3  // audio level goes on under the subscriber's id; mid and id 6 are dropped
        let (packet, written) = try #require(write(fields, map: map))
        try packet.withUnsafeBytes { bytes in
            let header = try #require(RTPHeader(bytes))
            #expect(header.ssrc == 0x1122_3344 && header.sequenceNumber == 7 && header.timestamp == 900 && header.payloadType == 100)
            #expect(header.marker, "the marker bit is kept")
            let level = try #require(header.extensionElement(id: 3, in: bytes))
            #expect(Array(bytes[level]) == [0x85])
            #expect(header.extensionElement(id: 1, in: bytes) == nil && header.extensionElement(id: 6, in: bytes) == nil)
            let wide = try #require(header.extensionElement(id: 5, in: bytes))
            #expect(TransportSequenceNumber.read(UnsafeRawBufferPointer(rebasing: bytes[wide])) == 0x0102)
            #expect(written.transportSequenceOffset == wide.lowerBound)
            #expect(Array(bytes[header.payloadRange]) == Array(1...20))
            #expect(written.payloadOffset == header.payloadRange.lowerBound && written.payloadEnd == header.payloadRange.upperBound)
        }
    }

    @Test func withNothingToCarryTheBlockGoes() throws {
        let fields = ForwardedPacket.Fields(ssrc: 1, sequenceNumber: 2, timestamp: 3, payloadType: 100)
        let (packet, _) = try #require(write(fields, map: ExtensionIDMap()))
        #expect(packet.count == 12 + 20)
        #expect(packet[0] & 0x10 == 0, "no X bit")
    }

    @Test func anRTXCopyCarriesTheOriginalSequenceNumberAndUnwrapsBack() throws {
        var fields = ForwardedPacket.Fields(ssrc: 0x5555_6666, sequenceNumber: 40, timestamp: 900, payloadType: 101)
        fields.originalSequenceNumber = 0x0A0B
        let result = try #require(write(fields, map: ExtensionIDMap()))
        var packet = result.0
        let written = result.1
        #expect(Array(packet[written.payloadOffset - 2..<written.payloadOffset]) == [0x0A, 0x0B])
        let length = try packet.withUnsafeMutableBytes { buffer in
            try #require(RetransmissionPacket.unwrap(buffer, header: RTPHeader(UnsafeRawBufferPointer(buffer))!))
        }
        let original = Array(packet[..<length])
        try original.withUnsafeBytes { bytes in
            let header = try #require(RTPHeader(bytes))
            #expect(header.sequenceNumber == 0x0A0B)
            #expect(Array(bytes[header.payloadRange]) == Array(1...20))
        }
        // Padding only (a sender's probe): nothing to unwrap.
        var padding: [UInt8] = [0xA0, 97, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 4]
        padding.withUnsafeMutableBytes { buffer in
            #expect(RetransmissionPacket.unwrap(buffer, header: RTPHeader(UnsafeRawBufferPointer(buffer))!) == nil)
        }
    }

    @Test func aBufferWithoutRoomIsRefused() {
        var output = [UInt8](repeating: 0, count: Self.source.count)
        let written = Self.source.withUnsafeBytes { source in
            output.withUnsafeMutableBytes {
                ForwardedPacket.write(
                    source, header: RTPHeader(source)!, fields: .init(ssrc: 1, sequenceNumber: 1, timestamp: 1, payloadType: 1),
                    extensionMap: ExtensionIDMap(), into: $0)
            }
        }
        #expect(written == nil)
    }

    @Test(arguments: [
        ([0x65, 0x88], true),  // IDR slice
        ([0x67, 0x42], true),  // SPS
        ([0x41, 0x9A], false),  // non-IDR slice
        ([0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xCE], true),  // STAP-A holding an SPS
        ([0x78, 0x00, 0x02, 0x41, 0x9A], false),  // STAP-A of a non-IDR slice
        ([0x7C, 0x85, 0x88], true),  // FU-A start of an IDR
        ([0x7C, 0x05, 0x88], false),  // FU-A middle of an IDR
        ([0x78, 0xFF], false),  // STAP-A cut short
        ([], false),
    ] as [([UInt8], Bool)])
    func h264KeyframeStarts(payload: [UInt8], expected: Bool) {
        #expect(payload.withUnsafeBytes { H264Payload.startsKeyframe($0) } == expected)
    }
}

@Suite struct PaddingPacketTests {
    @Test func aPaddingPacketParsesAsPaddingOnlyWithItsTransportSequenceSlot() throws {
        var buffer = [UInt8](repeating: 0xFF, count: 400)
        let written = try #require(
            buffer.withUnsafeMutableBytes {
                PaddingPacket.write(
                    ssrc: 0xAABB_CCDD, sequenceNumber: 7, timestamp: 9000, payloadType: 101, transportSequenceID: 5, padding: 255, into: $0)
            })
        #expect(written.length == 12 + 8 + 255)
        let packet = Array(buffer[..<written.length])
        try packet.withUnsafeBytes { bytes in
            let header = try #require(RTPHeader(bytes))
            #expect(header.ssrc == 0xAABB_CCDD && header.sequenceNumber == 7 && header.timestamp == 9000 && header.payloadType == 101)
            #expect(header.payloadLength == 0 && header.paddingLength == 255)
            let element = try #require(header.extensionElements(in: bytes).first { $0.id == 5 })
            #expect(element.range.lowerBound == written.transportSequenceOffset && element.range.count == 2)
        }
    }

    @Test func outOfRangePaddingOrASmallBufferWritesNothing() {
        var buffer = [UInt8](repeating: 0, count: 64)
        buffer.withUnsafeMutableBytes { output in
            for padding in [0, 256, 45] {
                #expect(
                    PaddingPacket.write(ssrc: 1, sequenceNumber: 1, timestamp: 1, payloadType: 101, transportSequenceID: 5, padding: padding, into: output)
                        == nil)
            }
            #expect(PaddingPacket.write(ssrc: 1, sequenceNumber: 1, timestamp: 1, payloadType: 101, transportSequenceID: 15, padding: 4, into: output) == nil)
        }
    }
}
