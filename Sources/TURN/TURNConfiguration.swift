import STUN

/// How the TURN server behaves: credentials, lifetimes, relay ports, quotas and the peer policy.
public struct TURNConfiguration: Sendable {
    public var credentials: TURNCredentials
    /// Seconds a nonce stays fresh before a request with it gets 438.
    public var nonceLifetimeSeconds: UInt64
    /// Allocation lifetime when the client asks for less or nothing (RFC 8656: 600 s).
    public var defaultLifetimeSeconds: UInt32
    public var maxLifetimeSeconds: UInt32
    /// UDP ports relays are bound on.
    public var relayPorts: ClosedRange<Int>
    public var maxAllocations: Int
    public var maxAllocationsPerUser: Int
    /// Bits per second one allocation may relay, both directions together; 0 means no cap.
    public var maxBitratePerAllocation: Int
    /// Requests without valid credentials (401s, 438s) answered per client IP per second.
    public var unauthenticatedPerSecond: Double
    public var unauthenticatedBurst: Int
    public var policy: PeerPolicy
    public var software: String
    /// Permissions one allocation may hold at once (CreatePermission beyond it: 508).
    public var maxPermissionsPerAllocation = 100
    /// TCP and TLS clients at once, and from one address.
    public var maxStreamConnections = 10_000
    public var maxStreamConnectionsPerSource = 256
    /// A TCP client without an allocation is closed after this long (a connection that never
    /// allocates only holds a descriptor).
    public var streamIdleSeconds: UInt64 = 30
    /// Sources tracked by the pre-authentication rate limit at most; past it the longest idle go.
    public var maxRateLimitedSources = 100_000

    public static let permissionLifetimeSeconds: UInt64 = 300
    public static let channelLifetimeSeconds: UInt64 = 600

    public init(
        credentials: TURNCredentials, nonceLifetimeSeconds: UInt64 = 600, defaultLifetimeSeconds: UInt32 = 600,
        maxLifetimeSeconds: UInt32 = 3600, relayPorts: ClosedRange<Int> = 49152...65535, maxAllocations: Int = 10_000,
        maxAllocationsPerUser: Int = 10, maxBitratePerAllocation: Int = 0, unauthenticatedPerSecond: Double = 20,
        unauthenticatedBurst: Int = 40, policy: PeerPolicy = PeerPolicy(), software: String = "Parley"
    ) {
        self.credentials = credentials
        self.nonceLifetimeSeconds = nonceLifetimeSeconds
        self.defaultLifetimeSeconds = defaultLifetimeSeconds
        self.maxLifetimeSeconds = maxLifetimeSeconds
        self.relayPorts = relayPorts
        self.maxAllocations = maxAllocations
        self.maxAllocationsPerUser = maxAllocationsPerUser
        self.maxBitratePerAllocation = maxBitratePerAllocation
        self.unauthenticatedPerSecond = unauthenticatedPerSecond
        self.unauthenticatedBurst = unauthenticatedBurst
        self.policy = policy
        self.software = software
    }

    /// RFC 8656 §7.2: the requested lifetime capped at the maximum, and never below the default.
    public func lifetime(requested: UInt32?) -> UInt32 {
        guard let requested else { return defaultLifetimeSeconds }
        return max(defaultLifetimeSeconds, min(requested, maxLifetimeSeconds))
    }
}

/// One worker's TURN counters: plain integers on its loop; `/metrics` sums snapshots.
public struct TURNStatistics: Sendable, Equatable {
    public var allocationsActive = 0
    /// Clients connected over TCP now.
    public var tcpConnections = 0
    public var allocationsCreated: UInt64 = 0
    public var packetsToPeers: UInt64 = 0
    public var bytesToPeers: UInt64 = 0
    public var packetsToClients: UInt64 = 0
    public var bytesToClients: UInt64 = 0
    public var bindingRequests: UInt64 = 0
    public var authFailures: UInt64 = 0
    public var deniedPeers: UInt64 = 0
    public var quotaRefusals: UInt64 = 0
    public var bandwidthDrops: UInt64 = 0
    public var droppedNoPermission: UInt64 = 0
    public var droppedMalformed: UInt64 = 0
    public var rateLimited: UInt64 = 0
    public var errorResponses: UInt64 = 0
    /// Datagrams the kernel refused to send (a full socket buffer, an unreachable peer).
    public var sendFailures: UInt64 = 0
    /// TCP accepts put off for want of descriptors or memory (the listener rests a second).
    public var acceptsExhausted: UInt64 = 0
    /// TCP and TLS connections refused by the caps (total or per source) and closed idle.
    public var streamsRefused: UInt64 = 0
    public var streamsClosedIdle: UInt64 = 0
    /// CreatePermission and ChannelBind refused for the per-allocation cap.
    public var permissionCapRefusals: UInt64 = 0

    public init() {}

    public mutating func add(_ other: TURNStatistics) {
        allocationsActive += other.allocationsActive
        tcpConnections += other.tcpConnections
        acceptsExhausted += other.acceptsExhausted
        streamsRefused += other.streamsRefused
        streamsClosedIdle += other.streamsClosedIdle
        permissionCapRefusals += other.permissionCapRefusals
        allocationsCreated += other.allocationsCreated
        packetsToPeers += other.packetsToPeers
        bytesToPeers += other.bytesToPeers
        packetsToClients += other.packetsToClients
        bytesToClients += other.bytesToClients
        bindingRequests += other.bindingRequests
        authFailures += other.authFailures
        deniedPeers += other.deniedPeers
        quotaRefusals += other.quotaRefusals
        bandwidthDrops += other.bandwidthDrops
        droppedNoPermission += other.droppedNoPermission
        droppedMalformed += other.droppedMalformed
        rateLimited += other.rateLimited
        errorResponses += other.errorResponses
        sendFailures += other.sendFailures
    }
}
