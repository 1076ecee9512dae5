import RTP
import StreamAllocation

extension SFURoom {
    /// How often a down-track waiting to switch layers asks for the target's keyframe again.
    static let switchKeyframeRetryNanoseconds: UInt64 = 1_000_000_000

    /// Chooses each of a subscriber's video tracks' layers from its bandwidth (its own
    /// `StreamAllocator`: priorities, limits, hysteresis), asks publishers for the keyframes the
    /// switches wait for, and tells the room which tracks paused or resumed.
    func allocate(_ subscriber: SFUParticipant, now: UInt64) {
        subscriber.bandwidth.updateReceiverTrial(now: now)
        let estimate = Int(subscriber.bandwidth.available(fallback: UInt64(configuration.maxSubscriberBitrate)))
        let speakers = Set(lastSpeakerSids)
        var tracks: [SubscribedTrack] = []
        var downTracksByID: [String: DownTrack] = [:]
        for downTrack in subscriber.downTracks where downTrack.isNegotiated {
            let publication = downTrack.publication
            // A continuous stream keeps its allocation (and hysteresis) across sources.
            let id = downTrack.isContinuous ? "mid:" + downTrack.mid : publication.trackSid
            downTracksByID[id] = downTrack
            switch publication.kind {
            case .audio:
                tracks.append(.audio(id: id, bitrate: publication.layers[0].bitrates.last ?? 0, isWanted: !publication.muted))
            case .video:
                let priority: TrackPriority =
                    publication.isScreenShare ? .screenShare : speakers.contains(publication.participantSid) ? .activeSpeaker : .other
                let layers = publication.layers.map { layer in
                    StreamAllocation.PublishedLayer(
                        width: layer.width, height: layer.height, isActive: layer.isActive(now: now), temporalBitrates: layer.bitrates)
                }
                tracks.append(.video(id: id, priority: priority, limit: allocationLimit(downTrack.limit), layers: layers, isWanted: !publication.muted))
            }
        }
        let allocation = subscriber.allocator.update(estimate: estimate, tracks: tracks, now: Int64(now / 1000))
        subscriber.bandwidth.probeGoal = allocation.probeGoal
        var forwardsVideo = false
        subscriber.bandwidth.want(bitrate: allocation.probeGoal ?? (allocation.audioBitrate + allocation.videoBitrate))
        for video in allocation.video {
            guard let downTrack = downTracksByID[video.id] else { continue }
            downTrack.neededSpatialLayer = video.neededSpatialLayer
            switch video.decision {
            case .forward(let selection): apply(selection.spatial, temporal: selection.temporal, to: downTrack, now: now)
            case .paused(let reason): apply(-1, temporal: 0, to: downTrack, now: now, pausedForBandwidth: reason == .bandwidth)
            }
            if downTrack.currentLayer >= 0, downTrack.canSendPadding { forwardsVideo = true }
            // The subscriber hears which layer it gets once the switch happened (off the packet path).
            if downTrack.publication.isSimulcast, downTrack.currentLayer >= 0, downTrack.currentLayer != downTrack.reportedLayer {
                downTrack.reportedLayer = downTrack.currentLayer
                delegate?.sfuRoom(self, downTrack: downTrack, switchedToLayer: downTrack.currentLayer)
            }
            // A switch still waiting for its keyframe asks again, as a receiver would: the
            // first request may have gone before the subscriber could take the keyframe.
            if downTrack.isActive, downTrack.targetLayer >= 0, downTrack.currentLayer != downTrack.targetLayer,
                now &- downTrack.lastKeyframeAsked >= Self.switchKeyframeRetryNanoseconds
            {
                downTrack.lastKeyframeAsked = now
                requestKeyframe(downTrack.publication, layer: downTrack.targetLayer, now: now)
            }
        }
        // Probes copy media while some video is forwarded, else they are padding: clusters sized to it.
        subscriber.bandwidth.probePacketSize = forwardsVideo ? nil : PaddingPacket.headerLength + PaddingPacket.maxPadding
    }

    private func allocationLimit(_ limit: SubscriptionLimit) -> LayerLimit {
        if limit.maxWidth != nil || limit.maxHeight != nil { return .tile(width: limit.maxWidth ?? 0, height: limit.maxHeight ?? 0) }
        switch limit.quality {
        case .low: return .quality(.low)
        case .medium: return .quality(.medium)
        case .high: return .quality(.high)
        }
    }

    /// Points a down-track at `layer` (-1 stops it); a new target asks for its keyframe.
    func apply(_ layer: Int, temporal: Int, to downTrack: DownTrack, now: UInt64, pausedForBandwidth: Bool = false) {
        let wasPaused = downTrack.isPausedForBandwidth
        let changed = layer != downTrack.targetLayer
        downTrack.setTarget(layer: layer, temporal: temporal)
        downTrack.isPausedForBandwidth = layer < 0 && pausedForBandwidth
        if changed, layer >= 0, layer != downTrack.currentLayer {
            downTrack.lastKeyframeAsked = now
            if !requestKeyframe(downTrack.publication, layer: layer, now: now) { wantKeyframe(for: downTrack) }
        }
        if wasPaused != downTrack.isPausedForBandwidth {
            if downTrack.isPausedForBandwidth { workerStatistics.counts.tracksPaused += 1 }
            delegate?.sfuRoom(self, downTrack: downTrack, pausedForBandwidth: downTrack.isPausedForBandwidth)
        }
    }

    /// Dynacast: the simulcast layers some subscriber needs (its layer and the next one up, so an
    /// upgrade has something to switch to) or the recorder takes (the top). A layer no longer
    /// needed is turned off at the publisher after `layerIdle`; one needed again at once.
    func updateNeededLayers(now: UInt64) {
        for participant in participants.values {
            for publication in participant.publications where publication.isSimulcast {
                var needs = publication.downTracks.compactMap(\.neededSpatialLayer)
                if tap != nil { needs.append(publication.layers.count - 1) }
                let needed = Dynacast.layersToSend(needs: needs, layerCount: publication.layers.count).union([0])
                guard needed != publication.requestedLayers else {
                    publication.layersUnneededSince = nil
                    continue
                }
                if needed.isSubset(of: publication.requestedLayers) {
                    let since = publication.layersUnneededSince ?? now
                    publication.layersUnneededSince = since
                    guard now &- since >= configuration.layerIdleNanoseconds else { continue }
                }
                publication.layersUnneededSince = nil
                publication.requestedLayers = needed
                delegate?.sfuRoom(self, publication: publication, neededLayers: publication.layers.filter { needed.contains($0.index) })
            }
        }
    }

    /// Sends the probe bytes due to a subscriber that gives transport-wide feedback: RTX copies of
    /// the newest packets of one of its video tracks (a duplicate the receiver drops, but real
    /// bytes through its link), counted towards the probe like any packet it is sent. With none
    /// of its video forwarded (all paused for bandwidth) there is nothing to copy: padding-only
    /// packets on a paused track's RTX stream probe instead (and make up what copies could not),
    /// or its estimate, fed by audio alone, could never climb back to the lowest layer.
    func sendProbe(to subscriber: SFUParticipant, now: UInt64) {
        guard subscriber.subscriber?.isConnected == true else { return }
        var due = subscriber.bandwidth.probeBytesDue(now: now)
        guard due > 0 else { return }
        var packets = 0
        var sentInAll = 0
        defer {
            subscriber.bandwidth.probeBytesSent += UInt64(sentInAll)
            workerStatistics.counts.probeBytesSent += UInt64(sentInAll)
        }
        let forwarded = subscriber.downTracks.first {
            $0.publication.kind == .video && $0.currentLayer >= 0 && $0.canSendPadding
        }
        if let downTrack = forwarded, let history = downTrack.publication.layers[downTrack.currentLayer].history {
            var outgoing = downTrack.rewriter.lastOutgoingSequence
            while due > 0, packets < Self.maxProbePacketsPerTick {
                packets += 1
                defer { outgoing &-= 1 }
                guard let incoming = downTrack.rewriter.incomingSequence(forOutgoing: outgoing) else { break }
                let sent = history.withPacket(sequenceNumber: incoming) { stored -> Int in
                    guard let header = RTPHeader(stored) else { return 0 }
                    let frame = frameInfo(stored, header: header, publication: downTrack.publication)
                    return downTrack.send(stored, header: header, frame: frame, now: now, retransmittedAs: outgoing, isProbe: true)
                        ? stored.count : 0
                } ?? 0
                due -= sent
                sentInAll += sent
            }
        }
        guard due > 0, let padded = forwarded ?? subscriber.downTracks.first(where: { $0.publication.kind == .video && $0.canSendPadding })
        else { return }
        while due > 0, packets < Self.maxProbePacketsPerTick {
            packets += 1
            let sent = padded.sendPadding(min(due, PaddingPacket.maxPadding), now: now)
            guard sent > 0 else { break }
            due -= sent
            sentInAll += sent
        }
    }

    /// The most packets one tick sends to probe (the pacer stretches a cluster that needs more).
    static let maxProbePacketsPerTick = 64

    /// What a subscriber asked for of one of its tracks; the next allocation honours it.
    public func setLimit(_ limit: SubscriptionLimit, for downTrack: DownTrack) {
        port.loop.preconditionInEventLoop()
        downTrack.limit = limit
        lastAllocationAt = 0
    }
}
