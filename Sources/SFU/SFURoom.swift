import RTP
import WebRTC

/// What the room's control plane (the `Room` actor, on the same event loop) hears from media.
public protocol SFURoomDelegate: AnyObject {
    func sfuRoom(_ room: SFURoom, speakersChanged speakers: [ActiveSpeaker])
    func sfuRoom(_ room: SFURoom, participant sid: String, transport role: TransportRole, closed reason: WebRTCTransport.CloseReason)
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
    private var lastReportsAt: UInt64 = 0
    private var lastSpeakersAt: UInt64 = 0
    private var lastSpeakers: [ActiveSpeaker] = []
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
    }

    // MARK: Participants and transports

    public func participant(_ sid: String) -> SFUParticipant {
        port.loop.preconditionInEventLoop()
        if let existing = participants[sid] { return existing }
        let participant = SFUParticipant(sid: sid, room: self, rtcpSSRC: randomSSRC())
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

    public func publish(
        participant sid: String, trackSid: String, kind: MediaKind, mid: String, ssrc: UInt32?, codecs: [RTPCodec],
        extensions: RTPExtensionIDs, feedback: Publication.Feedback
    ) -> Publication {
        let participant = participant(sid)
        if let existing = participant.publications.first(where: { $0.mid == mid }) { return existing }
        let publication = Publication(
            trackSid: trackSid, participantSid: sid, kind: kind, mid: mid, ssrc: ssrc, codecs: codecs, extensions: extensions,
            feedback: feedback, historySize: configuration.packetHistory)
        participant.publications.append(publication)
        if publication.isNacked { nackedPublications += 1 }
        if let ssrc { participant.publicationsBySSRC[ssrc] = publication }
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
        participant.publicationsBySSRC = participant.publicationsBySSRC.filter { $0.value !== publication }
    }

    /// Every publication in the room, for a recorder that starts mid-meeting.
    public var publications: [Publication] { participants.values.flatMap(\.publications) }

    /// Asks the publisher of a video publication for a keyframe now (a recorder starting).
    public func requestKeyframe(_ publication: Publication) {
        requestKeyframe(publication, now: port.now(), force: true)
    }

    public func publication(trackSid: String) -> Publication? {
        for participant in participants.values {
            if let found = participant.publications.first(where: { $0.trackSid == trackSid }) { return found }
        }
        return nil
    }

    /// Starts sending `publication` to `subscriber` on m-line `mid` (the caller's subscriber
    /// offer); it flows once the answer is applied with `negotiate`.
    public func subscribe(_ subscriberSid: String, to publication: Publication, mid: String) -> DownTrack {
        let subscriber = participant(subscriberSid)
        if let existing = subscriber.downTracks.first(where: { $0.publication === publication }) { return existing }
        let transport = transport(for: subscriberSid, role: .subscriber)
        var ssrc = randomSSRC()
        while subscriber.downTracksBySSRC[ssrc] != nil { ssrc = randomSSRC() }
        let downTrack = DownTrack(publication: publication, subscriberSid: subscriberSid, mid: mid, outgoingSSRC: ssrc, transport: transport)
        subscriber.downTracks.append(downTrack)
        subscriber.downTracksBySSRC[ssrc] = downTrack
        publication.downTracks.append(downTrack)
        return downTrack
    }

    public func unsubscribe(_ downTrack: DownTrack) {
        // Idempotent: unpublishing already removed it when its publisher left.
        guard downTrack.publication.downTracks.contains(where: { $0 === downTrack }) else { return }
        downTrack.publication.downTracks.removeAll { $0 === downTrack }
        if let subscriber = participants[downTrack.subscriberSid] {
            subscriber.downTracks.removeAll { $0 === downTrack }
            subscriber.downTracksBySSRC[downTrack.outgoingSSRC] = nil
        }
        // A BYE tells the subscriber the stream ended (its m-line goes inactive in the next offer).
        if downTrack.transport.isConnected, let bye = RTCPBuilder.bye(ssrcs: [downTrack.outgoingSSRC]) {
            downTrack.transport.sendRTCP(bye)
        }
    }

    /// Applies the subscriber's answer for a down-track; video asks the publisher for a keyframe.
    public func negotiate(_ downTrack: DownTrack, codecs: [RTPCodec], extensions: RTPExtensionIDs) {
        let wasNegotiated = downTrack.isNegotiated
        downTrack.negotiate(codecs: codecs, extensions: extensions)
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
        if publication.kind == .video { requestKeyframe(publication, now: port.now(), force: true) }
    }

    // MARK: The packet path

    func forward(_ received: UnsafeRawBufferPointer, from participant: SFUParticipant) {
        guard let header = RTPHeader(received) else { return workerStatistics.counts.droppedMalformedRTP += 1 }
        guard let publication = participant.publication(for: header, packet: received) else {
            return workerStatistics.counts.droppedUnknownSSRC += 1
        }
        let now = port.now()
        publication.noteReceived(header, packet: received, now: now)
        tap?.tap(self, received: received, header: header, from: publication, now: now)
        guard !publication.muted, !publication.downTracks.isEmpty, received.count <= Self.maxPacket else { return }
        let downTracks = publication.downTracks
        prefetchSendingState(of: downTracks)
        var forwarded: UInt64 = 0
        for downTrack in downTracks where downTrack.isActive {
            if downTrack.send(received, header: header, now: now) { forwarded += 1 }
        }
        if forwarded > 0 {
            workerStatistics.counts.forwardedPackets += forwarded
            workerStatistics.counts.recordForwardingDelay(nanoseconds: port.now() &- now)
        }
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
                if let report = RTCPSenderReport(packet), let publication = participant.publicationsBySSRC[report.ssrc] {
                    publication.statistics?.senderReportReceived(ntp: report.ntp, arrivalNanoseconds: configuration.wallClockNanoseconds())
                }
            case .subscriber:
                handleSubscriberFeedback(packet, from: participant, now: now)
            }
        }
    }

    private func handleSubscriberFeedback(_ packet: RTCPPacket, from subscriber: SFUParticipant, now: UInt64) {
        if let nack = RTCPGenericNack(packet) {
            workerStatistics.counts.nacksReceived += 1
            guard let downTrack = subscriber.downTracksBySSRC[nack.mediaSSRC], let history = downTrack.publication.history else { return }
            nack.forEachLostSequenceNumber { outgoing in
                guard let incoming = downTrack.rewriter.incomingSequence(forOutgoing: outgoing) else {
                    workerStatistics.counts.retransmissionMisses += 1
                    return
                }
                let resent: Bool? = history.withPacket(sequenceNumber: incoming) { stored in
                    guard let header = RTPHeader(stored) else { return false }
                    return downTrack.send(stored, header: header, now: now, retransmittedAs: outgoing)
                }
                if resent == true { workerStatistics.counts.retransmissions += 1 } else { workerStatistics.counts.retransmissionMisses += 1 }
            }
        } else if let pli = RTCPPictureLossIndication(packet) {
            workerStatistics.counts.plisReceived += 1
            if let downTrack = subscriber.downTracksBySSRC[pli.mediaSSRC] { requestKeyframe(downTrack.publication, now: now) }
        } else if let fir = RTCPFullIntraRequest(packet) {
            workerStatistics.counts.plisReceived += 1
            for entry in fir.entries {
                if let downTrack = subscriber.downTracksBySSRC[entry.ssrc] { requestKeyframe(downTrack.publication, now: now) }
            }
        } else if let remb = RTCPREMB(packet) {
            for ssrc in remb.ssrcs { subscriber.downTracksBySSRC[ssrc]?.receiverEstimate = remb.bitrate }
        } else if packet.packetType == .receiverReport {
            workerStatistics.counts.receiverReportsReceived += 1
        }
    }

    /// PLI (or FIR when the publisher did not offer PLI), at most once per `pliInterval`.
    /// False when the publisher cannot be asked yet (its transport is not connected): the
    /// caller keeps the request for later.
    @discardableResult
    func requestKeyframe(_ publication: Publication, now: UInt64, force: Bool = false) -> Bool {
        guard publication.kind == .video, let ssrc = publication.ssrc,
            let publisher = participants[publication.participantSid], let transport = publisher.publisher, transport.isConnected
        else { return false }
        guard force || publication.lastKeyframeRequest == 0 || now &- publication.lastKeyframeRequest >= configuration.pliIntervalNanoseconds
        else { return true }
        publication.lastKeyframeRequest = now
        let length: Int?
        if publication.feedback.pli || !publication.feedback.fir {
            length = RTCPBuilder.pictureLossIndication(senderSSRC: publisher.rtcpSSRC, mediaSSRC: ssrc, into: rtcpScratch)
            workerStatistics.counts.plisSent += 1
        } else {
            publication.keyframeRequestSequence &+= 1
            length = RTCPBuilder.fullIntraRequest(
                senderSSRC: publisher.rtcpSSRC, entries: [FIREntry(ssrc: ssrc, sequenceNumber: publication.keyframeRequestSequence)],
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
                    if downTrack.isActive, requestKeyframe(downTrack.publication, now: now, force: true) {
                        downTrack.keyframeRequested = false
                    } else {
                        stillPending = true
                    }
                }
            }
            keyframeRequestsPending = stillPending
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

    /// NACKs upstream for gaps in a publisher's video.
    private func sendNacks(for participant: SFUParticipant, now: UInt64) {
        guard let transport = participant.publisher, transport.isConnected else { return }
        for publication in participant.publications where publication.isNacked {
            guard let ssrc = publication.ssrc else { continue }
            let due = publication.nacks.dueNacks(nowNanoseconds: Int64(truncatingIfNeeded: now), retryIntervalNanoseconds: configuration.nackRetryNanoseconds)
            guard !due.isEmpty,
                let length = RTCPBuilder.genericNack(senderSSRC: participant.rtcpSSRC, mediaSSRC: ssrc, lostSequenceNumbers: due, into: rtcpScratch)
            else { continue }
            workerStatistics.counts.nacksSent += 1
            transport.sendRTCP(rtcpScratch, length: length)
        }
    }

    /// Receiver reports and REMB to a publisher; sender reports to a subscriber.
    private func sendReports(to participant: SFUParticipant, now: UInt64) {
        let wall = configuration.wallClockNanoseconds()
        if let transport = participant.publisher, transport.isConnected {
            var blocks: [ReportBlock] = []
            for publication in participant.publications where publication.statistics != nil {
                if let block = publication.statistics?.makeReportBlock(nowNanoseconds: wall) { blocks.append(block) }
            }
            if !blocks.isEmpty, let length = RTCPBuilder.receiverReport(ssrc: participant.rtcpSSRC, reportBlocks: blocks.prefix(31), into: rtcpScratch) {
                transport.sendRTCP(rtcpScratch, length: length)
            }
            for publication in participant.publications where publication.kind == .video && publication.feedback.remb {
                guard let ssrc = publication.ssrc else { continue }
                let estimates = publication.downTracks.compactMap(\.receiverEstimate)
                let bitrate = min(configuration.maxBitrate, estimates.min() ?? configuration.maxBitrate)
                if let length = RTCPBuilder.remb(senderSSRC: participant.rtcpSSRC, bitrate: bitrate, ssrcs: [ssrc], into: rtcpScratch) {
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

    private func randomSSRC() -> UInt32 {
        var value: UInt32 = 0
        while value == 0 { value = generator.next() }
        return value
    }
}
