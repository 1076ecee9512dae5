import Placement
import Testing

@Suite struct RoomPlacementTests {
    let placement = RoomPlacement(maxCPUFraction: 0.85)

    func node(_ name: String, _ participants: Int, max: Int = 100, cpu: Double = 0.1, cores: Int = 2, draining: Bool = false) -> NodeLoad {
        NodeLoad(name: name, participants: participants, maxParticipants: max, cpu: cpu, cores: cores, draining: draining)
    }

    @Test func theJoiningNodeKeepsTheRoomWhileItHasRoom() {
        let joining = node("a", 99)
        #expect(placement.choose(joining: joining, nodes: [joining, node("b", 0), node("c", 5)]) == "a")
    }

    @Test func pastItsCapTheLeastLoadedNodeWithRoomTakesIt() {
        let joining = node("a", 100)
        #expect(placement.choose(joining: joining, nodes: [joining, node("b", 40), node("c", 10, max: 20)]) == "b")
        // c is at half its cap, b at 40 %: b is less loaded even with more people.
        #expect(placement.choose(joining: joining, nodes: [node("b", 40), node("c", 11, max: 20)]) == "b")
    }

    @Test func cpuPastTheCeilingCountsAsFull() {
        let busy = node("a", 1, cpu: 1.8)  // 0.9 of 2 cores, over 0.85
        #expect(!placement.hasRoom(busy))
        #expect(placement.choose(joining: busy, nodes: [node("b", 30, cpu: 0.2)]) == "b")
        #expect(RoomPlacement(maxCPUFraction: 0).choose(joining: busy, nodes: [node("b", 30)]) == "a")
    }

    @Test func noCapMeansOnlyCPUAndDrainingSendARoomAway() {
        let joining = node("a", 10_000, max: 0)
        #expect(placement.choose(joining: joining, nodes: [node("b", 0, max: 0)]) == "a")
    }

    @Test func aDrainingNodeSendsEveryNewRoomAway() {
        let joining = node("a", 0, draining: true)
        #expect(placement.choose(joining: joining, nodes: [joining, node("b", 70), node("c", 20)]) == "c")
        #expect(placement.choose(joining: joining, nodes: [node("b", 5, draining: true)]) == nil)
    }

    @Test func aFullClusterStillPlacesOnTheLeastLoaded() {
        let joining = node("a", 150)
        #expect(placement.choose(joining: joining, nodes: [node("b", 120), node("c", 130)]) == "b")
        #expect(placement.choose(joining: joining, nodes: [node("b", 120, draining: true)]) == "a")
    }

    @Test func tiesGoToFewerParticipantsThenName() {
        let joining = node("z", 5, max: 5)
        #expect(placement.choose(joining: joining, nodes: [node("c", 2, max: 0, cpu: 0), node("b", 2, max: 0, cpu: 0), node("d", 1, max: 0, cpu: 0)]) == "d")
        #expect(placement.choose(joining: joining, nodes: [node("c", 2, max: 0, cpu: 0), node("b", 2, max: 0, cpu: 0)]) == "b")
    }

    @Test func theJoiningNodeCountsWhenTheViewDoesNotListItYet() {
        #expect(placement.choose(joining: node("new", 0), nodes: []) == "new")
        #expect(placement.choose(joining: node("new", 0, draining: true), nodes: []) == nil)
    }
}
