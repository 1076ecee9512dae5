import Congestion
import RTP

/// The RTP a client transport receives, one entry per SSRC its remote description announced:
/// RFC 3550 reception statistics (loss, jitter) that go out in receiver reports, and, for
/// streams that negotiated `nack`, the gaps to request again with generic NACKs (RFC 4585).
/// Lives on the transport's loop; times are the transport's monotonic nanoseconds, passed in.
struct InboundStreams {
    /// How long a missing packet waits before it is requested again: about a round trip.
    static let nackRetryNanoseconds: Int64 = 30_000_000
    /// A VP8 stream with no keyframe yet asks for one this often (the server asks the publisher
    /// itself when the stream starts, but a request it throttled is not sent later).
    static let keyframeRequestNanoseconds: UInt64 = 1_000_000_000

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
        /// VP8 streams: the size of the latest keyframe (which simulcast layer the server sends)
        /// and how many keyframes came at each width.
        let isVP8: Bool
        var frameWidth: Int?
        var frameHeight: Int?
        var keyframesByWidth: [Int: Int] = [:]
        /// The latest keyframe's RTP timestamp: a retransmitted first packet is not a second keyframe.
        var lastKeyframeTimestamp: UInt32?
        /// VP8 with `nack pli`: PLIs sent while no keyframe had come, and when the next is due
        /// (0: not yet timed).
        var requestsKeyframes = false
        var plisSent = 0
        var nextKeyframeRequestAt: UInt64 = 0
        /// Fraction lost (1/256) and bits per second over the last report interval.
        var fractionLost: UInt8 = 0
        var bitrate = 0.0
        var bytesAtLastReport = 0
        var lastReportAt: UInt64 = 0

        var jitterMilliseconds: Double { Double(statistics.jitter) / Double(clockRate) * 1000 }

        mutating func record(_ header: RTPHeader, packet: UnsafeRawBufferPointer, now: UInt64) {
            packets += 1
            bytes += packet.count
            if firstArrival == 0 {
                firstArrival = now
                lastReportAt = now
            }
            lastArrival = now
            let arrival = UInt32(truncatingIfNeeded: now / 1000 * UInt64(clockRate) / 1_000_000)
            statistics.packetReceived(sequenceNumber: header.sequenceNumber, rtpTimestamp: header.timestamp, arrival: arrival)
            nacks?.packetReceived(sequenceNumber: header.sequenceNumber)
            if isVP8, lastKeyframeTimestamp != header.timestamp,
                let size = VP8Keyframe.size(ofPayload: UnsafeRawBufferPointer(rebasing: packet[header.payloadRange]))
            {
                lastKeyframeTimestamp = header.timestamp
                frameWidth = size.width
                frameHeight = size.height
                keyframesByWidth[size.width, default: 0] += 1
            }
        }

        /// Bits per second from the first packet to the last.
        var averageBitrate: Double {
            let span = Double(lastArrival &- firstArrival) / 1e9
            return span > 0 ? Double(bytes) * 8 / span : 0
        }
    }

    private(set) var streams: [UInt32: Stream] = [:]

    /// Starts accounting for `ssrc` (again: a re-offer keeps the counts of a known stream).
    mutating func expect(ssrc: UInt32, clockRate: UInt32, nack: Bool, isVP8: Bool = false, pli: Bool = false) {
        if streams[ssrc] != nil {
            if nack, streams[ssrc]?.nacks == nil { streams[ssrc]?.nacks = NackTracker() }
            return
        }
        streams[ssrc] = Stream(
            clockRate: max(clockRate, 1), statistics: ReceiveStatistics(ssrc: ssrc), nacks: nack ? NackTracker() : nil, isVP8: isVP8)
        streams[ssrc]?.requestsKeyframes = isVP8 && pli
    }

    /// Stops accounting for streams the latest description no longer sends.
    mutating func keepOnly(_ ssrcs: Set<UInt32>) {
        streams = streams.filter { ssrcs.contains($0.key) }
    }

    mutating func received(_ header: RTPHeader, packet: UnsafeRawBufferPointer, now: UInt64) {
        streams[header.ssrc]?.record(header, packet: packet, now: now)
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

    /// PLIs for VP8 streams that have had no keyframe yet, one per stream per interval, as a
    /// decoder that cannot start asks; the first waits an interval for the server's own request.
    mutating func dueKeyframeRequests(senderSSRC: UInt32, now: UInt64) -> [[UInt8]] {
        var due: [UInt32] = []
        for (ssrc, stream) in streams where stream.requestsKeyframes && stream.frameWidth == nil && now >= stream.nextKeyframeRequestAt {
            due.append(ssrc)
        }
        var packets: [[UInt8]] = []
        for ssrc in due {
            let first = streams[ssrc]?.nextKeyframeRequestAt == 0
            streams[ssrc]?.nextKeyframeRequestAt = now + Self.keyframeRequestNanoseconds
            guard !first, let pli = RTCPBuilder.pictureLossIndication(senderSSRC: senderSSRC, mediaSSRC: ssrc) else { continue }
            streams[ssrc]?.plisSent += 1
            packets.append(pli)
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

/// The picture size of a VP8 keyframe, read from the first packet of the frame: the RTP payload
/// descriptor (RFC 7741 §4.2), then the frame tag and the keyframe header (RFC 6386 §9.1).
enum VP8Keyframe {
    /// Width and height (14 bits each, the scaling bits dropped) when `payload` starts a keyframe.
    static func size(ofPayload payload: UnsafeRawBufferPointer) -> (width: Int, height: Int)? {
        guard payload.count >= 1 else { return nil }
        let first = payload[0]
        // S (start of a partition) with partition index 0: the frame's first packet.
        guard first & 0x10 != 0, first & 0x07 == 0 else { return nil }
        var offset = 1
        if first & 0x80 != 0 {
            guard payload.count > offset else { return nil }
            let extensions = payload[offset]
            offset += 1
            if extensions & 0x80 != 0 {  // I: a picture id of 7 or 15 bits
                guard payload.count > offset else { return nil }
                offset += payload[offset] & 0x80 != 0 ? 2 : 1
            }
            if extensions & 0x40 != 0 { offset += 1 }  // L: TL0PICIDX
            if extensions & 0x30 != 0 { offset += 1 }  // T or K: TID, Y, KEYIDX
        }
        // Frame tag (3 bytes, P = 0 for a keyframe), start code, then width and height.
        guard payload.count >= offset + 10, payload[offset] & 0x01 == 0,
            payload[offset + 3] == 0x9D, payload[offset + 4] == 0x01, payload[offset + 5] == 0x2A
        else { return nil }
        let width = (Int(payload[offset + 6]) | Int(payload[offset + 7]) << 8) & 0x3FFF
        let height = (Int(payload[offset + 8]) | Int(payload[offset + 9]) << 8) & 0x3FFF
        return (width, height)
    }
}

/// The RTP a client transport sends, one entry per SSRC its offer announced: counts, a short
/// history of the streams that negotiated NACK so lost packets can be sent again (on the
/// stream's RTX SSRC when the answer kept RTX), the feedback the remote side sent about each,
/// what its receiver reports say, and which packets its transport-wide feedback acknowledged.
struct OutboundStreams {
    /// Packets kept per retransmittable stream: about 4 s of 500 kbit/s video.
    static let historyCapacity = 256
    /// RFC 4588: where a stream's retransmissions go once the answer kept RTX.
    struct Retransmission {
        var ssrc: UInt32
        var payloadType: UInt8
        var nextSequenceNumber = UInt16.random(in: 0...UInt16.max)
    }

    struct Stream {
        let clockRate: UInt32
        let history: PacketHistory?
        var retransmission: Retransmission?
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
        /// Packets of this stream (retransmissions included) the remote side's transport-wide
        /// feedback reported as arrived, and as missing.
        var packetsAcknowledged = 0
        var packetsReportedMissing = 0
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
    /// Transport-wide feedback packets (RTPFB FMT 15) taken, and those that did not parse.
    private(set) var transportFeedbackReceived = 0
    private(set) var malformedTransportFeedback = 0
    /// Shared with the transport, which numbers packets while a NACK is being answered here.
    let transportSequences: TransportSequenceLog

    init(transportSequences: TransportSequenceLog = TransportSequenceLog()) { self.transportSequences = transportSequences }

    mutating func willSend(ssrc: UInt32, clockRate: UInt32, retransmittable: Bool) {
        guard streams[ssrc] == nil else { return }
        streams[ssrc] = Stream(
            clockRate: max(clockRate, 1), history: retransmittable ? PacketHistory(capacity: Self.historyCapacity, slotSize: 1500) : nil)
    }

    /// Sends `ssrc`'s retransmissions on `retransmissionSSRC` with `payloadType` (RFC 4588).
    mutating func retransmit(_ ssrc: UInt32, on retransmissionSSRC: UInt32, payloadType: UInt8) {
        streams[ssrc]?.retransmission = Retransmission(ssrc: retransmissionSSRC, payloadType: payloadType)
    }

    mutating func sent(_ packet: UnsafeRawBufferPointer, header: RTPHeader, now: UInt64) {
        streams[header.ssrc]?.record(packet, header: header, now: now)
    }

    /// The transport-wide sequence number for the next packet, sent for `mediaSSRC`'s stream.
    func takeTransportSequence(for mediaSSRC: UInt32) -> UInt16 { transportSequences.take(for: mediaSSRC) }

    /// Feedback about our streams: NACKed packets still in the history are passed to
    /// `retransmit` (with the RTX stream to wrap them for, when there is one); PLI, FIR, report
    /// blocks and transport-wide feedback are counted and kept.
    mutating func handle(_ packet: RTCPPacket, retransmit: (UnsafeRawBufferPointer, Retransmission?) -> Bool) {
        if let nack = RTCPGenericNack(packet) {
            guard let stream = streams[nack.mediaSSRC] else { return }
            streams[nack.mediaSSRC]?.nacksReceived += 1
            var resent = 0
            var missed = 0
            var retransmission = stream.retransmission
            nack.forEachLostSequenceNumber { sequenceNumber in
                if stream.history?.withPacket(sequenceNumber: sequenceNumber, { retransmit($0, retransmission) }) == true {
                    resent += 1
                    retransmission?.nextSequenceNumber &+= 1
                } else {
                    missed += 1
                }
            }
            streams[nack.mediaSSRC]?.retransmission = retransmission
            streams[nack.mediaSSRC]?.retransmissions += resent
            streams[nack.mediaSSRC]?.retransmissionMisses += missed
        } else if packet.packetType == .transportFeedback, packet.format == TWCCFeedback.format {
            transportFeedbackArrived(packet)
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

    /// Credits each packet a transport-wide feedback reports on to the stream it went out for.
    private mutating func transportFeedbackArrived(_ packet: RTCPPacket) {
        guard let feedback = try? TWCCFeedback(parsing: packet.bytes) else { return malformedTransportFeedback += 1 }
        transportFeedbackReceived += 1
        for status in feedback.packets {
            guard let ssrc = transportSequences.stream(of: status.sequenceNumber) else { continue }
            if status.arrivalMicroseconds != nil { streams[ssrc]?.packetsAcknowledged += 1 } else { streams[ssrc]?.packetsReportedMissing += 1 }
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

/// The transport-wide sequence numbers a transport stamps, and the media stream each recent one
/// went out for, so feedback about it is credited to that stream. A class: the transport numbers
/// retransmissions while `OutboundStreams` is busy answering the NACK that asked for them.
final class TransportSequenceLog {
    /// Far more than go out between two feedback packets (50 ms); divides 65536, so the slots
    /// stay right across the wrap.
    static let window = 4096
    private var next = UInt16.random(in: 0...UInt16.max)
    /// Made on first use: only transports that negotiated transport-cc number packets.
    private var streams: [UInt32] = []

    func take(for mediaSSRC: UInt32) -> UInt16 {
        if streams.isEmpty { streams = Array(repeating: 0, count: Self.window) }
        let sequence = next
        streams[Int(sequence) % Self.window] = mediaSSRC
        next &+= 1
        return sequence
    }

    /// The stream a recent number went out for; nil for numbers never taken.
    func stream(of sequence: UInt16) -> UInt32? {
        guard !streams.isEmpty else { return nil }
        let ssrc = streams[Int(sequence) % Self.window]
        return ssrc == 0 ? nil : ssrc
    }
}
