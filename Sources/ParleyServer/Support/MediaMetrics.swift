import SFU
import WebRTC

/// The workers' media figures summed: their ports' and transports' counters and their SFUs'.
public struct MediaFigures: Sendable, Equatable {
    public var media = MediaSnapshot()
    public var sfu = SFUStatistics()
    public var downlink = DownlinkFigures()

    public init() {}
}

/// The media section of `/metrics`, rendered from the workers' snapshots (taken on each worker's
/// loop, so the packet path only bumps plain integers).
enum MediaMetrics {
    static func render(_ figures: MediaFigures) -> String {
        let media = figures.media
        var out = ""
        func counter(_ name: String, _ help: String, _ samples: [(labels: String, value: UInt64)]) {
            out += "# HELP parley_\(name) \(help)\n# TYPE parley_\(name) counter\n"
            for sample in samples { out += "parley_\(name)\(sample.labels.isEmpty ? "" : "{\(sample.labels)}") \(sample.value)\n" }
        }
        func gauge(_ name: String, _ help: String, _ value: Int) {
            out += "# HELP parley_\(name) \(help)\n# TYPE parley_\(name) gauge\nparley_\(name) \(value)\n"
        }
        let t = media.transports
        counter("media_packets_total", "Media datagrams by direction and kind (after SRTP for rtp and rtcp)", [
            ("direction=\"in\",kind=\"rtp\"", t.rtpPacketsIn), ("direction=\"out\",kind=\"rtp\"", t.rtpPacketsOut),
            ("direction=\"in\",kind=\"rtcp\"", t.rtcpPacketsIn), ("direction=\"out\",kind=\"rtcp\"", t.rtcpPacketsOut),
            ("direction=\"in\",kind=\"dtls\"", t.dtlsPacketsIn), ("direction=\"out\",kind=\"dtls\"", t.dtlsPacketsOut),
            ("direction=\"in\",kind=\"stun\"", t.stunChecks + t.stunRejected),
        ])
        counter("media_bytes_total", "Media bytes on the wire by direction and kind", [
            ("direction=\"in\",kind=\"rtp\"", t.rtpBytesIn), ("direction=\"out\",kind=\"rtp\"", t.rtpBytesOut),
            ("direction=\"in\",kind=\"rtcp\"", t.rtcpBytesIn), ("direction=\"out\",kind=\"rtcp\"", t.rtcpBytesOut),
        ])
        counter("media_srtp_failures_total", "Packets that failed SRTP or SRTCP authentication or replay checks (dropped)", [
            ("kind=\"rtp\"", t.srtpFailures), ("kind=\"rtcp\"", t.srtcpFailures),
        ])
        counter("media_dropped_total", "Datagrams dropped on the media port, by reason", [
            ("reason=\"malformed\"", media.port.droppedMalformed + t.droppedMalformed),
            ("reason=\"unknown_ufrag\"", media.port.droppedUnknownUfrag),
            ("reason=\"unknown_source\"", media.port.droppedUnknownSource + t.droppedUnknownSource),
            ("reason=\"before_keys\"", t.droppedBeforeKeys),
            ("reason=\"stun_rejected\"", t.stunRejected),
            ("reason=\"malformed_rtp\"", figures.sfu.droppedMalformedRTP),
            ("reason=\"malformed_rtcp\"", figures.sfu.droppedMalformedRTCP),
            ("reason=\"unknown_ssrc\"", figures.sfu.droppedUnknownSSRC),
            ("reason=\"unknown_rtx\"", figures.sfu.droppedUnknownRetransmission),
            ("reason=\"malformed_vp8\"", figures.sfu.droppedMalformedVP8),
            ("reason=\"malformed_twcc\"", figures.sfu.droppedMalformedTransportFeedback),
        ])
        counter("media_dtls_failures_total", "DTLS handshakes that failed (bad fingerprint, timeout, alerts)", [("", t.dtlsFailures)])
        let w = figures.sfu
        counter("media_nacks_total", "Generic NACK packets: received from subscribers, sent to publishers", [
            ("direction=\"in\"", w.nacksReceived), ("direction=\"out\"", w.nacksSent),
        ])
        counter("media_plis_total", "Keyframe requests: PLIs received from subscribers, PLIs and FIRs sent to publishers", [
            ("direction=\"in\"", w.plisReceived), ("direction=\"out\"", w.plisSent + w.firsSent),
        ])
        counter("media_receiver_reports_total", "RTCP receiver reports received from subscribers", [("", w.receiverReportsReceived)])
        counter("media_retransmissions_total", "Packets resent from the packet history to answer NACKs", [("", w.retransmissions)])
        counter("media_retransmission_misses_total", "NACKed packets no longer in the history", [("", w.retransmissionMisses)])
        counter("media_remb_total", "REMB estimates sent to publishers", [("", w.rembSent)])
        counter("media_forwarded_packets_total", "RTP packets sent to subscribers (one per copy)", [("", w.forwardedPackets)])
        counter("media_rtx_retransmissions_total", "Retransmissions sent on subscribers' RTX streams (part of media_retransmissions_total)", [
            ("", w.retransmissionsOnRTX)
        ])
        counter("media_repairs_total", "Publishers' retransmissions received on their RTX streams and unwrapped", [("", w.repairsReceived)])
        counter("media_padding_received_total", "Padding-only packets from publishers probing their uplink (not forwarded)", [("", w.paddingReceived)])
        counter("media_transport_feedback_total", "Transport-wide congestion control feedback: from subscribers, to publishers", [
            ("direction=\"in\"", w.transportFeedbackReceived), ("direction=\"out\"", w.transportFeedbackSent),
        ])
        counter("media_layer_switches_total", "Simulcast layer switches of subscribers' video (each at a keyframe)", [("", w.layerSwitches)])
        counter("media_tracks_paused_total", "Subscribers' video tracks paused because not even their lowest layer fit", [("", w.tracksPaused)])
        counter("media_probe_bytes_total", "Bytes sent to subscribers only to probe their bandwidth", [("", w.probeBytesSent)])
        let downlink = figures.downlink
        out += "# HELP parley_media_video_subscriptions Subscribers' video tracks by the simulcast layer they get now (paused: for bandwidth)\n"
        out += "# TYPE parley_media_video_subscriptions gauge\n"
        for (layer, count) in downlink.subscriptionsByLayer.enumerated() { out += "parley_media_video_subscriptions{layer=\"\(layer)\"} \(count)\n" }
        out += "parley_media_video_subscriptions{layer=\"paused\"} \(downlink.pausedSubscriptions)\n"
        out += "# HELP parley_media_subscriber_estimate_bits Subscribers' estimated downlinks (transport-wide feedback), bits per second\n"
        out += "# TYPE parley_media_subscriber_estimate_bits histogram\n"
        var estimates = 0
        for (index, bound) in DownlinkFigures.estimateBuckets.enumerated() {
            estimates += downlink.estimates[index]
            out += "parley_media_subscriber_estimate_bits_bucket{le=\"\(bound)\"} \(estimates)\n"
        }
        estimates += downlink.estimates.last ?? 0
        out += "parley_media_subscriber_estimate_bits_bucket{le=\"+Inf\"} \(estimates)\n"
        out += "parley_media_subscriber_estimate_bits_sum \(downlink.estimateSum)\n"
        out += "parley_media_subscriber_estimate_bits_count \(downlink.estimateCount)\n"
        gauge("media_transports", "ICE/DTLS transports open", media.activeTransports)
        gauge("media_transports_connected", "Transports with DTLS done and SRTP keys", media.connectedTransports)

        out += "# HELP parley_media_forwarding_delay_seconds Time from a packet's arrival to its last copy being sent\n"
        out += "# TYPE parley_media_forwarding_delay_seconds histogram\n"
        var cumulative: UInt64 = 0
        for (index, bound) in SFUStatistics.delayBucketsMicroseconds.enumerated() {
            cumulative += w.delayBuckets[index]
            out += "parley_media_forwarding_delay_seconds_bucket{le=\"\(Double(bound) / 1_000_000)\"} \(cumulative)\n"
        }
        cumulative += w.delayBuckets.last ?? 0
        out += "parley_media_forwarding_delay_seconds_bucket{le=\"+Inf\"} \(cumulative)\n"
        out += "parley_media_forwarding_delay_seconds_sum \(Double(w.delaySumNanoseconds) / 1_000_000_000)\n"
        out += "parley_media_forwarding_delay_seconds_count \(w.delayCount)\n"
        return out
    }
}
