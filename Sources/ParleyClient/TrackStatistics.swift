import RTP
import SDP

/// What this client measured of one track it receives (RFC 3550 accounting of the SSRC the
/// server's offer names for the track).
public struct ReceivedTrackStatistics: Sendable, Equatable {
    public var trackSid: String
    public var participantSid: String
    public var kind: String
    public var ssrc: UInt32
    public var packetsReceived: Int
    /// RTP bytes after SRTP, headers included.
    public var bytesReceived: Int
    /// Packets the sequence numbers say were sent (RFC 3550 A.3).
    public var packetsExpected: Int
    /// Cumulative packets lost: expected minus received, negative with duplicates (RFC 3550 A.3).
    /// A retransmission that arrives in time recovers its loss.
    public var packetsLost: Int
    /// Fraction lost, 0…1, over the last receiver report interval.
    public var fractionLost: Double
    /// Interarrival jitter (RFC 3550 A.8).
    public var jitterMilliseconds: Double
    /// Bits per second over the last receiver report interval.
    public var bitrate: Double
    /// Bits per second from the first packet to the last.
    public var averageBitrate: Double
    /// Generic NACK packets sent asking for this track's lost packets.
    public var nacksSent: Int
    /// VP8: the size of the latest keyframe received, which tells the simulcast layer the server
    /// sends; nil before one (and for other codecs).
    public var frameWidth: Int?
    public var frameHeight: Int?
    /// VP8: keyframes received, by their width (a layer switch shows as a new width).
    public var keyframesByWidth: [Int: Int]
    /// PLIs sent while no keyframe had come.
    public var plisSent: Int
}

/// What this client sent of one track it publishes, and the feedback the server gave about it.
public struct SentTrackStatistics: Sendable, Equatable {
    /// The server's sid for the track ("" before the answer named it).
    public var trackSid: String
    public var kind: String
    public var ssrc: UInt32
    /// The simulcast layer (0 lowest), nil for a single-stream track; each layer has its own entry.
    public var layer: Int?
    /// The server said no subscriber needs this layer now (`publisher.layers`): it is not sent.
    public var paused: Bool
    /// Where retransmissions go (RFC 4588), when the answer kept RTX; nil: on `ssrc` itself.
    public var retransmissionSSRC: UInt32?
    /// Original transmissions; retransmissions are counted apart.
    public var packetsSent: Int
    public var bytesSent: Int
    /// Bits per second over the last second.
    public var bitrate: Double
    public var nacksReceived: Int
    /// Packets sent again from the send history to answer NACKs.
    public var retransmissions: Int
    /// NACKed packets no longer (or never) in the send history.
    public var retransmissionMisses: Int
    public var plisReceived: Int
    public var firsReceived: Int
    /// Loss and jitter as the server's latest receiver report gives them; nil before one came.
    public var remotePacketsLost: Int?
    public var remoteFractionLost: Double?
    public var remoteJitterMilliseconds: Double?
    /// Transport-wide feedback packets the server sent this transport (the same for every
    /// track of it: the feedback is about the whole transport), 0 without transport-cc.
    public var transportFeedbackReceived: Int
    /// This source's packets the transport-wide feedback reported as arrived, and as missing.
    public var packetsAcknowledged: Int
    public var packetsReportedMissing: Int
}

/// Per-track statistics of a room's media, both directions, and the path each transport took.
public struct MediaStatistics: Sendable, Equatable {
    public var received: [ReceivedTrackStatistics]
    public var sent: [SentTrackStatistics]
    /// Our end of each transport's selected ICE path: host, or relay through TURN; nil before
    /// ICE succeeded (and for a publisher that does not exist).
    public var subscriberCandidateType: ICECandidate.CandidateType?
    public var publisherCandidateType: ICECandidate.CandidateType?

    public init(
        received: [ReceivedTrackStatistics] = [], sent: [SentTrackStatistics] = [],
        subscriberCandidateType: ICECandidate.CandidateType? = nil, publisherCandidateType: ICECandidate.CandidateType? = nil
    ) {
        self.received = received
        self.sent = sent
        self.subscriberCandidateType = subscriberCandidateType
        self.publisherCandidateType = publisherCandidateType
    }
}

extension SubscriberConnection {
    /// Every received track's statistics, ordered by SSRC. On the loop.
    public func statistics() -> [ReceivedTrackStatistics] {
        loop.preconditionInEventLoop()
        return transport.inbound.streams.sorted { $0.key < $1.key }.compactMap { ssrc, stream in
            guard let track = tracksBySSRC[ssrc] else { return nil }
            return ReceivedTrackStatistics(
                trackSid: track.trackSid, participantSid: track.participantSid, kind: track.kind, ssrc: ssrc,
                packetsReceived: stream.packets, bytesReceived: stream.bytes, packetsExpected: Int(stream.statistics.expected),
                packetsLost: Int(stream.statistics.cumulativeLost), fractionLost: Double(stream.fractionLost) / 256,
                jitterMilliseconds: stream.jitterMilliseconds, bitrate: stream.bitrate, averageBitrate: stream.averageBitrate,
                nacksSent: stream.nacksSent, frameWidth: stream.frameWidth, frameHeight: stream.frameHeight,
                keyframesByWidth: stream.keyframesByWidth, plisSent: stream.plisSent)
        }
    }
}

extension PublisherConnection {
    /// Every published source's statistics, in m-line order (a simulcast track's layers lowest
    /// first); `trackSids` maps mids to the server's track sids (from its answer). On the loop.
    public func statistics(trackSids: [String: String] = [:]) -> [SentTrackStatistics] {
        loop.preconditionInEventLoop()
        return sources.compactMap { source in
            guard let stream = transport.outbound.streams[source.ssrc] else { return nil }
            let report = stream.remoteReport
            return SentTrackStatistics(
                trackSid: trackSids[source.mid] ?? "", kind: source.kind, ssrc: source.ssrc, layer: source.layer,
                paused: source.layer.map { pausedLayers.contains($0) } ?? false,
                retransmissionSSRC: stream.retransmission?.ssrc, packetsSent: stream.packets,
                bytesSent: stream.bytes, bitrate: stream.bitrate, nacksReceived: stream.nacksReceived,
                retransmissions: stream.retransmissions, retransmissionMisses: stream.retransmissionMisses,
                plisReceived: stream.plisReceived, firsReceived: stream.firsReceived,
                remotePacketsLost: report.map { Int($0.cumulativeLost) },
                remoteFractionLost: report.map { Double($0.fractionLost) / 256 },
                remoteJitterMilliseconds: report.map { Double($0.jitter) / Double(stream.clockRate) * 1000 },
                transportFeedbackReceived: transport.outbound.transportFeedbackReceived, packetsAcknowledged: stream.packetsAcknowledged,
                packetsReportedMissing: stream.packetsReportedMissing)
        }
    }
}
