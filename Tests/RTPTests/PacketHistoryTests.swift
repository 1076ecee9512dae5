import Testing
@testable import RTP

@Suite struct PacketHistoryTests {
    func fetch(_ history: PacketHistory, _ sequenceNumber: UInt16) -> [UInt8]? {
        history.withPacket(sequenceNumber: sequenceNumber) { Array($0) }
    }

    func store(_ history: PacketHistory, _ bytes: [UInt8], _ sequenceNumber: UInt16) -> Bool {
        bytes.withUnsafeBytes { history.store($0, sequenceNumber: sequenceNumber) }
    }

    @Test func storesAndRetrieves() {
        let history = PacketHistory(capacity: 8, slotSize: 32)
        #expect(fetch(history, 1) == nil)
        #expect(store(history, [1, 2, 3], 1))
        #expect(store(history, [4, 5], 2))
        #expect(store(history, [], 3))
        #expect(fetch(history, 1) == [1, 2, 3])
        #expect(fetch(history, 2) == [4, 5])
        #expect(fetch(history, 3) == [])
        #expect(fetch(history, 4) == nil)  // never stored
        #expect(fetch(history, 0) == nil)
    }

    @Test func refusesOversizedPackets() {
        let history = PacketHistory(capacity: 4, slotSize: 4)
        #expect(!store(history, [1, 2, 3, 4, 5], 1))
        #expect(fetch(history, 1) == nil)
        #expect(store(history, [1, 2, 3, 4], 1))
    }

    @Test func evictsOldestSlots() {
        let history = PacketHistory(capacity: 8, slotSize: 16)
        for sequence: UInt16 in 0..<20 { _ = store(history, [UInt8(sequence)], sequence) }
        #expect(fetch(history, 11) == nil)  // slot reused by 19
        #expect(fetch(history, 12) == [12])
        #expect(fetch(history, 19) == [19])
        // A gap leaves a stale slot behind; it must not be served as the newer number.
        _ = store(history, [99], 30)
        #expect(fetch(history, 22) == nil)
        #expect(fetch(history, 23) == nil)  // slot 7 still holds 15
        #expect(fetch(history, 30) == [99])
        #expect(fetch(history, 20) == nil)  // more than capacity behind the newest
        history.removeAll()
        #expect(fetch(history, 30) == nil)
    }

    @Test func wrapsSequenceNumbers() {
        let history = PacketHistory(capacity: 4, slotSize: 8)
        for sequence: UInt16 in [65534, 65535, 0, 1] { _ = store(history, [UInt8(truncatingIfNeeded: sequence)], sequence) }
        #expect(fetch(history, 65534) == [0xFE])
        #expect(fetch(history, 65535) == [0xFF])
        #expect(fetch(history, 0) == [0])
        #expect(fetch(history, 1) == [1])
        _ = store(history, [2], 2)
        #expect(fetch(history, 65534) == nil)
        // A late store of an older number does not move the newest marker.
        _ = store(history, [0xFF], 65535)
        #expect(fetch(history, 2) == [2])
    }
}
