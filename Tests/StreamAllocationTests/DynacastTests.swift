@testable import StreamAllocation
import Testing

struct DynacastTests {
    @Test func theLayersToSendAreTheNeededOnesAndTheLowest() {
        #expect(Dynacast.layersToSend(needs: [0, 1, 1], layerCount: 3) == [0, 1])
        #expect(Dynacast.layersToSend(needs: [2], layerCount: 3) == [0, 2])  // a recorder of the top layer alone
        #expect(Dynacast.layersToSend(needs: [], layerCount: 3) == [])
        #expect(Dynacast.layersToSend(needs: [5], layerCount: 3) == [0, 2])
        #expect(Dynacast.layersToSend(needs: [1], layerCount: 1) == [0])
        #expect(Dynacast.layersToSend(needs: [1], layerCount: 0) == [])
    }

    @Test func eachSubscriberNeedsItsLayerAndTheNextOneUp() {
        func needed(_ track: SubscribedTrack, estimate: Int) -> Int?? {
            var allocator = StreamAllocator()
            return allocator.update(estimate: estimate, tracks: [track], now: 0)[track.id]?.neededSpatialLayer
        }
        #expect(needed(.video(id: "cam", layers: camera()), estimate: 400_000) == 1)
        #expect(needed(.video(id: "cam", layers: camera()), estimate: 3_000_000) == 2)
        #expect(needed(.video(id: "cam", limit: .quality(.low), layers: camera()), estimate: 3_000_000) == 0)
        #expect(needed(.video(id: "cam", limit: .tile(width: 480, height: 270), layers: camera()), estimate: 400_000) == 1)
        #expect(needed(.video(id: "cam", layers: camera()), estimate: 10_000) == 0)  // paused: to resume
        #expect(needed(.video(id: "cam", layers: camera(), isWanted: false), estimate: 3_000_000) == .some(nil))
        // The publisher dropped h on its own: the next layer up is f.
        #expect(needed(.video(id: "cam", layers: camera(active: [true, false, true])), estimate: 400_000) == 2)
        // Nothing sent: ask for the lowest.
        #expect(needed(.video(id: "cam", layers: camera(active: [false, false, false])), estimate: 3_000_000) == 0)
    }

    /// Two subscribers and a publisher that sends what dynacast asks for, a tick later: f is
    /// off while no one can take it, and comes back when a subscriber's estimate allows it.
    @Test func layersTurnOffAndBackOnWithTheSubscribers() {
        var active = [true, true, true]
        var subscribers = [StreamAllocator(), StreamAllocator()]
        var fSentAt: [Int64] = []
        var now: Int64 = 0
        while now < 20 * second {
            let track = SubscribedTrack.video(id: "cam", layers: camera(active: active))
            let estimates = [400_000, now < 5 * second ? 400_000 : 3_000_000]
            let allocations = subscribers.indices.map { subscribers[$0].update(estimate: estimates[$0], tracks: [track], now: now) }
            let send = Dynacast.layersToSend(needs: allocations.compactMap { $0["cam"]?.neededSpatialLayer }, layerCount: 3)
            active = (0..<3).map { send.contains($0) }
            if active[2] { fSentAt.append(now) }
            now += tick
        }
        // Both at q until 5 s: q and h are sent (h for the next upgrade), f is not.
        #expect(fSentAt.first == 5 * second + 1_500_000)
        // The second goes to h after the hold, then asks for f, then gets it after another hold.
        #expect(subscribers[0].allocation["cam"]?.layer == q)
        #expect(subscribers[1].allocation["cam"]?.layer == f)
        #expect(active == [true, true, true])
    }
}
