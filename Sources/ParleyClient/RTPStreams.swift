import RTP

/// The RTP a client transport receives, one entry per SSRC its remote description announced:
/// RFC 3550 reception statistics (loss, jitter) that go out in receiver reports, and, for
/// streams that negotiated `nack`, the gaps to request again with generic NACKs (RFC 4585).
/// Lives on the transport's loop; times are the transport's monotonic nanoseconds, passed in.
struct InboundStreams {
    /// How long a missing packet waits before it is requested again: about a round trip.
    static let nackRetryNanoseconds: Int64 = 30_000_000

    struct Stream {
        let clockRate: UInt32
        var statistics: ReceiveStatistics
        /// Nil when the stream did not negotiate NACK (audio: a late Opus frame is no use).
        var nacks: NackTracker?
        var packets = 0
        var bytes = 0
        var nacksSent = 0
        var firstArrival: UInt64 = 0
        var lastArrival: UInt64 = 0
        /// Fraction lost (1/256) and bits per second over the last report interval.
        var fractionLost: UInt8 = 0
        var bitrate = 0.0
        var bytesAtLastReport = 0
        var lastReportAt: UInt64 = 0

        var jitterMilliseconds: Double { Double(statistics.jitter) / Double(clockRate) * 1000 }

        mutating func record(_ header: RTPHeader, length: Int, now: UInt64) {
            packets += 1
            bytes += length
            if firstArrival == 0 {
                firstArrival = now
                lastReportAt = now
            }
            lastArrival = now
            let arrival = UInt32(truncatingIfNeeded: now / 1000 * UInt64(clockRate) / 1_000_000)
            statistics.packetReceived(sequenceNumber: header.sequenceNumber, rtpTimestamp: header.timestamp, arrival: arrival)
            nacks?.packetReceived(sequenceNumber: header.sequenceNumber)
        }

        /// Bits per second from the first packet to the last.
        var averageBitrate: Double {
            let span = Double(lastArrival &- firstArrival) / 1e9
            return span > 0 ? Double(bytes) * 8 / span : 0
        }
    }

    private(set) var streams: [UInt32: Stream] = [:]

    /// Starts accounting for `ssrc` (again: a re-offer keeps the counts of a known stream).
    mutating func expect(ssrc: UInt32, clockRate: UInt32, nack: Bool) {
        if streams[ssrc] != nil {
            if nack, streams[ssrc]?.nacks == nil { streams[ssrc]?.nacks = NackTracker() }
            return
        }
        streams[ssrc] = Stream(clockRate: max(clockRate, 1), statistics: ReceiveStatistics(ssrc: ssrc), nacks: nack ? NackTracker() : nil)
    }

    /// Stops accounting for streams the latest description no longer sends.
    mutating func keepOnly(_ ssrcs: Set<UInt32>) {
        streams = streams.filter { ssrcs.contains($0.key) }
    }

    mutating func received(_ header: RTPHeader, length: Int, now: UInt64) {
        streams[header.ssrc]?.record(header, length: length, now: now)
    }

    /// Notes a sender report about one of our streams, for the LSR and DLSR of our next report.
    mutating func handle(_ packet: RTCPPacket, now: UInt64) {
        guard let report = RTCPSenderReport(packet), streams[report.ssrc] != nil else { return }
        streams[report.ssrc]?.statistics.senderReportReceived(ntp: report.ntp, arrivalNanoseconds: Int64(truncatingIfNeeded: now))
    }

    /// Generic NACKs for the gaps due now, one packet per stream.
    mutating func dueNacks(senderSSRC: UInt32, now: UInt64) -> [[UInt8]] {
        var packets: [[UInt8]] = []
        // Collected first: mutating while iterating `keys` would copy the dictionary.
        let gapped = streams.compactMap { ssrc, stream in stream.nacks?.missingCount ?? 0 > 0 ? ssrc : nil }
        for ssrc in gapped {
            guard
                let due = streams[ssrc]?.nacks?.dueNacks(
                    nowNanoseconds: Int64(truncatingIfNeeded: now), retryIntervalNanoseconds: Self.nackRetryNanoseconds),
                !due.isEmpty, let nack = RTCPBuilder.genericNack(senderSSRC: senderSSRC, mediaSSRC: ssrc, lostSequenceNumbers: Array(due))
            else { continue }
            streams[ssrc]?.nacksSent += 1
            packets.append(nack)
        }
        return packets
    }

    /// Receiver reports (RFC 3550 §6.4.2) with a block per stream heard from, each followed by
    /// an SDES CNAME to make a valid compound; starts a new interval for loss and bitrate.
    mutating func receiverReports(senderSSRC: UInt32, cname: String, now: UInt64) -> [[UInt8]] {
        var blocks: [ReportBlock] = []
        for ssrc in streams.keys.sorted() where streams[ssrc]?.packets ?? 0 > 0 {
            guard var stream = streams[ssrc] else { continue }
            let block = stream.statistics.makeReportBlock(nowNanoseconds: Int64(truncatingIfNeeded: now))
            stream.fractionLost = block.fractionLost
            let elapsed = Double(now &- stream.lastReportAt) / 1e9
            if elapsed > 0 { stream.bitrate = Double(stream.bytes - stream.bytesAtLastReport) * 8 / elapsed }
            stream.bytesAtLastReport = stream.bytes
            stream.lastReportAt = now
            streams[ssrc] = stream
            blocks.append(block)
        }
        guard let description = RTCPBuilder.sourceDescription(ssrc: senderSSRC, cname: cname) else { return [] }
        var compounds: [[UInt8]] = []
        var start = 0
        while start < blocks.count {
            let chunk = Array(blocks[start..<min(start + 31, blocks.count)])
            if let report = RTCPBuilder.receiverReport(ssrc: senderSSRC, reportBlocks: chunk) { compounds.append(report + description) }
            start += 31
        }
        return compounds
    }
}

/// The RTP a client transport sends, one entry per SSRC its offer announced: counts, a short
/// history of the streams that negotiated NACK so lost packets can be sent again, the feedback
/// the remote side sent about each, and what its receiver reports say.
struct OutboundStreams {
    /// Packets kept per retransmittable stream: about 4 s of 500 kbit/s video.
    static let historyCapacity = 256

    struct Stream {
        let clockRate: UInt32
        let history: PacketHistory?
        var packets = 0
        var bytes = 0
        var bitrate = 0.0
        var bytesAtLastRate = 0
        var lastRateAt: UInt64 = 0
        var nacksReceived = 0
        var retransmissions = 0
        var retransmissionMisses = 0
        var plisReceived = 0
        var firsReceived = 0
        /// The latest block the remote side reported about this stream.
        var remoteReport: ReportBlock?

        mutating func record(_ packet: UnsafeRawBufferPointer, header: RTPHeader, now: UInt64) {
            packets += 1
            bytes += packet.count
            if lastRateAt == 0 { lastRateAt = now }
            history?.store(packet, sequenceNumber: header.sequenceNumber)
        }
    }

    private(set) var streams: [UInt32: Stream] = [:]

    mutating func willSend(ssrc: UInt32, clockRate: UInt32, retransmittable: Bool) {
        guard streams[ssrc] == nil else { return }
        streams[ssrc] = Stream(
            clockRate: max(clockRate, 1), history: retransmittable ? PacketHistory(capacity: Self.historyCapacity, slotSize: 1500) : nil)
    }

    mutating func sent(_ packet: UnsafeRawBufferPointer, header: RTPHeader, now: UInt64) {
        streams[header.ssrc]?.record(packet, header: header, now: now)
    }

    /// Feedback about our streams: NACKed packets still in the history are passed to
    /// `retransmit`; PLI, FIR and report blocks are counted and kept.
    mutating func handle(_ packet: RTCPPacket, retransmit: (UnsafeRawBufferPointer) -> Bool) {
        if let nack = RTCPGenericNack(packet) {
            guard let stream = streams[nack.mediaSSRC] else { return }
            streams[nack.mediaSSRC]?.nacksReceived += 1
            var resent = 0
            var missed = 0
            nack.forEachLostSequenceNumber { sequenceNumber in
                if stream.history?.withPacket(sequenceNumber: sequenceNumber, retransmit) == true { resent += 1 } else { missed += 1 }
            }
            streams[nack.mediaSSRC]?.retransmissions += resent
            streams[nack.mediaSSRC]?.retransmissionMisses += missed
        } else if let pli = RTCPPictureLossIndication(packet) {
            streams[pli.mediaSSRC]?.plisReceived += 1
        } else if let fir = RTCPFullIntraRequest(packet) {
            for entry in fir.entries { streams[entry.ssrc]?.firsReceived += 1 }
        } else if let report = RTCPReceiverReport(packet) {
            for block in report.reportBlocks where streams[block.ssrc] != nil { streams[block.ssrc]?.remoteReport = block }
        } else if let report = RTCPSenderReport(packet) {
            for block in report.reportBlocks where streams[block.ssrc] != nil { streams[block.ssrc]?.remoteReport = block }
        }
    }

    /// Starts a new bitrate interval.
    mutating func updateBitrates(now: UInt64) {
        for ssrc in Array(streams.keys) {
            guard var stream = streams[ssrc], stream.lastRateAt != 0 else { continue }
            let elapsed = Double(now &- stream.lastRateAt) / 1e9
            if elapsed > 0 { stream.bitrate = Double(stream.bytes - stream.bytesAtLastRate) * 8 / elapsed }
            stream.bytesAtLastRate = stream.bytes
            stream.lastRateAt = now
            streams[ssrc] = stream
        }
    }
}
