import RTP
import WebRTC

/// One publication as one subscriber receives it: a fixed outgoing SSRC (and RTX SSRC), the
/// subscriber's payload types and extension ids, the layer it gets, and the rewriting that keeps
/// its stream continuous across layer switches, dropped temporal layers, publisher restarts and
/// mutes. Which layer it should get is the allocator's decision (`targetLayer`); this type
/// switches to it at the target's next keyframe and rewrites every packet it sends.
public final class DownTrack {
    // What sending reads and writes comes first, so the forwarding loop's prefetch of the first
    // lines covers it (the extension map, a quarter of a kilobyte, goes last).
    let transport: WebRTCTransport
    unowned let bandwidth: SubscriberBandwidth
    unowned let workerStatistics: SFUWorkerStatistics
    /// Set once the subscriber's answer is applied: payload types and extension ids are known.
    public internal(set) var isNegotiated = false
    /// The spatial layer being forwarded; -1 before the first and while paused.
    public internal(set) var currentLayer: Int
    /// The layer the allocator chose; -1 pauses the track.
    public internal(set) var targetLayer: Int
    /// VP8 temporal layers above this are dropped.
    public internal(set) var maxTemporalLayer = 2
    var payloadTypes = PayloadTypeMap()
    /// The subscriber's RTX payload type, `PayloadTypeMap.drop` when it did not take RTX.
    var retransmissionPayloadType = PayloadTypeMap.drop
    var rewriter: SequenceRewriter
    var vp8 = VP8Munger()
    /// Whether VP8 descriptors are rewritten (simulcast, or temporal layers): decided at the
    /// first VP8 packet, as the munger starts at a keyframe.
    var rewritesVP8 = false
    /// Outgoing minus incoming timestamp of the current source, for retransmissions.
    var timestampOffset: UInt32 = 0
    var packetsSent: UInt32 = 0
    var octetsSent: UInt32 = 0
    var lastOutgoingTimestamp: UInt32 = 0
    var lastSentAt: UInt64 = 0
    var sentAny = false
    var keyframeRequested = false
    /// When this down-track last asked for its target layer's keyframe.
    var lastKeyframeAsked: UInt64 = 0
    var subscriberExtensions = RTPExtensionIDs()
    var retransmissionSequence: UInt16
    /// The subscriber's latest REMB for this track's SSRC, bits per second.
    var receiverEstimate: UInt64?
    public let publication: Publication
    public let subscriberSid: String
    public let mid: String
    public let outgoingSSRC: UInt32
    public let retransmissionSSRC: UInt32
    /// What the subscriber asked for: the most it wants of this track.
    public internal(set) var limit = SubscriptionLimit()
    /// The allocator paused it: not even the lowest layer fits the subscriber's bandwidth.
    public internal(set) var isPausedForBandwidth = false
    /// The spatial layer this subscriber needs the publisher to send (dynacast), nil for none.
    var neededSpatialLayer: Int?
    public internal(set) var layerSwitches: UInt64 = 0
    public internal(set) var retransmissionsSent: UInt64 = 0
    var extensionMap = ExtensionIDMap()
    /// The layer the subscriber was last told it receives (-1: none yet).
    var reportedLayer = -1
    /// A stream that goes on across sources (a WHEP player's m-line): it pauses, never ends.
    var isContinuous = false

    /// Holds its publication strongly; the room breaks the cycle when it unsubscribes.
    init(
        publication: Publication, subscriberSid: String, mid: String, outgoingSSRC: UInt32, retransmissionSSRC: UInt32,
        transport: WebRTCTransport, bandwidth: SubscriberBandwidth, workerStatistics: SFUWorkerStatistics
    ) {
        self.workerStatistics = workerStatistics
        self.publication = publication
        self.subscriberSid = subscriberSid
        self.mid = mid
        self.outgoingSSRC = outgoingSSRC
        self.retransmissionSSRC = retransmissionSSRC
        self.transport = transport
        self.bandwidth = bandwidth
        self.rewriter = SequenceRewriter(clockRate: publication.clockRate, outgoingSSRC: outgoingSSRC)
        retransmissionSequence = UInt16(truncatingIfNeeded: retransmissionSSRC >> 7)
        // A plain track flows from its first packet (the decoder waits for the keyframe asked
        // for at negotiation); a simulcast one starts at a keyframe of the layer chosen.
        let start = publication.isSimulcast ? min(1, publication.layers.count - 1) : 0
        currentLayer = publication.isSimulcast ? -1 : 0
        targetLayer = start
    }

    /// Takes over the stream `previous` sent on the same SSRCs, from another publication: what
    /// the subscriber has seen continues (numbers, timestamps, picture ids, counts for sender
    /// reports), and the first packet forwarded is a new source to the rewriters. Video waits for
    /// the new publication's keyframe.
    func continueStream(of previous: DownTrack) {
        rewriter = previous.rewriter
        rewriter.resync()
        vp8 = previous.vp8
        vp8.switchSource()
        rewritesVP8 = previous.rewritesVP8
        packetsSent = previous.packetsSent
        octetsSent = previous.octetsSent
        lastOutgoingTimestamp = previous.lastOutgoingTimestamp
        lastSentAt = previous.lastSentAt
        sentAny = previous.sentAny
        retransmissionSequence = previous.retransmissionSequence
        limit = previous.limit
        isContinuous = previous.isContinuous
        if publication.kind == .video { currentLayer = -1 }
    }

    /// Applies what the subscriber's answer accepted.
    func negotiate(codecs: [RTPCodec], retransmissionPayloadType: UInt8?, extensions: RTPExtensionIDs) {
        payloadTypes = PayloadTypeMap()
        for published in publication.codecs where published.payloadType < 128 && published.name.lowercased() != "rtx" {
            if let accepted = codecs.first(where: { $0.matches(published) }) { payloadTypes[published.payloadType] = accepted.payloadType }
        }
        self.retransmissionPayloadType = retransmissionPayloadType ?? PayloadTypeMap.drop
        subscriberExtensions = extensions
        extensionMap = publication.extensions.forwardingMap(to: extensions)
        isNegotiated = true
    }

    var isActive: Bool { isNegotiated && transport.isConnected }
    var hasRetransmission: Bool { retransmissionPayloadType != PayloadTypeMap.drop }

    /// Moves to another layer (or -1: pause). Going to a layer means waiting for its keyframe:
    /// packets of the current layer keep flowing until then.
    func setTarget(layer: Int, temporal: Int) {
        maxTemporalLayer = temporal
        guard layer != targetLayer else { return }
        targetLayer = layer
        if layer < 0 { currentLayer = -1 }
    }

    /// Whether a packet of `layer` goes to this subscriber, switching layers at a keyframe of the
    /// target. False for packets of other layers and, after a pause, until a keyframe.
    @inline(__always)
    func accepts(layer: Int, frame: FrameInfo) -> Bool {
        if layer == currentLayer { return true }
        guard layer == targetLayer, frame.startsKeyframe || !frame.isVideo else { return false }
        if currentLayer >= 0 {
            layerSwitches += 1
            workerStatistics.counts.layerSwitches += 1
        }
        // The new layer is a new source: sequence numbers and timestamps continue from the last
        // ones sent (the rewriter advances the timestamp by the wall time since).
        rewriter.resync()
        vp8.switchSource()
        currentLayer = layer
        return true
    }

    /// Sends `packet` (as received, RTX unwrapped) to this subscriber, rewritten for it where it
    /// leaves from (the worker's send slot). Returns false when it was not sent. A retransmission
    /// (or a probe's copy) passes the outgoing number it went out as.
    ///
    /// The copy is written first, then decided on: the VP8 munger reads and rewrites the copy's
    /// payload descriptor (a dropped temporal layer returns no packet, and the sequence numbers
    /// skip it, so the subscriber sees no gap to NACK); the sequence number, timestamp and
    /// transport-wide number are filled in once the packet is sure to go.
    func send(
        _ packet: UnsafeRawBufferPointer, header: RTPHeader, frame: FrameInfo, now: UInt64, retransmittedAs: UInt16? = nil, isProbe: Bool = false
    ) -> Bool {
        let outgoingPayloadType = payloadTypes[header.payloadType]
        guard outgoingPayloadType != PayloadTypeMap.drop else { return false }
        var fields: ForwardedPacket.Fields
        if let retransmittedAs, hasRetransmission {
            fields = ForwardedPacket.Fields(
                ssrc: retransmissionSSRC, sequenceNumber: retransmissionSequence, timestamp: header.timestamp &+ timestampOffset,
                payloadType: retransmissionPayloadType)
            fields.originalSequenceNumber = retransmittedAs
        } else {
            fields = ForwardedPacket.Fields(
                ssrc: outgoingSSRC, sequenceNumber: retransmittedAs ?? 0, timestamp: header.timestamp &+ timestampOffset,
                payloadType: outgoingPayloadType)
        }
        // Transport-wide sequence numbers drive our estimate of the subscriber's bandwidth; a
        // subscriber without them estimates itself (REMB) from abs-send-time.
        if subscriberExtensions.transportCC != 0 {
            fields.transportSequenceID = subscriberExtensions.transportCC
        } else if subscriberExtensions.absSendTime != 0 {
            fields.absSendTimeID = subscriberExtensions.absSendTime
            fields.absSendTime = AbsSendTime(nanoseconds: Int64(truncatingIfNeeded: now))
        }
        if let descriptor = frame.vp8, !rewritesVP8 {
            // Picture ids need rewriting once layers switch or temporal layers can be dropped.
            rewritesVP8 = publication.isSimulcast || descriptor.temporalLayer != nil
        }
        let extensionMap = self.extensionMap
        let sent = transport.sendRTP { buffer in
            guard let written = ForwardedPacket.write(packet, header: header, fields: fields, extensionMap: extensionMap, into: buffer)
            else { return nil }
            if rewritesVP8, let descriptor = frame.vp8 {
                let payload = UnsafeMutableRawBufferPointer(rebasing: buffer[written.payloadOffset..<written.payloadEnd])
                let decision = vp8.process(descriptor: descriptor, payload: payload, maxTemporalLayer: UInt8(clamping: maxTemporalLayer))
                guard decision == .forward else {
                    if retransmittedAs == nil { rewriter.skip(ssrc: header.ssrc, sequenceNumber: header.sequenceNumber) }
                    return nil
                }
            }
            if retransmittedAs == nil {
                guard
                    let output = rewriter.rewrite(
                        ssrc: header.ssrc, sequenceNumber: header.sequenceNumber, timestamp: header.timestamp,
                        arrivalNanoseconds: Int64(truncatingIfNeeded: now))
                else { return nil }
                buffer.storeBytes(of: output.sequenceNumber.bigEndian, toByteOffset: 2, as: UInt16.self)
                buffer.storeBytes(of: output.timestamp.bigEndian, toByteOffset: 4, as: UInt32.self)
                timestampOffset = output.timestamp &- header.timestamp
                fields.timestamp = output.timestamp
            }
            if let offset = written.transportSequenceOffset {
                let sequence = bandwidth.packetSent(size: written.length, now: now)
                buffer.storeBytes(of: sequence.bigEndian, toByteOffset: offset, as: UInt16.self)
            }
            if frame.isVideo { bandwidth.videoOctetsSent &+= UInt64(written.length) }
            return written.length
        }
        guard sent else { return false }
        if retransmittedAs == nil {
            packetsSent &+= 1
            octetsSent &+= UInt32(truncatingIfNeeded: header.payloadLength)
            lastOutgoingTimestamp = fields.timestamp
            lastSentAt = now
            sentAny = true
        } else {
            if hasRetransmission { retransmissionSequence &+= 1 }
            if !isProbe { retransmissionsSent &+= 1 }
        }
        return true
    }

    /// Whether padding can probe the subscriber's link through this track: its RTX stream is
    /// negotiated and the subscriber reports transport-wide arrivals.
    var canSendPadding: Bool { isActive && hasRetransmission && subscriberExtensions.transportCC != 0 }

    /// Sends one padding-only packet of `padding` bytes on the RTX stream, stamped for the
    /// subscriber's estimate like any packet; returns the bytes sent (0 when it could not go).
    func sendPadding(_ padding: Int, now: UInt64) -> Int {
        guard canSendPadding else { return 0 }
        var length = 0
        let sent = transport.sendRTP { buffer in
            guard
                let written = PaddingPacket.write(
                    ssrc: retransmissionSSRC, sequenceNumber: retransmissionSequence, timestamp: lastOutgoingTimestamp,
                    payloadType: retransmissionPayloadType, transportSequenceID: subscriberExtensions.transportCC, padding: padding, into: buffer),
                let offset = written.transportSequenceOffset
            else { return nil }
            let sequence = bandwidth.packetSent(size: written.length, now: now)
            buffer.storeBytes(of: sequence.bigEndian, toByteOffset: offset, as: UInt16.self)
            length = written.length
            return written.length
        }
        guard sent else { return 0 }
        retransmissionSequence &+= 1
        return length
    }
}

/// What a subscriber asked for of one track: a quality, or the size of the tile that shows it.
public struct SubscriptionLimit: Sendable, Equatable {
    public enum Quality: String, Sendable, Equatable, CaseIterable {
        case low, medium, high

        /// The highest spatial layer this quality takes (0 lowest).
        public var maxSpatialLayer: Int {
            switch self {
            case .low: 0
            case .medium: 1
            case .high: 2
            }
        }
    }

    public var quality: Quality
    public var maxWidth: Int?
    public var maxHeight: Int?

    public init(quality: Quality = .high, maxWidth: Int? = nil, maxHeight: Int? = nil) {
        self.quality = quality
        self.maxWidth = maxWidth
        self.maxHeight = maxHeight
    }
}

/// What the forwarding loop learns of a packet once, for every down-track: whether a decoder can
/// start from it and, for VP8, its payload descriptor (temporal layer, picture ids).
struct FrameInfo {
    var isVideo: Bool
    var startsKeyframe: Bool
    var temporalLayer: Int
    var vp8: VP8PayloadDescriptor?

    static let audio = FrameInfo(isVideo: false, startsKeyframe: false, temporalLayer: 0, vp8: nil)
}
