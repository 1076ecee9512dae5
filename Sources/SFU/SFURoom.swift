import Congestion
import RTP
import WebRTC

/// What the room's control plane (the `Room` actor, on the same event loop) hears from media.
public protocol SFURoomDelegate: AnyObject {
    func sfuRoom(_ room: SFURoom, speakersChanged speakers: [ActiveSpeaker])
    func sfuRoom(_ room: SFURoom, participant sid: String, transport role: TransportRole, closed reason: WebRTCTransport.CloseReason)
    /// A subscriber's track was paused (not even its lowest layer fits its bandwidth) or resumed.
    func sfuRoom(_ room: SFURoom, downTrack: DownTrack, pausedForBandwidth paused: Bool)
    /// The simulcast layers of a publication that someone needs changed: the publisher should
    /// send only those (dynacast).
    func sfuRoom(_ room: SFURoom, publication: Publication, neededLayers: [PublishedLayer])
    /// A subscriber now receives another simulcast layer of a track (seen at allocation time).
    func sfuRoom(_ room: SFURoom, downTrack: DownTrack, switchedToLayer layer: Int)
}

extension SFURoomDelegate {
    public func sfuRoom(_ room: SFURoom, downTrack: DownTrack, pausedForBandwidth paused: Bool) {}
    public func sfuRoom(_ room: SFURoom, publication: Publication, neededLayers: [PublishedLayer]) {}
    public func sfuRoom(_ room: SFURoom, downTrack: DownTrack, switchedToLayer layer: Int) {}
}

/// Something that takes a copy of every publication's packets as they arrive, decrypted (a
/// recorder). Called on the room's loop, in the packet path: it must be quick.
public protocol PublicationTap: AnyObject {
    func tap(_ room: SFURoom, published publication: Publication)
    func tap(_ room: SFURoom, unpublished publication: Publication)
    func tap(_ room: SFURoom, received packet: UnsafeRawBufferPointer, header: RTPHeader, from publication: Publication, now: UInt64)
}

public struct ActiveSpeaker: Sendable, Equatable {
    public var participantSid: String
    /// 0…1, linear amplitude.
    public var level: Double

    public init(participantSid: String, level: Double) {
        self.participantSid = participantSid
        self.level = level
    }
}

/// The forwarding core of one room (mediasoup calls it a router): participants' transports,
/// publications and down-tracks. Every method runs on the room's media worker, the same loop as
/// the room actor and the UDP socket, so a packet goes from socket to subscribers with no hop
/// and no lock. `@unchecked Sendable` so the actor can hold it; each entry point asserts the loop.
public final class SFURoom: @unchecked Sendable {
    public let port: MediaPort
    /// The counters of the worker this room runs on, shared with its other rooms.
    public let workerStatistics: SFUWorkerStatistics
    public let configuration: SFUConfiguration
    public weak var delegate: (any SFURoomDelegate)?
    /// The room's recorder, while one runs.
    public var tap: (any PublicationTap)?
    public private(set) var participants: [String: SFUParticipant] = [:]
    private let dtls: DTLSContext
    private var generator: any RandomNumberGenerator
    private let rtcpScratch: UnsafeMutableRawBufferPointer
    /// Publications whose gaps are NACKed upstream, and whether any down-track waits for a
    /// keyframe: the tick walks the participants only when one of them says so.
    private var nackedPublications = 0
    private var keyframeRequestsPending = false
    /// Keyframe requests that came within `pliInterval` of the last for their layer.
    private var deferredKeyframeRequests: [(publication: Publication, layer: Int)] = []
    private var lastReportsAt: UInt64 = 0
    private var lastSpeakersAt: UInt64 = 0
    private var lastSpeakers: [ActiveSpeaker] = []
    var lastSpeakerSids: [String] { lastSpeakers.map(\.participantSid) }
    private var lastBitrateWindowAt: UInt64 = 0
    var lastAllocationAt: UInt64 = 0
    private var closed = false

    public static let maxPacket = 1500

    public init(
        port: MediaPort, dtls: DTLSContext, configuration: SFUConfiguration,
        workerStatistics: SFUWorkerStatistics = SFUWorkerStatistics(),
        generator: any RandomNumberGenerator = SystemRandomNumberGenerator()
    ) {
        self.port = port
        self.workerStatistics = workerStatistics
        self.dtls = dtls
        self.configuration = configuration
        self.generator = generator
        rtcpScratch = .allocate(byteCount: 1500, alignment: 8)
        port.addTickHandler(owner: self) { [weak self] now in self?.tick(now: now) }
        workerStatistics.register(self)
    }

    deinit {
        rtcpScratch.deallocate()
    }

    /// Closes every transport and stops the timers; the room is done.
    public func close() {
        port.loop.preconditionInEventLoop()
        guard !closed else { return }
        closed = true
        for sid in Array(participants.keys) { removeParticipant(sid) }
        port.removeTickHandler(owner: self)
        workerStatistics.unregister(self)
    }

    // MARK: Participants and transports

    public func participant(_ sid: String) -> SFUParticipant {
        port.loop.preconditionInEventLoop()
        if let existing = participants[sid] { return existing }
        let bandwidth = SubscriberBandwidth(
            configuration: SendSideEstimator.Configuration(
                initialBitrate: configuration.initialSubscriberBitrate, minBitrate: configuration.minSubscriberBitrate,
                maxBitrate: configuration.maxSubscriberBitrate))
        let participant = SFUParticipant(sid: sid, room: self, rtcpSSRC: randomSSRC(), bandwidth: bandwidth)
        participants[sid] = participant
        return participant
    }

    /// The participant's transport for `role`, made (with fresh ICE credentials) and registered
    /// on the worker's port the first time.
    public func transport(for sid: String, role: TransportRole) -> WebRTCTransport {
        let participant = participant(sid)
        if let existing = participant.transport(role) { return existing }
        let transport = WebRTCTransport(
            id: "\(sid)/\(role.rawValue)", localICE: ICECredentials.random(using: &generator), dtlsContext: dtls,
            consentTimeoutNanoseconds: configuration.consentTimeoutNanoseconds, now: port.now())
        transport.delegate = participant
        port.register(transport)
        if role == .publisher { participant.publisher = transport } else { participant.subscriber = transport }
        return transport
    }

    /// ICE restart: new local credentials for the transport, routed from now on.
    public func restartICE(for sid: String, role: TransportRole) -> ICECredentials? {
        guard let transport = participants[sid]?.transport(role) else { return nil }
        let previous = transport.localICE.ufrag
        transport.restartICE(local: ICECredentials.random(using: &generator))
        port.reregister(transport, previousUfrag: previous)
        return transport.localICE
    }

    /// Drops everything of a participant: its publications (and everyone's down-tracks of them),
    /// its down-tracks, its transports (DTLS close_notify, SRTP contexts freed).
    public func removeParticipant(_ sid: String) {
        port.loop.preconditionInEventLoop()
        guard let participant = participants.removeValue(forKey: sid) else { return }
        for publication in participant.publications { unpublish(publication, from: participant) }
        for downTrack in participant.downTracks { unsubscribe(downTrack) }
        for transport in [participant.publisher, participant.subscriber].compactMap({ $0 }) {
            transport.delegate = nil
            transport.close()
            port.unregister(transport)
        }
        participant.publisher = nil
        participant.subscriber = nil
    }

    // MARK: Publications and subscriptions

    /// Starts taking a publisher's m-line: one layer (`ssrc` when its SDP said it) or the
    /// simulcast `layers`, lowest first; `retransmission` maps RTX payload types to the ones
    /// they repair.
    public func publish(
        participant sid: String, trackSid: String, kind: MediaKind, mid: String, ssrc: UInt32?, layers: [Publication.LayerDescription] = [],
        codecs: [RTPCodec], extensions: RTPExtensionIDs, feedback: Publication.Feedback, retransmission: [UInt8: UInt8] = [:]
    ) -> Publication {
        let participant = participant(sid)
        if let existing = participant.publications.first(where: { $0.mid == mid }) { return existing }
        let publication = Publication(
            trackSid: trackSid, participantSid: sid, kind: kind, mid: mid,
            layers: layers.isEmpty ? [Publication.LayerDescription(ssrc: ssrc)] : layers, codecs: codecs, extensions: extensions,
            feedback: feedback, retransmission: retransmission, historySize: configuration.packetHistory)
        participant.publications.append(publication)
        if publication.isNacked { nackedPublications += 1 }
        participant.bindAnnouncedStreams(of: publication)
        tap?.tap(self, published: publication)
        return publication
    }

    public func unpublish(_ publication: Publication) {
        guard let participant = participants[publication.participantSid] else { return }
        unpublish(publication, from: participant)
    }

    private func unpublish(_ publication: Publication, from participant: SFUParticipant) {
        for downTrack in publication.downTracks { unsubscribe(downTrack) }
        tap?.tap(self, unpublished: publication)
        let count = participant.publications.count
        participant.publications.removeAll { $0 === publication }
        if participant.publications.count < count, publication.isNacked { nackedPublications -= 1 }
        participant.unbindStreams(of: publication)
    }

    /// Every publication in the room, for a recorder that starts mid-meeting.
    public var publications: [Publication] { participants.values.flatMap(\.publications) }

    /// Asks the publisher of a video publication for a keyframe now (a recorder starting).
    public func requestKeyframe(_ publication: Publication) {
        requestKeyframe(publication, layer: publication.layers.count - 1, now: port.now(), force: true)
    }

    public func publication(trackSid: String) -> Publication? {
        for participant in participants.values {
            if let found = participant.publications.first(where: { $0.trackSid == trackSid }) { return found }
        }
        return nil
    }

    /// Starts sending `publication` to `subscriber` on m-line `mid` (the caller's subscriber
    /// offer); it flows once the answer is applied with `negotiate`.
    /// A WHEP answer names its SSRCs before there is anything to send: `ssrcs` fixes them, for a
    /// stream that will `switchSource` (its VP8 picture ids are rewritten from the start, so they
    /// continue across switches).
    public func subscribe(
        _ subscriberSid: String, to publication: Publication, mid: String, ssrcs: (media: UInt32, retransmission: UInt32)? = nil
    ) -> DownTrack {
        let subscriber = participant(subscriberSid)
        if let existing = subscriber.downTracks.first(where: { $0.publication === publication }) { return existing }
        let transport = transport(for: subscriberSid, role: .subscriber)
        var ssrc = ssrcs?.media ?? randomSSRC()
        while subscriber.downTracksBySSRC[ssrc] != nil { ssrc = randomSSRC() }
        var retransmissionSSRC = ssrcs?.retransmission ?? randomSSRC()
        while subscriber.downTracksBySSRC[retransmissionSSRC] != nil || retransmissionSSRC == ssrc { retransmissionSSRC = randomSSRC() }
        let downTrack = DownTrack(
            publication: publication, subscriberSid: subscriberSid, mid: mid, outgoingSSRC: ssrc, retransmissionSSRC: retransmissionSSRC,
            transport: transport, bandwidth: subscriber.bandwidth, workerStatistics: workerStatistics)
        if ssrcs != nil {
            downTrack.rewritesVP8 = true
            downTrack.isContinuous = true
        }
        add(downTrack, subscriber: subscriber)
        return downTrack
    }

    /// Points a subscriber's stream at another publication of the same kind (a WHEP player
    /// following the active speaker): the subscriber sees one stream go on, with its SSRCs,
    /// sequence numbers, timestamps and VP8 picture ids continuing; video resumes at the new
    /// source's keyframe. The returned down-track replaces `downTrack`; negotiate it before it flows.
    public func switchSource(_ downTrack: DownTrack, to publication: Publication) -> DownTrack {
        guard let subscriber = participants[downTrack.subscriberSid] else { return downTrack }
        if downTrack.publication === publication, publication.downTracks.contains(where: { $0 === downTrack }) { return downTrack }
        let next = DownTrack(
            publication: publication, subscriberSid: downTrack.subscriberSid, mid: downTrack.mid, outgoingSSRC: downTrack.outgoingSSRC,
            retransmissionSSRC: downTrack.retransmissionSSRC, transport: downTrack.transport, bandwidth: subscriber.bandwidth,
            workerStatistics: workerStatistics)
        next.continueStream(of: downTrack)
        // No BYE: for the subscriber the stream goes on.
        detach(downTrack, from: subscriber)
        add(next, subscriber: subscriber)
        return next
    }

    private func add(_ downTrack: DownTrack, subscriber: SFUParticipant) {
        subscriber.downTracks.append(downTrack)
        subscriber.downTracksBySSRC[downTrack.outgoingSSRC] = downTrack
        subscriber.downTracksBySSRC[downTrack.retransmissionSSRC] = downTrack
        downTrack.publication.downTracks.append(downTrack)
    }

    private func detach(_ downTrack: DownTrack, from subscriber: SFUParticipant?) {
        downTrack.publication.downTracks.removeAll { $0 === downTrack }
        guard let subscriber else { return }
        subscriber.downTracks.removeAll { $0 === downTrack }
        if subscriber.downTracksBySSRC[downTrack.outgoingSSRC] === downTrack {
            subscriber.downTracksBySSRC[downTrack.outgoingSSRC] = nil
            subscriber.downTracksBySSRC[downTrack.retransmissionSSRC] = nil
        }
    }

    public func unsubscribe(_ downTrack: DownTrack) {
        // Idempotent: unpublishing already removed it when its publisher left.
        guard downTrack.publication.downTracks.contains(where: { $0 === downTrack }) else { return }
        detach(downTrack, from: participants[downTrack.subscriberSid])
        // A BYE tells the subscriber the stream ended (its m-line goes inactive in the next offer);
        // a continuous stream only pauses until its next source.
        if !downTrack.isContinuous, downTrack.transport.isConnected, let bye = RTCPBuilder.bye(ssrcs: [downTrack.outgoingSSRC]) {
            downTrack.transport.sendRTCP(bye)
        }
    }

    /// Applies the subscriber's answer for a down-track; video asks the publisher for a keyframe.
    public func negotiate(_ downTrack: DownTrack, codecs: [RTPCodec], retransmissionPayloadType: UInt8? = nil, extensions: RTPExtensionIDs) {
        let wasNegotiated = downTrack.isNegotiated
        downTrack.negotiate(codecs: codecs, retransmissionPayloadType: retransmissionPayloadType, extensions: extensions)
        if !wasNegotiated, downTrack.publication.kind == .video { wantKeyframe(for: downTrack) }
    }

    /// Server-side or client-announced mute: a muted publication forwards nothing; unmuting asks
    /// for a keyframe so video resumes at once.
    public func setMuted(_ publication: Publication, _ muted: Bool) {
        guard publication.muted != muted else { return }
        publication.muted = muted
        guard !muted else { return }
        // What was held back during the mute is not a loss: each subscriber's stream continues
        // at the next sequence number, its timestamp advanced by the time muted.
        for downTrack in publication.downTracks { downTrack.rewriter.resync() }
        if publication.kind == .video {
            for index in publication.layers.indices { requestKeyframe(publication, layer: index, now: port.now(), force: true) }
        }
    }

    // MARK: The packet path

    func forward(_ received: UnsafeMutableRawBufferPointer, from participant: SFUParticipant) {
        guard var header = RTPHeader(UnsafeRawBufferPointer(received)) else { return workerStatistics.counts.droppedMalformedRTP += 1 }
        let now = port.now()
        guard let stream = participant.stream(for: header, packet: UnsafeRawBufferPointer(received)) else {
            return workerStatistics.counts.droppedUnknownSSRC += 1
        }
        let publication = stream.publication
        let layer = stream.layer
        // Every packet on the transport counts for the publisher's uplink estimate, RTX and
        // padding included: the feedback reports them all.
        if publication.extensions.transportCC != 0 { noteUplinkArrival(header, packet: UnsafeRawBufferPointer(received), of: publication, from: participant, now: now) }
        var packet = UnsafeRawBufferPointer(received)
        if stream.isRetransmission {
            guard let unwrapped = unwrapRetransmission(received, header: header, layer: layer, publication: publication) else { return }
            header = unwrapped.header
            packet = unwrapped.packet
        }
        if header.payloadLength == 0 {
            // Padding only (a sender probing its uplink): nothing to decode. Each subscriber's
            // numbering skips it, so it leaves no gap to NACK.
            workerStatistics.counts.paddingReceived += 1
            layer.noteReceived(header, packet: packet, temporalLayer: 0, clockRate: publication.clockRate, nacked: publication.isNacked, now: now)
            for downTrack in publication.downTracks where downTrack.currentLayer == layer.index {
                _ = downTrack.rewriter.skip(ssrc: header.ssrc, sequenceNumber: header.sequenceNumber)
            }
            return
        }
        let frame = frameInfo(packet, header: header, publication: publication)
        layer.noteReceived(header, packet: packet, temporalLayer: frame.temporalLayer, clockRate: publication.clockRate, nacked: publication.isNacked, now: now)
        if frame.startsKeyframe { noteKeyframe(frame, layer: layer, packet: packet, header: header, now: now) }
        if publication.kind == .audio { publication.noteAudioLevel(header, packet: packet) }
        if layer.index == publication.layers.count - 1 { tap?.tap(self, received: packet, header: header, from: publication, now: now) }
        guard !publication.muted, !publication.downTracks.isEmpty, packet.count <= Self.maxPacket else { return }
        let downTracks = publication.downTracks
        prefetchSendingState(of: downTracks)
        var forwarded: UInt64 = 0
        for downTrack in downTracks where downTrack.isActive && downTrack.accepts(layer: layer.index, frame: frame) {
            if downTrack.send(packet, header: header, frame: frame, now: now) { forwarded += 1 }
        }
        if forwarded > 0 {
            workerStatistics.counts.forwardedPackets += forwarded
            workerStatistics.counts.recordForwardingDelay(nanoseconds: port.now() &- now)
        }
    }

    /// An RTX packet made back into the original (in the receive buffer): the layer's SSRC, the
    /// payload type it repairs, the original sequence number. Nil (counted) for padding-only RTX,
    /// which senders use to probe, and for an RTX payload type with no codec behind it.
    private func unwrapRetransmission(
        _ received: UnsafeMutableRawBufferPointer, header: RTPHeader, layer: PublishedLayer, publication: Publication
    ) -> (header: RTPHeader, packet: UnsafeRawBufferPointer)? {
        let repaired = publication.retransmissionPayloadTypes[header.payloadType]
        guard repaired != PayloadTypeMap.drop, let ssrc = layer.ssrc else {
            workerStatistics.counts.droppedUnknownRetransmission += 1
            return nil
        }
        guard let length = RetransmissionPacket.unwrap(received, header: header) else {
            workerStatistics.counts.paddingReceived += 1
            return nil
        }
        guard var rewriter = RTPPacketRewriter(UnsafeMutableRawBufferPointer(rebasing: received[..<length])) else {
            workerStatistics.counts.droppedMalformedRTP += 1
            return nil
        }
        rewriter.setSSRC(ssrc)
        rewriter.setPayloadType(repaired)
        layer.repairsReceived += 1
        workerStatistics.counts.repairsReceived += 1
        return (rewriter.header, UnsafeRawBufferPointer(rewriter.packet))
    }

    /// What every down-track needs to know of a packet, worked out once.
    @inline(__always)
    func frameInfo(_ packet: UnsafeRawBufferPointer, header: RTPHeader, publication: Publication) -> FrameInfo {
        guard publication.kind == .video else { return .audio }
        let payload = UnsafeRawBufferPointer(rebasing: packet[header.payloadRange])
        if publication.isVP8 {
            guard let descriptor = try? VP8PayloadDescriptor(payload) else {
                workerStatistics.counts.droppedMalformedVP8 += 1
                return FrameInfo(isVideo: true, startsKeyframe: false, temporalLayer: 0, vp8: nil)
            }
            return FrameInfo(
                isVideo: true, startsKeyframe: descriptor.isKeyframe, temporalLayer: Int(descriptor.temporalLayer ?? 0), vp8: descriptor)
        }
        return FrameInfo(isVideo: true, startsKeyframe: H264Payload.startsKeyframe(payload), temporalLayer: 0, vp8: nil)
    }

    private func noteKeyframe(_ frame: FrameInfo, layer: PublishedLayer, packet: UnsafeRawBufferPointer, header: RTPHeader, now: UInt64) {
        layer.lastKeyframeAt = now
        if let width = frame.vp8?.frameWidth, let height = frame.vp8?.frameHeight {
            layer.width = Int(width)
            layer.height = Int(height)
        }
    }

    /// Records a publisher packet's transport-wide sequence number and arrival for the feedback
    /// the tick sends back.
    private func noteUplinkArrival(_ header: RTPHeader, packet: UnsafeRawBufferPointer, of publication: Publication, from participant: SFUParticipant, now: UInt64) {
        guard let range = header.extensionElement(id: publication.extensions.transportCC, in: packet),
            let sequence = TransportSequenceNumber.read(UnsafeRawBufferPointer(rebasing: packet[range]))
        else { return }
        if participant.uplinkFeedback == nil {
            participant.uplinkFeedback = TWCCRecorder(senderSSRC: participant.rtcpSSRC, mediaSSRC: header.ssrc)
        }
        participant.uplinkFeedback?.packetArrived(sequenceNumber: sequence, arrivalMicroseconds: Int64(now / 1000))
    }

    /// Every subscriber's state is cold when a packet arrives (the worker's other rooms ran since
    /// this publication's last one). Fetching it level by level for all of them before the first
    /// copy lets the cache misses overlap instead of stalling each copy in turn. Only loads and
    /// prefetches, all inlined: a retain would be an atomic write that waits for its cold line.
    @inline(__always)
    private func prefetchSendingState(of downTracks: [DownTrack]) {
        downTracks.withUnsafeBufferPointer { tracks in
            for track in tracks { Prefetch.object(track, lines: 8) }
            for track in tracks { Prefetch.object(track.transport, lines: 8) }
            for track in tracks { track.transport.prefetchSendingSession() }
            for track in tracks { track.transport.prefetchSendingCipher() }
        }
    }

    func handleRTCP(_ compound: UnsafeRawBufferPointer, from participant: SFUParticipant, role: TransportRole) {
        guard RTCPCompoundIterator.isValidCompound(compound) else { return workerStatistics.counts.droppedMalformedRTCP += 1 }
        let now = port.now()
        var iterator = RTCPCompoundIterator(compound)
        while let packet = iterator.next() {
            switch role {
            case .publisher:
                if let report = RTCPSenderReport(packet), let stream = participant.streamsBySSRC[report.ssrc], !stream.isRetransmission {
                    stream.layer.statistics?.senderReportReceived(ntp: report.ntp, arrivalNanoseconds: configuration.wallClockNanoseconds())
                }
            case .subscriber:
                handleSubscriberFeedback(packet, from: participant, now: now)
            }
        }
    }

    private func handleSubscriberFeedback(_ packet: RTCPPacket, from subscriber: SFUParticipant, now: UInt64) {
        if let nack = RTCPGenericNack(packet) {
            workerStatistics.counts.nacksReceived += 1
            guard let downTrack = subscriber.downTracksBySSRC[nack.mediaSSRC], downTrack.outgoingSSRC == nack.mediaSSRC else { return }
            nack.forEachLostSequenceNumber { outgoing in
                if retransmit(outgoing, on: downTrack, now: now) {
                    workerStatistics.counts.retransmissions += 1
                    if downTrack.hasRetransmission { workerStatistics.counts.retransmissionsOnRTX += 1 }
                } else {
                    workerStatistics.counts.retransmissionMisses += 1
                }
            }
        } else if packet.packetType == .transportFeedback, packet.format == TWCCFeedback.format {
            if subscriber.bandwidth.feedbackReceived(packet, now: now) {
                workerStatistics.counts.transportFeedbackReceived += 1
            } else {
                workerStatistics.counts.droppedMalformedTransportFeedback += 1
            }
        } else if let pli = RTCPPictureLossIndication(packet) {
            workerStatistics.counts.plisReceived += 1
            if let downTrack = subscriber.downTracksBySSRC[pli.mediaSSRC] { requestKeyframe(for: downTrack, now: now) }
        } else if let fir = RTCPFullIntraRequest(packet) {
            workerStatistics.counts.plisReceived += 1
            for entry in fir.entries {
                if let downTrack = subscriber.downTracksBySSRC[entry.ssrc] { requestKeyframe(for: downTrack, now: now) }
            }
        } else if let remb = RTCPREMB(packet) {
            for ssrc in remb.ssrcs { subscriber.downTracksBySSRC[ssrc]?.receiverEstimate = remb.bitrate }
            subscriber.bandwidth.receiverEstimate = remb.bitrate
        } else if packet.packetType == .receiverReport {
            workerStatistics.counts.receiverReportsReceived += 1
        }
    }

    /// Sends again what went out as `outgoing` on `downTrack`, from its layer's history: on the
    /// subscriber's RTX stream when it negotiated one, else as the original.
    private func retransmit(_ outgoing: UInt16, on downTrack: DownTrack, now: UInt64) -> Bool {
        let publication = downTrack.publication
        guard downTrack.currentLayer >= 0, let history = publication.layers[downTrack.currentLayer].history,
            let incoming = downTrack.rewriter.incomingSequence(forOutgoing: outgoing)
        else { return false }
        let resent: Bool? = history.withPacket(sequenceNumber: incoming) { stored in
            guard let header = RTPHeader(stored) else { return false }
            let frame = frameInfo(stored, header: header, publication: publication)
            return downTrack.send(stored, header: header, frame: frame, now: now, retransmittedAs: outgoing)
        }
        return resent == true
    }

    /// A subscriber lost its picture: the layer it receives (or is switching to) is asked.
    private func requestKeyframe(for downTrack: DownTrack, now: UInt64) {
        let layer = downTrack.targetLayer >= 0 ? downTrack.targetLayer : downTrack.currentLayer
        guard layer >= 0 else { return }
        requestKeyframe(downTrack.publication, layer: layer, now: now)
    }

    /// PLI (or FIR when the publisher did not offer PLI) for one layer, at most once per
    /// `pliInterval`. False when the publisher cannot be asked yet (its transport is not
    /// connected, or the layer's SSRC is not known): the caller keeps the request for later.
    @discardableResult
    func requestKeyframe(_ publication: Publication, layer index: Int = 0, now: UInt64, force: Bool = false) -> Bool {
        guard publication.kind == .video, publication.layers.indices.contains(index) else { return false }
        let layer = publication.layers[index]
        guard let ssrc = layer.ssrc, let publisher = participants[publication.participantSid], let transport = publisher.publisher,
            transport.isConnected
        else { return false }
        guard force || layer.lastKeyframeRequest == 0 || now &- layer.lastKeyframeRequest >= configuration.pliIntervalNanoseconds
        else {
            // Asked again too soon: the request goes once the interval is over, not never (a
            // subscriber that switched layers meanwhile would wait for the next periodic keyframe).
            if !deferredKeyframeRequests.contains(where: { $0.publication === publication && $0.layer == index }) {
                deferredKeyframeRequests.append((publication, index))
            }
            return true
        }
        layer.lastKeyframeRequest = now
        let length: Int?
        if publication.feedback.pli || !publication.feedback.fir {
            length = RTCPBuilder.pictureLossIndication(senderSSRC: publisher.rtcpSSRC, mediaSSRC: ssrc, into: rtcpScratch)
            workerStatistics.counts.plisSent += 1
        } else {
            layer.keyframeRequestSequence &+= 1
            length = RTCPBuilder.fullIntraRequest(
                senderSSRC: publisher.rtcpSSRC, entries: [FIREntry(ssrc: ssrc, sequenceNumber: layer.keyframeRequestSequence)],
                into: rtcpScratch)
            workerStatistics.counts.firsSent += 1
        }
        if let length { transport.sendRTCP(rtcpScratch, length: length) }
        return true
    }

    // MARK: Timers

    /// Marks a keyframe wanted for `downTrack`; the next tick asks its publisher.
    func wantKeyframe(for downTrack: DownTrack) {
        downTrack.keyframeRequested = true
        keyframeRequestsPending = true
    }

    func tick(now: UInt64) {
        guard !closed else { return }
        // Most ticks of an audio room have nothing to do here: no walk over its participants then.
        if nackedPublications > 0 || keyframeRequestsPending {
            var stillPending = false
            for participant in participants.values {
                if nackedPublications > 0 { sendNacks(for: participant, now: now) }
                guard keyframeRequestsPending else { continue }
                // A subscriber that connected before its publisher keeps asking until the publisher can hear it.
                for downTrack in participant.downTracks where downTrack.keyframeRequested {
                    let layer = downTrack.targetLayer >= 0 ? downTrack.targetLayer : max(downTrack.currentLayer, 0)
                    if downTrack.isActive, requestKeyframe(downTrack.publication, layer: layer, now: now, force: true) {
                        downTrack.keyframeRequested = false
                    } else {
                        stillPending = true
                    }
                }
            }
            keyframeRequestsPending = stillPending
        }
        if !deferredKeyframeRequests.isEmpty {
            let deferred = deferredKeyframeRequests
            deferredKeyframeRequests = deferred.filter { request in
                let layer = request.publication.layers[request.layer]
                guard now &- layer.lastKeyframeRequest >= configuration.pliIntervalNanoseconds else { return true }
                return !requestKeyframe(request.publication, layer: request.layer, now: now, force: true)
                    && participants[request.publication.participantSid] != nil
            }
        }
        for participant in participants.values where participant.bandwidth.hasFeedback { sendProbe(to: participant, now: now) }
        for participant in participants.values where participant.uplinkFeedback != nil {
            if now &- participant.lastUplinkFeedbackAt >= configuration.uplinkFeedbackIntervalNanoseconds {
                participant.lastUplinkFeedbackAt = now
                sendUplinkFeedback(to: participant)
            }
        }
        if now &- lastBitrateWindowAt >= 1_000_000_000 {
            let elapsed = lastBitrateWindowAt == 0 ? 0 : now &- lastBitrateWindowAt
            lastBitrateWindowAt = now
            for participant in participants.values {
                participant.bandwidth.closeWindow(elapsed: elapsed)
                for publication in participant.publications where publication.kind == .video {
                    for layer in publication.layers { layer.closeWindow(elapsed: elapsed) }
                }
            }
        }
        if now &- lastAllocationAt >= configuration.allocationIntervalNanoseconds {
            lastAllocationAt = now
            for participant in participants.values where !participant.downTracks.isEmpty { allocate(participant, now: now) }
            updateNeededLayers(now: now)
        }
        if now &- lastReportsAt >= configuration.reportIntervalNanoseconds {
            lastReportsAt = now
            for participant in participants.values { sendReports(to: participant, now: now) }
        }
        if now &- lastSpeakersAt >= configuration.speakersIntervalNanoseconds {
            lastSpeakersAt = now
            updateSpeakers()
        }
    }

    /// Transport-wide feedback to a publisher: what arrived when since the last one.
    private func sendUplinkFeedback(to participant: SFUParticipant) {
        guard let transport = participant.publisher, transport.isConnected, let feedbacks = participant.uplinkFeedback?.makeFeedback() else { return }
        for feedback in feedbacks {
            transport.sendRTCP(feedback.serialized())
            workerStatistics.counts.transportFeedbackSent += 1
        }
    }

    /// NACKs upstream for gaps in a publisher's video, per layer.
    private func sendNacks(for participant: SFUParticipant, now: UInt64) {
        guard let transport = participant.publisher, transport.isConnected else { return }
        for publication in participant.publications where publication.isNacked {
            for layer in publication.layers {
                guard let ssrc = layer.ssrc else { continue }
                let due = layer.nacks.dueNacks(nowNanoseconds: Int64(truncatingIfNeeded: now), retryIntervalNanoseconds: configuration.nackRetryNanoseconds)
                guard !due.isEmpty,
                    let length = RTCPBuilder.genericNack(senderSSRC: participant.rtcpSSRC, mediaSSRC: ssrc, lostSequenceNumbers: due, into: rtcpScratch)
                else { continue }
                workerStatistics.counts.nacksSent += 1
                transport.sendRTCP(rtcpScratch, length: length)
            }
        }
    }

    /// Receiver reports and REMB to a publisher; sender reports to a subscriber.
    private func sendReports(to participant: SFUParticipant, now: UInt64) {
        let wall = configuration.wallClockNanoseconds()
        if let transport = participant.publisher, transport.isConnected {
            var blocks: [ReportBlock] = []
            for publication in participant.publications {
                for layer in publication.layers {
                    if let block = layer.statistics?.makeReportBlock(nowNanoseconds: wall) { blocks.append(block) }
                }
            }
            if !blocks.isEmpty, let length = RTCPBuilder.receiverReport(ssrc: participant.rtcpSSRC, reportBlocks: blocks.prefix(31), into: rtcpScratch) {
                transport.sendRTCP(rtcpScratch, length: length)
            }
            for publication in participant.publications where publication.kind == .video && publication.feedback.remb {
                let ssrcs = publication.layers.compactMap(\.ssrc)
                guard !ssrcs.isEmpty else { continue }
                // Simulcast serves each subscriber a layer that fits it: one slow subscriber must
                // not hold the publisher down, so only the ceiling is sent. A single layer is held
                // to what its slowest subscriber takes, as before.
                let estimates = publication.isSimulcast ? [] : publication.downTracks.compactMap(\.receiverEstimate)
                let bitrate = min(configuration.maxBitrate, estimates.min() ?? configuration.maxBitrate)
                if let length = RTCPBuilder.remb(senderSSRC: participant.rtcpSSRC, bitrate: bitrate, ssrcs: ssrcs, into: rtcpScratch) {
                    workerStatistics.counts.rembSent += 1
                    transport.sendRTCP(rtcpScratch, length: length)
                }
            }
        }
        if let transport = participant.subscriber, transport.isConnected {
            // One compound packet carries the sender reports of all the subscriber's tracks
            // (RFC 3550 §6.1): one SRTCP protection and one datagram instead of one per track.
            let ntp = NTPTimestamp(unixNanoseconds: wall)
            var length = 0
            for downTrack in participant.downTracks where downTrack.sentAny {
                if length + Self.senderReportLength > Self.maxCompoundLength {
                    transport.sendRTCP(rtcpScratch, length: length)
                    length = 0
                }
                // The RTP time of "now", extrapolated from the last packet sent.
                let elapsed = now &- downTrack.lastSentAt
                let ticks = UInt32(truncatingIfNeeded: elapsed / 1000 * UInt64(downTrack.publication.clockRate) / 1_000_000)
                guard
                    let written = RTCPBuilder.senderReport(
                        ssrc: downTrack.outgoingSSRC, ntp: ntp, rtpTimestamp: downTrack.lastOutgoingTimestamp &+ ticks,
                        packetCount: downTrack.packetsSent, octetCount: downTrack.octetsSent, reportBlocks: [ReportBlock](),
                        into: UnsafeMutableRawBufferPointer(rebasing: rtcpScratch[length...]))
                else { continue }
                length += written
            }
            if length > 0 { transport.sendRTCP(rtcpScratch, length: length) }
        }
    }

    /// A sender report without report blocks, and how much of a compound packet they may fill
    /// (the RTCP scratch buffer also holds the SRTCP trailer).
    static let senderReportLength = 28
    static let maxCompoundLength = 1200

    /// Loudest participants over the last interval; the delegate hears only changes.
    private func updateSpeakers() {
        var levels: [String: Double] = [:]
        for participant in participants.values {
            for publication in participant.publications where publication.kind == .audio && !publication.muted {
                let level = publication.takeLevel()
                // About -50 dBov and below is background noise, not speech.
                if level > 0.003 { levels[participant.sid] = max(levels[participant.sid] ?? 0, level) }
            }
        }
        let speakers = levels.map { ActiveSpeaker(participantSid: $0.key, level: ($0.value * 100).rounded() / 100) }
            .sorted { $0.level > $1.level || ($0.level == $1.level && $0.participantSid < $1.participantSid) }
        guard speakers != lastSpeakers else { return }
        lastSpeakers = speakers
        delegate?.sfuRoom(self, speakersChanged: speakers)
    }

    // MARK: Transport events

    func transportDidConnect(_ participant: SFUParticipant, role: TransportRole) {
        if role == .subscriber {
            for downTrack in participant.downTracks where downTrack.publication.kind == .video { wantKeyframe(for: downTrack) }
        }
    }

    func transportDidClose(_ participant: SFUParticipant, role: TransportRole, reason: WebRTCTransport.CloseReason) {
        delegate?.sfuRoom(self, participant: participant.sid, transport: role, closed: reason)
    }

    public func randomSSRC() -> UInt32 {
        var value: UInt32 = 0
        while value == 0 { value = generator.next() }
        return value
    }
}
