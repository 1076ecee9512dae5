@testable import StreamAllocation
import Testing

/// One update each: where tracks land for an estimate, a limit, audio, priorities.
struct PlacementTests {
    func place(_ tracks: [SubscribedTrack], estimate: Int) -> Allocation {
        var allocator = StreamAllocator()
        return allocator.update(estimate: estimate, tracks: tracks, now: 0)
    }

    @Test func aLowEstimateGetsTheLowLayerAndAProbeGoalForTheNext() {
        let allocation = place([.video(id: "cam", layers: camera())], estimate: 400_000)
        #expect(allocation["cam"]?.layer == q)
        #expect(allocation["cam"]?.bitrate == 150_000)
        #expect(allocation.videoBitrate == 150_000)
        // h needs 500 kbit/s, plus the 15 % margin.
        #expect(allocation.probeGoal == 575_000)
    }

    @Test func aHighEstimateGetsTheTopLayerAndNoProbeGoal() {
        let allocation = place([.video(id: "cam", layers: camera())], estimate: 3_000_000)
        #expect(allocation["cam"]?.layer == f)
        #expect(allocation.probeGoal == nil)
    }

    @Test func aNewTrackIsPlacedWithTheMargin() {
        // h (500 kbit/s) fits 560 kbit/s but not with 15 % to spare.
        #expect(place([.video(id: "cam", layers: camera())], estimate: 560_000)["cam"]?.layer == q)
        #expect(place([.video(id: "cam", layers: camera())], estimate: 580_000)["cam"]?.layer == h)
    }

    @Test func temporalLayersOfTheLowestLayerGoBeforePausing() {
        let track = SubscribedTrack.video(id: "cam", layers: camera())
        #expect(place([track], estimate: 160_000)["cam"]?.layer == LayerSelection(spatial: 0, temporal: 1))
        #expect(place([track], estimate: 80_000)["cam"]?.layer == LayerSelection(spatial: 0, temporal: 0))
        let paused = place([track], estimate: 60_000)
        #expect(paused["cam"]?.decision == .paused(.bandwidth))
        #expect(paused["cam"]?.bitrate == 0)
        #expect(paused.probeGoal == 69_000)
    }

    @Test func qualityLimitsCapTheLayer() {
        let estimate = 5_000_000
        #expect(place([.video(id: "cam", limit: .quality(.low), layers: camera())], estimate: estimate)["cam"]?.layer == q)
        #expect(place([.video(id: "cam", limit: .quality(.medium), layers: camera())], estimate: estimate)["cam"]?.layer == h)
        #expect(place([.video(id: "cam", limit: .quality(.high), layers: camera())], estimate: estimate)["cam"]?.layer == f)
        // A publisher with two layers: medium is its top.
        let two = Array(camera().prefix(2))
        #expect(place([.video(id: "cam", limit: .quality(.high), layers: two)], estimate: estimate)["cam"]?.layer == h)
        // At its limit, nothing to probe for.
        #expect(place([.video(id: "cam", limit: .quality(.medium), layers: camera())], estimate: estimate).probeGoal == nil)
    }

    @Test func tileLimitsPickTheSmallestLayerThatCoversTheTile() {
        func layer(forTile width: Int, _ height: Int, layers: [PublishedLayer] = camera()) -> LayerSelection? {
            place([.video(id: "cam", limit: .tile(width: width, height: height), layers: layers)], estimate: 5_000_000)["cam"]?.layer
        }
        #expect(layer(forTile: 160, 90) == q)
        #expect(layer(forTile: 240, 135) == q)
        #expect(layer(forTile: 241, 135) == h)
        #expect(layer(forTile: 480, 270) == h)
        #expect(layer(forTile: 480, 300) == f)
        #expect(layer(forTile: 1920, 1080) == f)  // none covers: the top
        let unknownSizes = camera().map { PublishedLayer(isActive: $0.isActive, temporalBitrates: $0.temporalBitrates) }
        #expect(layer(forTile: 160, 90, layers: unknownSizes) == f)
    }

    @Test func audioIsReservedFirstAndNeverPaused() {
        let audio: [SubscribedTrack] = [.audio(id: "a1", bitrate: 40_000), .audio(id: "a2", bitrate: 40_000)]
        let video = SubscribedTrack.video(id: "cam", layers: camera())
        // 200 kbit/s fits q with the margin; 120 kbit/s left after audio fits only T0+T1.
        #expect(place([video], estimate: 200_000)["cam"]?.layer == q)
        let shared = place(audio + [video], estimate: 200_000)
        #expect(shared.audioBitrate == 80_000)
        #expect(shared["cam"]?.layer == LayerSelection(spatial: 0, temporal: 1))
        // Less than the audio needs: video pauses, audio is still counted (and forwarded).
        let starved = place(audio + [video], estimate: 50_000)
        #expect(starved.audioBitrate == 80_000)
        #expect(starved["cam"]?.decision == .paused(.bandwidth))
        #expect(starved.video.count == 1)
        // Unmeasured audio counts the default; unwanted audio counts nothing.
        let unmeasured = place([.audio(id: "a1"), .audio(id: "a2", bitrate: 40_000, isWanted: false), video], estimate: 1_000_000)
        #expect(unmeasured.audioBitrate == StreamAllocator.Configuration().defaultAudioBitrate)
    }

    @Test func screenShareIsServedFirstThenActiveSpeakersThenTheRest() {
        let tracks: [SubscribedTrack] = [
            .video(id: "b-other", layers: camera()),
            .video(id: "a-other", layers: camera()),
            .video(id: "speaker", priority: .activeSpeaker, layers: camera()),
            .video(id: "screen", priority: .screenShare, layers: camera()),
        ]
        // Enough for f of one track, h of another and q of the rest, with the margin.
        let allocation = place(tracks, estimate: 2_800_000)
        #expect(allocation["screen"]?.layer == f)
        #expect(allocation["speaker"]?.layer == h)
        #expect(allocation["a-other"]?.layer == q)
        #expect(allocation["b-other"]?.layer == q)
        #expect(Double(allocation.videoBitrate) * 1.15 <= 2_800_000)
    }

    @Test func everyTrackGetsItsLowestLayerBeforeAnyIsRaised() {
        let tracks: [SubscribedTrack] = [
            .video(id: "screen", priority: .screenShare, layers: camera()),
            .video(id: "cam1", layers: camera()),
            .video(id: "cam2", layers: camera()),
        ]
        // 3 x 60 kbit/s (T0) fits; the screen share then takes what is left, the cameras keep T0.
        let allocation = place(tracks, estimate: 330_000)
        #expect(allocation["cam1"]?.layer == LayerSelection(spatial: 0, temporal: 0))
        #expect(allocation["cam2"]?.layer == LayerSelection(spatial: 0, temporal: 0))
        #expect(allocation["screen"]?.layer == q)
    }

    @Test func tracksOfOneClassAreRaisedInTurn() {
        let tracks: [SubscribedTrack] = (1...3).map { .video(id: "cam\($0)", layers: camera()) }
        // h for all three needs 1.5 Mbit/s (1.725 with the margin); 1.4 Mbit/s gives two h, one q.
        let allocation = place(tracks, estimate: 1_400_000)
        #expect(allocation["cam1"]?.layer == h)
        #expect(allocation["cam2"]?.layer == h)
        #expect(allocation["cam3"]?.layer == q)
    }

    @Test func theOrderTracksAreListedInDoesNotMatter() {
        let tracks: [SubscribedTrack] = [
            .video(id: "screen", priority: .screenShare, layers: camera()),
            .audio(id: "mic", bitrate: 30_000),
            .video(id: "cam1", layers: camera()),
            .video(id: "cam2", priority: .activeSpeaker, layers: camera()),
            .video(id: "cam3", layers: camera(full: [120_000, 450_000, 1_300_000])),
        ]
        let reference = place(tracks, estimate: 1_900_000)
        let orders = tracks.indices.map { Array(tracks[$0...] + tracks[..<$0]) } + [tracks.reversed()]
        for order in orders {
            let shuffled = place(order, estimate: 1_900_000)
            for track in tracks { #expect(shuffled[track.id] == reference[track.id]) }
            #expect(shuffled.videoBitrate == reference.videoBitrate)
            #expect(shuffled.probeGoal == reference.probeGoal)
        }
    }

    @Test func inactivePublisherLayersAreSkipped() {
        let noH = camera(active: [true, false, true])
        #expect(place([.video(id: "cam", layers: noH)], estimate: 1_000_000)["cam"]?.layer == q)
        #expect(place([.video(id: "cam", layers: noH)], estimate: 3_000_000)["cam"]?.layer == f)
        let noQ = camera(active: [false, true, true])
        // Frame rate is given up on the lowest layer sent, whichever that is.
        #expect(place([.video(id: "cam", layers: noQ)], estimate: 300_000)["cam"]?.layer == LayerSelection(spatial: 1, temporal: 0))
        let none = place([.video(id: "cam", layers: camera(active: [false, false, false]))], estimate: 3_000_000)
        #expect(none["cam"]?.decision == .paused(.noActiveLayer))
        // Only f sent, but the subscriber wants at most q: nothing to forward.
        let aboveLimit = camera(active: [false, false, true])
        let limited = place([.video(id: "cam", limit: .quality(.low), layers: aboveLimit)], estimate: 3_000_000)
        #expect(limited["cam"]?.decision == .paused(.noActiveLayer))
        #expect(limited["cam"]?.neededSpatialLayer == 0)
    }

    @Test func unwantedTracksGetNothing() {
        let allocation = place([.video(id: "cam", layers: camera(), isWanted: false)], estimate: 3_000_000)
        #expect(allocation["cam"]?.decision == .paused(.notWanted))
        #expect(allocation["cam"]?.neededSpatialLayer == nil)
        #expect(allocation.videoBitrate == 0)
        #expect(allocation.probeGoal == nil)
    }

    @Test func unmeasuredLayersAreCountedAtADefaultForTheirSize() {
        let fresh = camera(full: [0, 0, 0])
        // 240x135 ~ 150 kbit/s, 480x270 ~ 250 kbit/s, 960x540 ~ 1.2 Mbit/s.
        #expect(LayerLadder.bitrates(of: fresh[0], spatial: 0) == [60_000, 90_000, 150_000])
        #expect(LayerLadder.bitrates(of: fresh[2], spatial: 2) == [480_000, 720_000, 1_200_000])
        // A measured full rate gives the shares below it.
        let partly = PublishedLayer(width: 960, height: 540, temporalBitrates: [0, 0, 1_600_000])
        #expect(LayerLadder.bitrates(of: partly, spatial: 2) == [640_000, 960_000, 1_600_000])
        #expect(place([.video(id: "cam", layers: fresh)], estimate: 400_000)["cam"]?.layer == h)
        // Neither size nor rate known: by position.
        let bare = PublishedLayer(temporalBitrates: [0])
        #expect(LayerLadder.bitrates(of: bare, spatial: 1) == [500_000])
    }

    @Test func aLayerMeasuredCheaperThanTheOneBelowCountsAsMuch() {
        // A noisy measurement must not make going up look like it frees bandwidth.
        var layers = camera()
        layers[1].temporalBitrates = [40_000, 60_000, 100_000]
        let ladder = LayerLadder(layers: layers, limit: .quality(.high))
        #expect(ladder.steps.map(\.bitrate) == [60_000, 90_000, 150_000, 150_000, 1_600_000])
    }
}
