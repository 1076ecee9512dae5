/// One fuzz iteration over every RTP/RTCP entry point; a libFuzzer target calls it with raw
/// bytes. Nothing here may trap on any input.
public enum RTPFuzz {
    public static func run(_ data: UnsafeRawBufferPointer) {
        runRTP(data)
        runRTCP(data)
        runRewrite(data)
    }

    static func runRTP(_ data: UnsafeRawBufferPointer) {
        guard let header = RTPHeader(data) else { return }
        _ = data.slice(header.payloadRange)
        for index in 0..<header.csrcCount { _ = header.csrc(at: index, in: data) }
        for element in header.extensionElements(in: data) {
            guard let payload = element.data(in: data) else { continue }
            _ = AudioLevel(extensionData: payload)
            _ = AbsSendTime(extensionData: payload)?.nanoseconds
            _ = TransportSequenceNumber.read(payload)
            _ = MidExtension.range(of: element, in: data)
        }
        _ = header.extensionElement(id: 1, in: data)

        // Stateful consumers must accept anything a parsed header can contain.
        var rewriter = SequenceRewriter(clockRate: 90000, outgoingSSRC: 1)
        _ = rewriter.rewrite(ssrc: header.ssrc, sequenceNumber: header.sequenceNumber, timestamp: header.timestamp, arrivalNanoseconds: 0)
        _ = rewriter.skip(ssrc: header.ssrc, sequenceNumber: header.sequenceNumber &+ 1)
        _ = rewriter.incomingSequence(forOutgoing: header.sequenceNumber)
        var statistics = ReceiveStatistics(ssrc: header.ssrc)
        statistics.packetReceived(sequenceNumber: header.sequenceNumber, rtpTimestamp: header.timestamp, arrival: header.ssrc)
        _ = statistics.makeReportBlock(nowNanoseconds: Int64(header.timestamp))
    }

    static func runRTCP(_ data: UnsafeRawBufferPointer) {
        var iterator = RTCPCompoundIterator(data)
        while let packet = iterator.next() {
            if let report = RTCPSenderReport(packet) {
                for block in report.reportBlocks { _ = block }
            }
            if let report = RTCPReceiverReport(packet) {
                for block in report.reportBlocks { _ = block }
            }
            if let description = RTCPSourceDescription(packet) {
                for chunk in description { _ = chunk.cname?.count }
            }
            if let bye = RTCPBye(packet) {
                for ssrc in bye.ssrcs { _ = ssrc }
            }
            if let nack = RTCPGenericNack(packet) {
                var lost = 0
                nack.forEachLostSequenceNumber { _ in lost += 1 }
            }
            _ = RTCPTransportCC(packet)
            _ = RTCPPictureLossIndication(packet)
            if let fir = RTCPFullIntraRequest(packet) {
                for entry in fir.entries { _ = entry }
            }
            if let remb = RTCPREMB(packet) {
                for ssrc in remb.ssrcs { _ = ssrc }
            }
        }
        _ = RTCPCompoundIterator.isValidCompound(data)
    }

    /// Rewrites a copy, then checks the result still parses the way the rewrite promises.
    static func runRewrite(_ data: UnsafeRawBufferPointer) {
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: data.count, alignment: 1)
        defer { copy.deallocate() }
        copy.copyMemory(from: data)

        if var rewriter = RTPPacketRewriter(copy) {
            rewriter.setSSRC(0x1234_5678)
            rewriter.setSequenceNumber(rewriter.header.sequenceNumber &+ 1)
            rewriter.setTimestamp(rewriter.header.timestamp &+ 3000)
            rewriter.setPayloadType(rewriter.header.payloadType &+ 1)
            rewriter.setMarker(!rewriter.header.marker)
            var map = ExtensionIDMap()
            for id in 1...14 { map[UInt8(id)] = UInt8(15 - id) }  // 14 ids swapped, others dropped
            rewriter.remapExtensionIDs(map)
            rewriter.writeAbsSendTime(AbsSendTime(nanoseconds: 1_000_000_000), id: 2)
            rewriter.writeTransportSequenceNumber(7, id: 3)
            guard let again = RTPHeader(UnsafeRawBufferPointer(copy)), again.ssrc == 0x1234_5678,
                again.headerLength == rewriter.header.headerLength
            else { fatalError("a rewritten RTP packet no longer parses") }
            for _ in again.extensionElements(in: UnsafeRawBufferPointer(copy)) {}
        }

        copy.copyMemory(from: data)
        RTCPFeedbackRewriter.rewrite(copy, senderSSRC: 1) { $0 &+ 1 }
        _ = RTCPCompoundIterator.isValidCompound(UnsafeRawBufferPointer(copy))
    }
}
