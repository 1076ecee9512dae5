/// In-place SSRC translation of subscriber feedback before the SFU forwards it upstream:
/// the subscriber names the SFU's outgoing SSRCs, the publisher expects its own.
public enum RTCPFeedbackRewriter {
    /// Walks a compound packet and, for NACK, PLI, FIR and REMB, replaces each media SSRC `s`
    /// with `mapMediaSSRC(s)` (unchanged where it returns nil) and the sender SSRC with
    /// `senderSSRC` when given. Other packets are left alone. Returns the number of feedback
    /// packets touched; stops at the first malformed packet.
    @discardableResult
    public static func rewrite(
        _ compound: UnsafeMutableRawBufferPointer, senderSSRC: UInt32? = nil, mapMediaSSRC: (UInt32) -> UInt32?
    ) -> Int {
        var rewritten = 0
        var iterator = RTCPCompoundIterator(UnsafeRawBufferPointer(compound))
        while let packet = iterator.next() {
            // Offsets below are relative to the packet start: header (4), sender (4), media (4).
            let start = packet.range.lowerBound
            let senderOffset = start + 4
            let mediaOffset = start + 8
            func mapSSRC(at offset: Int) {
                let old = UnsafeRawBufferPointer(compound).uint32(at: offset)
                if let new = mapMediaSSRC(old) { compound.setUInt32(new, at: offset) }
            }
            if RTCPGenericNack(packet) != nil || RTCPPictureLossIndication(packet) != nil {
                mapSSRC(at: mediaOffset)
            } else if let fir = RTCPFullIntraRequest(packet) {
                for index in 0..<fir.entries.count { mapSSRC(at: start + 12 + index * FIREntry.length) }
            } else if let remb = RTCPREMB(packet) {
                for index in 0..<remb.ssrcs.count { mapSSRC(at: start + 20 + index * 4) }
            } else {
                continue
            }
            if let senderSSRC { compound.setUInt32(senderSSRC, at: senderOffset) }
            rewritten += 1
        }
        return rewritten
    }
}
