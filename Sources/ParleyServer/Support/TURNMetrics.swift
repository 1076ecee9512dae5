import TURN

/// The STUN/TURN section of `/metrics`, from the workers' summed counters.
enum TURNMetrics {
    static func render(_ s: TURNStatistics) -> String {
        var out = ""
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: UInt64)]) {
            out += "# HELP parley_turn_\(name) \(help)\n# TYPE parley_turn_\(name) \(type)\n"
            for sample in samples { out += "parley_turn_\(name)\(sample.labels.isEmpty ? "" : "{\(sample.labels)}") \(sample.value)\n" }
        }
        metric("allocations", "gauge", "TURN allocations open", [("", UInt64(s.allocationsActive))])
        metric("tcp_connections", "gauge", "TURN clients connected over TCP", [("", UInt64(max(0, s.tcpConnections)))])
        metric("tcp_refused_total", "counter", "TCP and TLS clients refused by turn.tcp.maxConnections or maxConnectionsPerSource", [("", s.streamsRefused)])
        metric("tcp_idle_closed_total", "counter", "TCP clients closed after turn.tcp.idleTimeout without an allocation", [("", s.streamsClosedIdle)])
        metric("permission_cap_refusals_total", "counter", "CreatePermission and ChannelBind refused by turn.maxPermissions", [("", s.permissionCapRefusals)])
        metric("tcp_accepts_exhausted_total", "counter", "TCP accepts put off because the process was out of descriptors or memory", [("", s.acceptsExhausted)])
        metric("allocations_created_total", "counter", "TURN allocations made", [("", s.allocationsCreated)])
        metric("relayed_packets_total", "counter", "Datagrams relayed, to peers and to clients", [
            ("direction=\"to_peer\"", s.packetsToPeers), ("direction=\"to_client\"", s.packetsToClients),
        ])
        metric("relayed_bytes_total", "counter", "Payload bytes relayed, to peers and to clients", [
            ("direction=\"to_peer\"", s.bytesToPeers), ("direction=\"to_client\"", s.bytesToClients),
        ])
        metric("binding_requests_total", "counter", "STUN binding requests answered", [("", s.bindingRequests)])
        metric("auth_failures_total", "counter", "Requests with unknown users, expired REST credentials or a wrong MESSAGE-INTEGRITY", [("", s.authFailures)])
        metric("denied_peers_total", "counter", "CreatePermission and ChannelBind refused with 403 by the peer policy", [("", s.deniedPeers)])
        metric("quota_refusals_total", "counter", "Allocations refused with 486 (per-user or total quota)", [("", s.quotaRefusals)])
        metric("error_responses_total", "counter", "STUN error responses sent (401 challenges included)", [("", s.errorResponses)])
        metric("dropped_total", "counter", "Datagrams and requests dropped, by reason", [
            ("reason=\"malformed\"", s.droppedMalformed), ("reason=\"no_permission\"", s.droppedNoPermission),
            ("reason=\"bandwidth\"", s.bandwidthDrops), ("reason=\"rate_limited\"", s.rateLimited),
        ])
        return out
    }
}
