/// A node as placement sees it: how full it is, and whether it takes rooms at all.
public struct NodeLoad: Sendable, Equatable {
    public var name: String
    public var participants: Int
    /// `node.maxParticipants`; 0: no cap.
    public var maxParticipants: Int
    /// Cores the node's process used over its last renewal.
    public var cpu: Double
    /// Cores the node has.
    public var cores: Int
    /// A draining node takes no new rooms.
    public var draining: Bool

    public init(name: String, participants: Int, maxParticipants: Int, cpu: Double, cores: Int, draining: Bool) {
        self.name = name
        self.participants = participants
        self.maxParticipants = maxParticipants
        self.cpu = cpu
        self.cores = cores
        self.draining = draining
    }
}

/// Where a new room opens. The node that took the connection keeps it while it has room (no relay,
/// no hop); past its participant cap or its CPU ceiling, the least loaded node that has room takes
/// it. Pure: the caller passes the cluster's view as of its last renewal.
public struct RoomPlacement: Sendable, Equatable {
    /// The share of a node's cores (`node.maxCPU`) past which it counts as full; 0: CPU is not considered.
    public var maxCPUFraction: Double

    public init(maxCPUFraction: Double) { self.maxCPUFraction = maxCPUFraction }

    /// How full a node is, 0 (idle) to 1 (at a limit) and beyond: the higher of its participant
    /// and CPU shares.
    public func load(of node: NodeLoad) -> Double {
        let participantShare = node.maxParticipants > 0 ? Double(node.participants) / Double(node.maxParticipants) : 0
        let cpuShare = maxCPUFraction > 0 && node.cores > 0 ? node.cpu / (Double(node.cores) * maxCPUFraction) : 0
        return max(participantShare, cpuShare)
    }

    /// True when a new room may open on the node.
    public func hasRoom(_ node: NodeLoad) -> Bool { !node.draining && load(of: node) < 1 }

    /// The node a new room opens on: `joining` while it has room; else the least loaded node that
    /// has room (fewest participants, then name, break ties); when every node is full, the least
    /// loaded that is not draining, so a full cluster degrades instead of refusing. Nil when every
    /// node drains. `joining` counts even when `nodes` (the last view) does not list it yet.
    public func choose(joining: NodeLoad, nodes: [NodeLoad]) -> String? {
        if hasRoom(joining) { return joining.name }
        let candidates = [joining] + nodes.filter { $0.name != joining.name && !$0.draining }
        let open = candidates.filter(hasRoom)
        let pool = open.isEmpty ? candidates.filter { !$0.draining } : open
        return pool.min { lessLoaded($0, $1) }?.name
    }

    private func lessLoaded(_ a: NodeLoad, _ b: NodeLoad) -> Bool {
        let (loadA, loadB) = (load(of: a), load(of: b))
        if loadA != loadB { return loadA < loadB }
        if a.participants != b.participants { return a.participants < b.participants }
        return a.name < b.name
    }
}
