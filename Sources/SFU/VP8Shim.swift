import RTP

// TEMPORARY until the VP8 munger lands: passes VP8 through unchanged.
struct VP8PayloadDescriptor {
    var isKeyframe: Bool
    var temporalLayer: Int
    init?(_ payload: UnsafeRawBufferPointer) {
        guard payload.count >= 1 else { return nil }
        let first = payload[0]
        var offset = 1
        var tid = 0
        if first & 0x80 != 0 {
            guard payload.count >= 2 else { return nil }
            let x = payload[1]
            offset = 2
            if x & 0x80 != 0 {
                guard payload.count > offset else { return nil }
                offset += payload[offset] & 0x80 != 0 ? 2 : 1
            }
            if x & 0x40 != 0 { offset += 1 }
            if x & 0x30 != 0 {
                guard payload.count > offset else { return nil }
                tid = Int(payload[offset] >> 6)
                offset += 1
            }
        }
        guard payload.count > offset else { return nil }
        isKeyframe = first & 0x10 != 0 && first & 0x0F == 0 && payload[offset] & 0x01 == 0
        temporalLayer = tid
    }
}

struct VP8Munger {
    enum Rewrite { case none }
    enum Decision { case drop, forward(Rewrite) }
    mutating func switchSource() {}
    mutating func process(_ descriptor: VP8PayloadDescriptor, maxTemporalLayer: Int) -> Decision {
        descriptor.temporalLayer > maxTemporalLayer ? .drop : .forward(.none)
    }
    func rewriteForRetransmission(_ descriptor: VP8PayloadDescriptor) -> Rewrite? { Rewrite.none }
}

extension VP8Munger.Rewrite {
    func apply(to payload: UnsafeMutableRawBufferPointer, descriptor: VP8PayloadDescriptor) {}
}

extension VP8PayloadDescriptor {
    func keyframeSize(in payload: UnsafeRawBufferPointer) -> (width: Int, height: Int)? { nil }
}
