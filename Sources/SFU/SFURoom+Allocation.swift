import RTP

extension SFURoom {
    /// Chooses each of a subscriber's video tracks' layers from its bandwidth, asks publishers for
    /// the keyframes the switches wait for, and tells the room which tracks paused or resumed.
    func allocate(_ subscriber: SFUParticipant, now: UInt64) {
        let available = Int(subscriber.bandwidth.available(fallback: UInt64(configuration.maxSubscriberBitrate)))
        var budget = available
        for downTrack in subscriber.downTracks where downTrack.publication.kind == .audio && downTrack.isNegotiated {
            budget -= max(downTrack.publication.layers[0].bitrates.last ?? 0, 48_000)
        }
        let videos = subscriber.downTracks.filter { $0.publication.kind == .video && $0.isNegotiated && !$0.publication.muted }
        let speakers = Set(lastSpeakerSids)
        let ordered = videos.sorted { rank($0, speakers: speakers) < rank($1, speakers: speakers) }
        for downTrack in ordered {
            let choice = chooseLayer(for: downTrack, budget: budget, now: now)
            budget -= choice.bitrate
            apply(choice.layer, temporal: 2, to: downTrack, now: now)
        }
    }

    private func rank(_ downTrack: DownTrack, speakers: Set<String>) -> Int {
        if downTrack.publication.isScreenShare { return 0 }
        return speakers.contains(downTrack.publication.participantSid) ? 1 : 2
    }

    /// The highest layer within the subscriber's limit whose bitrate fits; -1 when none does.
    private func chooseLayer(for downTrack: DownTrack, budget: Int, now: UInt64) -> (layer: Int, bitrate: Int) {
        let publication = downTrack.publication
        let limit = limitLayer(downTrack)
        var best = (layer: -1, bitrate: 0)
        for layer in publication.layers where layer.index <= limit {
            let available = layer.isActive(now: now) || !publication.requestedLayers.contains(layer.index)
            guard available || !publication.isSimulcast else { continue }
            let bitrate = layer.bitrates.last.map { $0 > 0 ? $0 : Self.assumedBitrate(layer) } ?? Self.assumedBitrate(layer)
            // Moving up needs a margin over what the layer takes, so a noisy estimate does not
            // flap between layers; staying needs only that it fits.
            let margin = layer.index > downTrack.currentLayer ? bitrate / 5 : 0
            if bitrate + margin <= budget || best.layer < 0 && layer.index == 0 && !publication.isSimulcast {
                best = (layer.index, bitrate)
            }
        }
        return best
    }

    /// What a layer not yet measured is assumed to take, from its place in the simulcast.
    static func assumedBitrate(_ layer: PublishedLayer) -> Int {
        [150_000, 500_000, 1_700_000][min(layer.index, 2)]
    }

    /// The highest spatial layer a subscriber's limit allows.
    func limitLayer(_ downTrack: DownTrack) -> Int {
        let publication = downTrack.publication
        let top = publication.layers.count - 1
        var limit = min(downTrack.limit.quality.maxSpatialLayer, top)
        if downTrack.limit.maxWidth != nil || downTrack.limit.maxHeight != nil {
            // The smallest layer that covers the tile; the top when none does (or sizes are unknown).
            let wantedWidth = downTrack.limit.maxWidth ?? 0
            let wantedHeight = downTrack.limit.maxHeight ?? 0
            let covering = publication.layers.first { layer in
                guard let width = layer.width, let height = layer.height else { return false }
                return width >= wantedWidth && height >= wantedHeight
            }
            limit = min(limit, covering?.index ?? top)
        }
        return limit
    }

    /// Points a down-track at `layer` (-1 pauses it); a new target asks for its keyframe.
    func apply(_ layer: Int, temporal: Int, to downTrack: DownTrack, now: UInt64) {
        let wasPaused = downTrack.isPausedForBandwidth
        let changed = layer != downTrack.targetLayer
        downTrack.setTarget(layer: layer, temporal: temporal)
        downTrack.isPausedForBandwidth = layer < 0
        if changed, layer >= 0, layer != downTrack.currentLayer {
            if !requestKeyframe(downTrack.publication, layer: layer, now: now) { wantKeyframe(for: downTrack) }
        }
        if wasPaused != downTrack.isPausedForBandwidth {
            workerStatistics.counts.tracksPaused += downTrack.isPausedForBandwidth ? 1 : 0
            delegate?.sfuRoom(self, downTrack: downTrack, pausedForBandwidth: downTrack.isPausedForBandwidth)
        }
    }

    /// Dynacast: a simulcast layer no subscriber (and no recorder) needs is turned off at the
    /// publisher after `layerIdle`; one that someone needs again is turned on at once. The
    /// lowest layer always flows, so a new subscriber has something to start from.
    func updateNeededLayers(now: UInt64) {
        for participant in participants.values {
            for publication in participant.publications where publication.isSimulcast {
                var needed: Set<Int> = [0]
                for downTrack in publication.downTracks where downTrack.targetLayer >= 0 { needed.insert(downTrack.targetLayer) }
                if tap != nil { needed.insert(publication.layers.count - 1) }
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
}

extension SFURoom {
    /// What a subscriber asked for of one of its tracks; the next allocation honours it.
    public func setLimit(_ limit: SubscriptionLimit, for downTrack: DownTrack) {
        port.loop.preconditionInEventLoop()
        downTrack.limit = limit
        lastAllocationAt = 0
    }
}
