/// Recently forwarded packets of one publication, kept so NACKs can be answered with
/// retransmissions.
///
/// A ring of `capacity` fixed-size slots indexed by sequence number (mod capacity), in one
/// buffer allocated at init: storing a packet is a bounded memcpy with no allocation. Lookups
/// check the sequence number stored in the slot, so an overwritten (evicted) slot is never
/// mistaken for the requested packet, and numbers more than `capacity` behind the newest one are
/// refused so a 16-bit wrap cannot resurrect ancient packets.
///
/// Not thread-safe: owned by the one task or event loop that handles the publication.
public final class PacketHistory {
    public let capacity: Int
    public let slotSize: Int

    private let storage: UnsafeMutableRawBufferPointer
    private let lengths: UnsafeMutableBufferPointer<Int32>
    private let sequenceNumbers: UnsafeMutableBufferPointer<UInt16>
    private var newestSequence: UInt16 = 0
    private var isEmpty = true

    /// - Parameters:
    ///   - capacity: number of packets kept; a power of two between 1 and 32768.
    ///   - slotSize: largest packet stored; larger ones are refused by `store`.
    public init(capacity: Int = 512, slotSize: Int = 1500) {
        precondition(capacity > 0 && capacity <= 32768 && capacity & (capacity - 1) == 0, "capacity must be a power of two ≤ 32768")
        precondition(slotSize > 0, "slotSize must be positive")
        self.capacity = capacity
        self.slotSize = slotSize
        storage = .allocate(byteCount: capacity * slotSize, alignment: 16)
        storage.initializeMemory(as: UInt8.self, repeating: 0)
        lengths = .allocate(capacity: capacity)
        lengths.initialize(repeating: -1)  // -1: slot never written
        sequenceNumbers = .allocate(capacity: capacity)
        sequenceNumbers.initialize(repeating: 0)
    }

    deinit {
        storage.deallocate()
        lengths.deallocate()
        sequenceNumbers.deallocate()
    }

    /// Copies `packet` into the slot for `sequenceNumber`, evicting whatever was there.
    /// Returns false (nothing stored) when the packet is larger than `slotSize`.
    @discardableResult
    public func store(_ packet: UnsafeRawBufferPointer, sequenceNumber: UInt16) -> Bool {
        guard packet.count <= slotSize else { return false }
        let slot = Int(sequenceNumber) & (capacity - 1)
        let destination = UnsafeMutableRawBufferPointer(rebasing: storage[(slot * slotSize)..<(slot * slotSize + packet.count)])
        destination.copyMemory(from: packet)
        lengths[slot] = Int32(packet.count)
        sequenceNumbers[slot] = sequenceNumber
        if isEmpty || Int16(bitPattern: sequenceNumber &- newestSequence) > 0 {
            newestSequence = sequenceNumber
            isEmpty = false
        }
        return true
    }

    /// Calls `body` with the stored bytes of `sequenceNumber` (valid only inside `body`), or
    /// returns nil when the packet was never stored or has been evicted.
    public func withPacket<Result>(
        sequenceNumber: UInt16, _ body: (UnsafeRawBufferPointer) throws -> Result
    ) rethrows -> Result? {
        guard !isEmpty else { return nil }
        let age = Int16(bitPattern: newestSequence &- sequenceNumber)
        guard age >= 0, Int(age) < capacity else { return nil }
        let slot = Int(sequenceNumber) & (capacity - 1)
        let length = Int(lengths[slot])
        guard length >= 0, sequenceNumbers[slot] == sequenceNumber else { return nil }
        return try body(UnsafeRawBufferPointer(rebasing: storage[(slot * slotSize)..<(slot * slotSize + length)]))
    }

    /// Forgets every packet (e.g. when the publisher restarts with a new SSRC).
    public func removeAll() {
        lengths.update(repeating: -1)
        isEmpty = true
    }
}
