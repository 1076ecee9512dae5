/// What a datagram on the media port carries, from its first bytes (RFC 7983 §7, with the TURN
/// ChannelData range of RFC 8656). One port serves them all, so this is the first decision.
public enum PacketKind: Sendable, Equatable {
    case stun, dtls, rtp, rtcp, turnChannelData, unknown

    public init(_ datagram: UnsafeRawBufferPointer) {
        guard let first = datagram.first else {
            self = .unknown
            return
        }
        switch first {
        case 0...3: self = .stun
        case 20...63: self = .dtls
        case 64...79: self = .turnChannelData
        case 128...191:
            // RTCP packet types 192–223 (SR 200, RR 201, …) sit where RTP has marker + payload type.
            if datagram.count >= 2, (192...223).contains(datagram[1]) { self = .rtcp } else { self = .rtp }
        default: self = .unknown
        }
    }
}
