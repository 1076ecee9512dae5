import RTP
import WebRTC

/// One publication as one subscriber receives it: a fixed outgoing SSRC, the subscriber's
/// payload types and extension ids, and the sequence/timestamp rewriting that keeps the stream
/// continuous across publisher restarts and mutes. "What to forward" is the room's decision;
/// this type only knows "how to rewrite it".
public final class DownTrack {
    // What sending reads and writes comes first, so the forwarding loop's prefetch of the first
    // lines covers it (the extension map, a quarter of a kilobyte, goes last).
    let transport: WebRTCTransport
    /// Set once the subscriber's answer is applied: payload types and extension ids are known.
    public internal(set) var isNegotiated = false
    var payloadTypes = PayloadTypeMap()
    var rewriter: SequenceRewriter
    /// Outgoing minus incoming timestamp of the current source, for retransmissions.
    var timestampOffset: UInt32 = 0
    var packetsSent: UInt32 = 0
    var octetsSent: UInt32 = 0
    var lastOutgoingTimestamp: UInt32 = 0
    var lastSentAt: UInt64 = 0
    var sentAny = false
    var keyframeRequested = false
    var subscriberExtensions = RTPExtensionIDs()
    /// The subscriber's latest REMB for this track's SSRC, bits per second.
    var receiverEstimate: UInt64?
    public let publication: Publication
    public let subscriberSid: String
    public let mid: String
    public let outgoingSSRC: UInt32
    var extensionMap = ExtensionIDMap()

    /// Holds its publication strongly; the room breaks the cycle when it unsubscribes.
    init(publication: Publication, subscriberSid: String, mid: String, outgoingSSRC: UInt32, transport: WebRTCTransport) {
        self.publication = publication
        self.subscriberSid = subscriberSid
        self.mid = mid
        self.outgoingSSRC = outgoingSSRC
        self.transport = transport
        self.rewriter = SequenceRewriter(clockRate: publication.clockRate, outgoingSSRC: outgoingSSRC)
    }

    /// Applies what the subscriber's answer accepted.
    func negotiate(codecs: [RTPCodec], extensions: RTPExtensionIDs) {
        payloadTypes = PayloadTypeMap()
        for published in publication.codecs where published.payloadType < 128 {
            if let accepted = codecs.first(where: { $0.matches(published) }) { payloadTypes[published.payloadType] = accepted.payloadType }
        }
        subscriberExtensions = extensions
        extensionMap = publication.extensions.forwardingMap(to: extensions)
        isNegotiated = true
    }

    var isActive: Bool { isNegotiated && transport.isConnected }

    /// Sends `packet` (as received) to this subscriber, rewritten for it where it leaves from
    /// (the worker's send slot). Returns false when it was not sent. A retransmission passes the
    /// outgoing number the subscriber NACKed.
    func send(_ packet: UnsafeRawBufferPointer, header: RTPHeader, now: UInt64, retransmittedAs: UInt16? = nil) -> Bool {
        let outgoingPayloadType = payloadTypes[header.payloadType]
        guard outgoingPayloadType != PayloadTypeMap.drop else { return false }
        let sequenceNumber: UInt16
        let timestamp: UInt32
        if let retransmittedAs {
            sequenceNumber = retransmittedAs
            timestamp = header.timestamp &+ timestampOffset
        } else {
            guard
                let output = rewriter.rewrite(
                    ssrc: header.ssrc, sequenceNumber: header.sequenceNumber, timestamp: header.timestamp,
                    arrivalNanoseconds: Int64(truncatingIfNeeded: now))
            else { return false }
            sequenceNumber = output.sequenceNumber
            timestamp = output.timestamp
            timestampOffset = output.timestamp &- header.timestamp
        }
        let sent = transport.sendRTP { buffer in
            guard packet.count <= buffer.count else { return nil }
            let copy = UnsafeMutableRawBufferPointer(rebasing: buffer[..<packet.count])
            copy.copyMemory(from: packet)
            guard var rewriter = RTPPacketRewriter(copy) else { return nil }
            rewriter.setSSRC(outgoingSSRC)
            rewriter.setSequenceNumber(sequenceNumber)
            rewriter.setTimestamp(timestamp)
            rewriter.setPayloadType(outgoingPayloadType)
            if header.hasExtension {
                _ = rewriter.remapExtensionIDs(extensionMap)
                if publication.extensions.absSendTime != 0, subscriberExtensions.absSendTime != 0 {
                    _ = rewriter.writeAbsSendTime(AbsSendTime(nanoseconds: Int64(truncatingIfNeeded: now)), id: subscriberExtensions.absSendTime)
                }
            }
            return packet.count
        }
        guard sent else { return false }
        if retransmittedAs == nil {
            packetsSent &+= 1
            octetsSent &+= UInt32(truncatingIfNeeded: header.payloadLength)
            lastOutgoingTimestamp = timestamp
            lastSentAt = now
            sentAny = true
        }
        return true
    }
}
