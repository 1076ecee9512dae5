/// What `/metrics` shows about one worker's media port and transports, read on its loop (the
/// SFU's counters are `SFUStatistics`, in `SFU`).
public struct MediaSnapshot: Sendable, Equatable {
    public var port = MediaPort.PortCounters()
    public var transports = TransportCounters()
    public var activeTransports = 0
    public var connectedTransports = 0

    public init() {}

    public mutating func add(_ other: MediaSnapshot) {
        port.datagramsIn += other.port.datagramsIn
        port.datagramsOut += other.port.datagramsOut
        port.droppedMalformed += other.port.droppedMalformed
        port.droppedUnknownUfrag += other.port.droppedUnknownUfrag
        port.droppedUnknownSource += other.port.droppedUnknownSource
        port.sendFailures += other.port.sendFailures
        transports.add(other.transports)
        activeTransports += other.activeTransports
        connectedTransports += other.connectedTransports
    }
}
