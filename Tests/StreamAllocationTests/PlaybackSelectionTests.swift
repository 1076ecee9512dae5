import StreamAllocation
import Testing

struct PlaybackSelectionTests {
    typealias Track = PlaybackSelection.Track

    /// alice publishes audio only; bob and carol audio and video, in join order.
    let room: [Track] = [
        Track(participant: "alice", track: "a-mic", kind: "audio"),
        Track(participant: "bob", track: "b-mic", kind: "audio"), Track(participant: "bob", track: "b-cam", kind: "video"),
        Track(participant: "carol", track: "c-mic", kind: "audio"), Track(participant: "carol", track: "c-cam", kind: "video"),
    ]

    @Test func aPinnedParticipantIsFollowedWhetherItSpeaksOrIsThereYet() {
        #expect(PlaybackSelection.followed(current: nil, pinned: "carol", speakers: ["bob"], tracks: room) == "carol")
        #expect(PlaybackSelection.followed(current: "carol", pinned: "dave", speakers: [], tracks: room) == "dave")
    }

    @Test func withNobodySpeakingTheFirstVideoPublisherIsFollowed() {
        #expect(PlaybackSelection.followed(current: nil, pinned: nil, speakers: [], tracks: room) == "bob")
        #expect(PlaybackSelection.followed(current: nil, pinned: nil, speakers: [], tracks: Array(room.prefix(1))) == "alice")
        #expect(PlaybackSelection.followed(current: nil, pinned: nil, speakers: [], tracks: []) == nil)
    }

    @Test func theFollowedKeepsThePictureWhileItSpeaksOrWhileNobodyElseDoes() {
        // carol speaks: she is followed.
        #expect(PlaybackSelection.followed(current: "bob", pinned: nil, speakers: ["carol"], tracks: room) == "carol")
        // bob louder now, but carol still speaks: no flapping.
        #expect(PlaybackSelection.followed(current: "carol", pinned: nil, speakers: ["bob", "carol"], tracks: room) == "carol")
        // Silence: carol keeps it.
        #expect(PlaybackSelection.followed(current: "carol", pinned: nil, speakers: [], tracks: room) == "carol")
        // carol left: the loudest speaker, else the first video publisher.
        let withoutCarol = room.filter { $0.participant != "carol" }
        #expect(PlaybackSelection.followed(current: "carol", pinned: nil, speakers: ["alice"], tracks: withoutCarol) == "alice")
        #expect(PlaybackSelection.followed(current: "carol", pinned: nil, speakers: [], tracks: withoutCarol) == "bob")
        // A speaker who publishes nothing (a viewer's level cannot exist, but a stale list can name one who left).
        #expect(PlaybackSelection.followed(current: "bob", pinned: nil, speakers: ["zed"], tracks: room) == "bob")
    }

    @Test func theFollowedComesFirstThenSpeakersThenJoinOrder() {
        #expect(PlaybackSelection.wanted(kind: "audio", count: 1, followed: "carol", speakers: ["alice"], tracks: room) == ["c-mic"])
        #expect(
            PlaybackSelection.wanted(kind: "audio", count: 3, followed: "carol", speakers: ["bob", "alice"], tracks: room)
                == ["c-mic", "b-mic", "a-mic"])
        #expect(PlaybackSelection.wanted(kind: "audio", count: 5, followed: nil, speakers: [], tracks: room) == ["a-mic", "b-mic", "c-mic"])
        #expect(PlaybackSelection.wanted(kind: "video", count: 1, followed: "alice", speakers: [], tracks: room) == ["b-cam"])
        #expect(PlaybackSelection.wanted(kind: "video", count: 0, followed: "bob", speakers: [], tracks: room) == [])
        #expect(PlaybackSelection.wanted(kind: "video", count: 2, followed: "dave", speakers: [], tracks: room) == ["b-cam", "c-cam"])
    }

    @Test func theFirstLineTakesTheBestAndTheOthersKeepWhatIsStillWanted() {
        #expect(PlaybackSelection.assign(current: [nil], wanted: ["b-cam"]) == ["b-cam"])
        #expect(PlaybackSelection.assign(current: ["b-cam"], wanted: ["c-cam"]) == ["c-cam"])
        #expect(PlaybackSelection.assign(current: ["b-cam"], wanted: []) == [nil])
        // A second line keeps carol while the speaker changes in the first.
        #expect(PlaybackSelection.assign(current: ["b-cam", "c-cam"], wanted: ["d-cam", "c-cam", "b-cam"]) == ["d-cam", "c-cam"])
        #expect(PlaybackSelection.assign(current: ["b-cam", "c-cam", nil], wanted: ["d-cam", "b-cam", "c-cam"]) == ["d-cam", "c-cam", "b-cam"])
        // A line whose track is no longer wanted takes the next one left.
        #expect(PlaybackSelection.assign(current: ["a", "gone", "c"], wanted: ["a", "c", "e"]) == ["a", "e", "c"])
        #expect(PlaybackSelection.assign(current: [], wanted: ["a"]) == [])
    }
}
