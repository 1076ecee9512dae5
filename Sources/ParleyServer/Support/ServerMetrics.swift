import NIOConcurrencyHelpers
import ParleyProtocol
import Prometheus

/// What an operator watches, served at `/metrics` in Prometheus text format. One registry per
/// server instance (not the process-global MetricsSystem), so tests can run servers side by side.
public final class ServerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()

    public let rooms: Gauge
    public let participants: Gauge
    /// The participants gauge's value, which Prometheus's Gauge does not let us read: placement
    /// needs this node's load at the moment of a join.
    private let participantCount = NIOLockedValueBox(0)
    public let webSocketConnections: Gauge
    public let chatMessages: Counter
    public let chatDuplicates: Counter
    public let signalingMessages: Counter
    public let slowConsumerDisconnects: Counter
    public let resumes: Counter
    public let recordingsActive: Gauge
    public let recordingsStarted: Counter
    public let recordingBytes: Counter
    public let recordingFailures: Counter
    public let clusterNodes: Gauge
    public let leaseRenewalFailures: Counter
    public let placementFailures: Counter
    public let roomsPlacedElsewhere: Counter
    public let nodeDraining: Gauge
    public let drainedParticipants: Counter
    public let webhookEventsQueued: Counter
    public let whipSessions: Counter
    public let whepSessions: Counter
    public let httpRateLimited: Counter
    public let recordingsStoppedByLimit: Counter
    public let chatMessagesExpired: Counter
    public let webhookDeliveries: Counter
    public let webhookFailures: Counter
    public let webhookPending: Gauge
    public let webhookDelay: DurationHistogram
    public let relayedSessions: Counter
    public let relayedSessionsIn: Counter
    public let relaysOpen: Gauge
    public let relayFailures: Counter
    private let errorsByCode: [ErrorCode: Counter]
    private let requestDurations: NIOLockedValueBox<[String: DurationHistogram]>

    private static let latencyBuckets: [Duration] = [
        .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .seconds(2.5), .seconds(5),
    ]

    public var participantsNow: Int { participantCount.withLockedValue { $0 } }

    func participantJoined() {
        participantCount.withLockedValue { $0 += 1 }
        participants.increment()
    }

    func participantLeft() {
        participantCount.withLockedValue { $0 -= 1 }
        participants.decrement()
    }

    public init() {
        rooms = registry.makeGauge(descriptor: Self.name("rooms", help: "Open rooms"))
        participants = registry.makeGauge(descriptor: Self.name("participants", help: "Participants in rooms, reconnecting ones included"))
        webSocketConnections = registry.makeGauge(descriptor: Self.name("websocket_connections", help: "Open signaling WebSocket connections"))
        chatMessages = registry.makeCounter(descriptor: Self.name("chat_messages", unit: "total", help: "Chat messages stored and delivered"))
        chatDuplicates = registry.makeCounter(
            descriptor: Self.name("chat_duplicates", unit: "total", help: "chat.send retries answered with the stored original (same clientMsgId)"))
        signalingMessages = registry.makeCounter(descriptor: Self.name("signaling_messages", unit: "total", help: "Signaling messages received"))
        slowConsumerDisconnects = registry.makeCounter(
            descriptor: Self.name("slow_consumer_disconnects", unit: "total", help: "Connections dropped because their outbox overflowed"))
        resumes = registry.makeCounter(descriptor: Self.name("session_resumes", unit: "total", help: "Sessions resumed after a dropped connection"))
        recordingsActive = registry.makeGauge(descriptor: Self.name("recordings", help: "Recordings running"))
        recordingsStarted = registry.makeCounter(descriptor: Self.name("recordings_started", unit: "total", help: "Recordings started"))
        recordingBytes = registry.makeCounter(
            descriptor: Self.name("recording_bytes", unit: "total", help: "Bytes of finished recording files"))
        recordingFailures = registry.makeCounter(
            descriptor: Self.name("recording_failures", unit: "total", help: "Recordings that ended with a file error"))
        clusterNodes = registry.makeGauge(
            descriptor: Self.name("cluster_nodes", help: "Live nodes of the cluster as this node saw them at its last lease renewal"))
        leaseRenewalFailures = registry.makeCounter(
            descriptor: Self.name("cluster_lease_renewal_failures", unit: "total", help: "Renewals of this node's lease that failed (database unreachable)"))
        placementFailures = registry.makeCounter(
            descriptor: Self.name("room_placement_failures", unit: "total", help: "Rooms that could not be placed (database unreachable, or every node draining)"))
        roomsPlacedElsewhere = registry.makeCounter(
            descriptor: Self.name("rooms_placed_elsewhere", unit: "total", help: "First joins here whose new room went to a less loaded node (this one full or draining)"))
        nodeDraining = registry.makeGauge(descriptor: Self.name("node_draining", help: "1 while this node drains (no new rooms), else 0"))
        drainedParticipants = registry.makeCounter(
            descriptor: Self.name("drained_participants", unit: "total", help: "Participants a drain sent to other nodes"))
        whipSessions = registry.makeCounter(descriptor: Self.name("whip_sessions", unit: "total", help: "WHIP publishers admitted (POST /v1/whip)"))
        whepSessions = registry.makeCounter(descriptor: Self.name("whep_sessions", unit: "total", help: "WHEP players admitted (POST /v1/whep)"))
        chatMessagesExpired = registry.makeCounter(descriptor: Self.name(
            "chat_messages_expired", unit: "total", help: "Chat messages deleted for being older than chat.retention"))
        recordingsStoppedByLimit = registry.makeCounter(descriptor: Self.name(
            "recordings_stopped_by_limit", unit: "total", help: "Recordings stopped by recording.maxDuration, roomQuota or minFreeDisk"))
        httpRateLimited = registry.makeCounter(descriptor: Self.name(
            "http_rate_limited", unit: "total", help: "HTTP API requests refused with 429 for their client's rate (http.rateLimit)"))
        webhookEventsQueued = registry.makeCounter(
            descriptor: Self.name("webhook_events_queued", unit: "total", help: "Room events stored in the webhook outbox (each goes to every webhook URL)"))
        webhookDeliveries = registry.makeCounter(
            descriptor: Self.name("webhook_deliveries", unit: "total", help: "Webhook requests a receiver answered with 2xx"))
        webhookFailures = registry.makeCounter(
            descriptor: Self.name("webhook_failures", unit: "total", help: "Webhook attempts that failed (non-2xx, timeout, refused); each is retried"))
        webhookPending = registry.makeGauge(descriptor: Self.name("webhook_pending", help: "Webhook deliveries waiting in the outbox"))
        webhookDelay = registry.makeDurationHistogram(
            descriptor: Self.name("webhook_delivery_delay", unit: "seconds", help: "From a room event to its webhook's delivery"),
            buckets: Self.latencyBuckets)
        relayedSessions = registry.makeCounter(
            descriptor: Self.name("relayed_sessions", unit: "total", help: "Signaling connections this node relayed to the node that holds their room"))
        relayedSessionsIn = registry.makeCounter(
            descriptor: Self.name("relayed_sessions_received", unit: "total", help: "Signaling connections other nodes relayed here"))
        relaysOpen = registry.makeGauge(descriptor: Self.name("relays_open", help: "Signaling connections this node is relaying now"))
        relayFailures = registry.makeCounter(
            descriptor: Self.name("relay_failures", unit: "total", help: "Relays that could not reach the room's node"))
        var errors: [ErrorCode: Counter] = [:]
        for code in ErrorCode.allCases {
            errors[code] = registry.makeCounter(
                descriptor: Self.name("signaling_errors", unit: "total", help: "Errors answered to clients, by code"),
                labels: [("code", code.rawValue)])
        }
        errorsByCode = errors
        requestDurations = NIOLockedValueBox([:])
    }

    /// `parley_<name>[_<unit>]`.
    static func name(_ name: String, unit: String = "", help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "parley", metricName: name, unitName: unit, helpText: help)
    }

    public func recordError(_ code: ErrorCode) {
        errorsByCode[code]?.increment()
    }

    /// Records an HTTP request's latency, labelled by route pattern (not raw path) and status.
    public func recordRequest(method: String, route: String, status: Int, duration: Duration) {
        let key = "\(method) \(route) \(status)"
        let histogram = requestDurations.withLockedValue { histograms in
            if let existing = histograms[key] { return existing }
            let made = registry.makeDurationHistogram(
                descriptor: Self.name("http_request_duration", unit: "seconds", help: "HTTP request latency, WebSocket upgrades included"),
                labels: [("method", method), ("route", route), ("status", String(status))],
                buckets: Self.latencyBuckets)
            histograms[key] = made
            return made
        }
        histogram.recordNanoseconds(Int64(duration.components.seconds) * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
    }

    public func render() -> String {
        registry.emitToString()
    }
}
