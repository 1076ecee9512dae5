import Addresses
import Benchmark
import Congestion
import NIOCore
import Foundation
import NIOPosix
import RTP
import Recording
import SFU
import STUN
import WebRTC

/// Collects what transports send instead of writing to a socket, so a benchmark measures the
/// SFU's own work (rewrite, SRTP, bookkeeping) and not the kernel's.
final class CountingSink: DatagramSink, @unchecked Sendable {
    var datagrams = 0
    var bytes = 0
    var captured: [[UInt8]] = []
    var capturing = false

    func send(_ datagram: UnsafeRawBufferPointer, to address: TransportAddress) {
        datagrams += 1
        bytes += datagram.count
        if capturing { captured.append(Array(datagram)) }
    }

    func transport(_ transport: WebRTCTransport, didSelect address: TransportAddress, previous: TransportAddress?) {}

    // Send slots like the media port's (a copy is built and encrypted in place), minus the socket.
    private let slot = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 16)

    deinit { slot.deallocate() }

    func route(to address: TransportAddress) -> DatagramRoute? {
        DatagramRoute(address: address, socket: 0, rawAddress: RawSocketAddress(address))
    }

    func sendSlot(via route: DatagramRoute) -> UnsafeMutableRawBufferPointer? { slot }

    func commitSendSlot(length: Int, via route: DatagramRoute) {
        send(UnsafeRawBufferPointer(rebasing: slot[..<length]), to: route.address)
    }
}

/// A real peer for one server transport: a valid ICE check, then a DTLS handshake run to the end
/// through the sink, so the transport holds real SRTP keys.
func connect(_ transport: WebRTCTransport, sink: CountingSink, port: UInt16, now: UInt64) throws {
    let clientCertificate = try DTLSCertificate()
    let clientICE = ICECredentials.random()
    try transport.configure(
        remote: .init(ice: clientICE, fingerprint: clientCertificate.fingerprint, dtlsRole: .server), now: now)
    let peer = TransportAddress(ip: IPAddress("127.0.0.1")!, port: port)
    var check = STUNMessageBuilder(type: .bindingRequest, transactionID: .random())
    check.append(.username, string: "\(transport.localICE.ufrag):\(clientICE.ufrag)")
    check.appendFlag(.useCandidate)
    check.appendMessageIntegrity(key: STUNIntegrity.shortTermKey(password: transport.localICE.password))
    check.appendFingerprint()
    transport.handleSTUN(try STUNMessage(parsing: check.bytes), from: peer, now: now)
    let client = try DTLSEndpoint(
        context: try DTLSContext(certificate: clientCertificate), role: .client, remoteFingerprint: transport.localFingerprint)
    sink.capturing = true
    var toServer = client.start()
    while case .handshaking = client.state, !toServer.isEmpty {
        sink.captured.removeAll()
        for var datagram in toServer { datagram.withUnsafeMutableBytes { transport.receive($0, from: peer, now: now) } }
        toServer = sink.captured.flatMap { reply in reply.withUnsafeBytes { client.receive($0) } }
    }
    sink.capturing = false
    sink.captured.removeAll()
    precondition(transport.isConnected, "the benchmark transport did not connect")
}

/// A room with one video publisher and `subscribers` negotiated, connected down-tracks.
final class FanoutFixture: @unchecked Sendable {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let loop: any EventLoop
    let port: MediaPort
    let room: SFURoom
    let sink = CountingSink()
    var publisher: SFUParticipant!
    var publisherTransport: WebRTCTransport!
    var packet: [UInt8]

    init(subscribers: Int) throws {
        loop = group.next()
        let port = MediaPort(loop: loop, port: 0)
        self.port = port
        let dtls = try DTLSContext(certificate: DTLSCertificate())
        room = try loop.submit { SFURoom(port: port, dtls: dtls, configuration: SFUConfiguration()) }.wait()
        // A 1,000-byte VP8 packet with mid and abs-send-time extensions, as Chromium sends them.
        packet = [0x90, 96, 0x10, 0x00, 0, 0, 0x10, 0, 0xCA, 0xFE, 0xBA, 0xBE, 0xBE, 0xDE, 0, 2, 0x10, 0x30, 0x32, 1, 2, 3, 0, 0]
        packet += [UInt8](repeating: 0x5A, count: 1000 - packet.count)
        try loop.submit {
            let now = self.port.now()
            let transport = self.room.transport(for: "publisher", role: .publisher)
            transport.sink = self.sink
            try connect(transport, sink: self.sink, port: 40_000, now: now)
            self.publisherTransport = transport
            self.publisher = self.room.participants["publisher"]
            let vp8 = RTPCodec(payloadType: 96, name: "VP8", clockRate: 90_000)
            let extensions = RTPExtensionIDs(mid: 1, absSendTime: 3)
            let publication = self.room.publish(
                participant: "publisher", trackSid: "TR_video", kind: .video, mid: "0", ssrc: 0xCAFE_BABE, codecs: [vp8],
                extensions: extensions, feedback: .init(nack: true, pli: true, fir: true, remb: true))
            for index in 0..<subscribers {
                let sid = "subscriber\(index)"
                let transport = self.room.transport(for: sid, role: .subscriber)
                transport.sink = self.sink
                try connect(transport, sink: self.sink, port: UInt16(41_000 + index), now: now)
                let downTrack = self.room.subscribe(sid, to: publication, mid: "0")
                self.room.negotiate(downTrack, codecs: [RTPCodec(payloadType: 100, name: "VP8", clockRate: 90_000)], extensions: RTPExtensionIDs(mid: 2, absSendTime: 4))
            }
        }.wait()
    }

    /// Forwards `count` packets (consecutive sequence numbers) on the loop.
    func forward(count: Int) throws {
        try loop.submit {
            for _ in 0..<count {
                let sequence = (UInt16(self.packet[2]) << 8 | UInt16(self.packet[3])) &+ 1
                self.packet[2] = UInt8(sequence >> 8)
                self.packet[3] = UInt8(sequence & 0xFF)
                self.packet.withUnsafeMutableBytes { buffer in
                    self.publisher.transport(self.publisherTransport, didReceiveRTP: buffer)
                }
            }
        }.wait()
    }

    func shutdown() {
        try? loop.submit { self.room.close() }.wait()
        try? group.syncShutdownGracefully()
    }
}

/// A room with one simulcast VP8 publisher (three layers with temporal layers, as Chromium sends
/// them) and `subscribers` down-tracks on the middle layer, each with RTX and transport-wide
/// congestion control negotiated: every copy is rebuilt with a transport-wide sequence number
/// and its picture id, TL0PICIDX and KEYIDX rewritten.
final class SimulcastFanoutFixture: @unchecked Sendable {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let loop: any EventLoop
    let port: MediaPort
    let room: SFURoom
    let sink = CountingSink()
    var publisher: SFUParticipant!
    var publisherTransport: WebRTCTransport!
    var packet: [UInt8]
    var pictureID: UInt16 = 100
    static let middleLayerSSRC: UInt32 = 0xCAFE_0002

    init(subscribers: Int) throws {
        loop = group.next()
        let port = MediaPort(loop: loop, port: 0)
        self.port = port
        let dtls = try DTLSContext(certificate: DTLSCertificate())
        room = try loop.submit { SFURoom(port: port, dtls: dtls, configuration: SFUConfiguration()) }.wait()
        // mid and transport-wide sequence number extensions; a VP8 descriptor with a 15-bit
        // picture id, TL0PICIDX, TID and KEYIDX, then a keyframe header of 480x270.
        packet = [0x90, 96, 0x10, 0x00, 0, 0, 0x10, 0, 0xCA, 0xFE, 0x00, 0x02, 0xBE, 0xDE, 0, 2, 0x10, 0x30, 0x31, 0, 1, 0, 0, 0]
        packet += [0x90, 0xF0, 0x80, 100, 0, 0x20, 0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0xE0, 0x01, 0x0E, 0x01]
        packet += [UInt8](repeating: 0x5A, count: 1000 - packet.count)
        try loop.submit {
            let now = self.port.now()
            let transport = self.room.transport(for: "publisher", role: .publisher)
            transport.sink = self.sink
            try connect(transport, sink: self.sink, port: 40_000, now: now)
            self.publisherTransport = transport
            self.publisher = self.room.participants["publisher"]
            let vp8 = RTPCodec(payloadType: 96, name: "VP8", clockRate: 90_000)
            let rtx = RTPCodec(payloadType: 97, name: "rtx", clockRate: 90_000, fmtp: "apt=96")
            let layers = ["q", "h", "f"].enumerated().map { index, rid in
                Publication.LayerDescription(rid: rid, ssrc: 0xCAFE_0001 + UInt32(index), retransmissionSSRC: 0xBEEF_0001 + UInt32(index))
            }
            let publication = self.room.publish(
                participant: "publisher", trackSid: "TR_video", kind: .video, mid: "0", ssrc: nil, layers: layers, codecs: [vp8, rtx],
                extensions: RTPExtensionIDs(mid: 1, transportCC: 3), feedback: .init(nack: true, pli: true, fir: true, remb: true, transportCC: true),
                retransmission: [97: 96])
            for index in 0..<subscribers {
                let sid = "subscriber\(index)"
                let transport = self.room.transport(for: sid, role: .subscriber)
                transport.sink = self.sink
                try connect(transport, sink: self.sink, port: UInt16(41_000 + index), now: now)
                let downTrack = self.room.subscribe(sid, to: publication, mid: "0")
                self.room.negotiate(
                    downTrack, codecs: [RTPCodec(payloadType: 100, name: "VP8", clockRate: 90_000)], retransmissionPayloadType: 101,
                    extensions: RTPExtensionIDs(mid: 1, transportCC: 5))
            }
        }.wait()
        // The keyframe every down-track starts from; then interframes, TIDs 0, 2, 1, 2, ...
        try forward(count: 1)
        packet[30] = 0x11  // the VP8 header's P bit: an interframe
    }

    /// Forwards `count` packets, a frame each (consecutive sequence numbers and picture ids).
    func forward(count: Int) throws {
        try loop.submit {
            for _ in 0..<count {
                let sequence = (UInt16(self.packet[2]) << 8 | UInt16(self.packet[3])) &+ 1
                self.packet[2] = UInt8(sequence >> 8)
                self.packet[3] = UInt8(sequence & 0xFF)
                self.pictureID &+= 1
                self.packet[20] = UInt8(truncatingIfNeeded: self.pictureID >> 8)
                self.packet[21] = UInt8(truncatingIfNeeded: self.pictureID)
                self.packet[26] = 0x80 | UInt8(self.pictureID >> 8 & 0x7F)
                self.packet[27] = UInt8(self.pictureID & 0xFF)
                let temporal: UInt8 = [0, 2, 1, 2][Int(self.pictureID % 4)]
                self.packet[29] = temporal << 6 | 0x01
                self.packet.withUnsafeMutableBytes { buffer in
                    self.publisher.transport(self.publisherTransport, didReceiveRTP: buffer)
                }
            }
        }.wait()
    }

    func shutdown() {
        try? loop.submit { self.room.close() }.wait()
        try? group.syncShutdownGracefully()
    }
}

/// What a running recording does on the packet path (the server's recorder is this plus
/// bookkeeping): copy the payload into the track's recorder, and the once-a-second flush (here
/// every 50 packets, a second of audio) that hands the file bytes to the recording's queue.
final class RecordingTap: PublicationTap, @unchecked Sendable {
    let session: RecordingSession
    private var received = 0

    init(directory: String) throws {
        session = try RecordingSession(directory: directory, mode: "tracks", startedAt: 0, label: "bench")
    }

    func tap(_ room: SFURoom, published publication: Publication) {}
    func tap(_ room: SFURoom, unpublished publication: Publication) {}
    func tap(_ room: SFURoom, received packet: UnsafeRawBufferPointer, header: RTPHeader, from publication: Publication, now: UInt64) {
        if !session.isRecording(publication.trackSid) {
            session.addTrack(.init(trackSid: publication.trackSid, participantSid: publication.participantSid, kind: "video", codec: "vp8"))
        }
        session.receive(
            RecordedPacket(
                ssrc: header.ssrc, sequence: header.sequenceNumber, timestamp: header.timestamp, marker: header.marker,
                payload: Array(UnsafeRawBufferPointer(rebasing: packet[header.payloadRange])), arrival: now),
            track: publication.trackSid)
        received += 1
        if received % 50 == 0 { session.flush(now: now) }
    }
}

/// Warms a fan-out fixture up, then measures forwarding one packet per iteration to its 100
/// subscribers, and checks every copy left.
func measureFanout(_ benchmark: Benchmark, sink: CountingSink, forward: (Int) throws -> Void) throws {
    try forward(100)
    let before = sink.datagrams
    benchmark.startMeasurement()
    try forward(benchmark.scaledIterations.count)
    benchmark.stopMeasurement()
    precondition(sink.datagrams - before == 100 * benchmark.scaledIterations.count, "every copy was sent")
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal, .cpuTotal],
        warmupIterations: 100,
        maxDuration: .seconds(5),
        maxIterations: 100_000)

    // A thousand packets per sample, so a sample is long enough for the clock.
    let perPacket = Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal], scalingFactor: .kilo, maxDuration: .seconds(5))

    let keys = SRTPKeyMaterial(profile: .aeadAES128GCM, key: Array(0..<16), salt: Array(0..<12))
    var rtp: [UInt8] = [0x80, 111, 0, 1, 0, 0, 0x03, 0xC0, 0x12, 0x34, 0x56, 0x78] + [UInt8](repeating: 7, count: 160)
    rtp += [UInt8](repeating: 0, count: SRTPSession.maxTrailer)

    // Protect one 160-byte Opus packet (what every forwarded copy costs in crypto).
    Benchmark("SRTP protect (AES-GCM, 172-byte RTP)", configuration: perPacket) { benchmark in
        let session = try SRTPSession(keys, direction: .outbound)
        var buffer = rtp
        benchmark.startMeasurement()
        for index in benchmark.scaledIterations {
            buffer[3] = UInt8(truncatingIfNeeded: index)
            buffer[2] = UInt8(truncatingIfNeeded: index >> 8)
            _ = try buffer.withUnsafeMutableBytes { try session.protectRTP($0, length: 172) }
        }
    }

    Benchmark("SRTP unprotect (AES-GCM, 172-byte RTP)", configuration: perPacket) { benchmark in
        let sender = try SRTPSession(keys, direction: .outbound)
        let receiver = try SRTPSession(keys, direction: .inbound)
        let count = benchmark.scaledIterations.count
        var protected: [[UInt8]] = []
        protected.reserveCapacity(count)
        for index in 0..<count {
            var buffer = rtp
            buffer[2] = UInt8(truncatingIfNeeded: index >> 8)
            buffer[3] = UInt8(truncatingIfNeeded: index)
            buffer[4] = UInt8(truncatingIfNeeded: index >> 16)  // distinct timestamps, the index wraps sequence numbers
            let length = try buffer.withUnsafeMutableBytes { try sender.protectRTP($0, length: 172) }
            protected.append(Array(buffer[..<length]))
        }
        benchmark.startMeasurement()
        for index in 0..<count {
            let length = protected[index].count
            _ = try? protected[index].withUnsafeMutableBytes { try receiver.unprotectRTP($0, length: length) }
        }
    }

    // What the kernel charges a media worker per datagram on loopback: a batch of 64 forwarded-size
    // datagrams through one sendmmsg (the media port's flush) and read back by the receiving socket,
    // whose network stack runs in the sender's system call on loopback.
    Benchmark(
        "64 datagrams of 200 bytes: one sendmmsg to a loopback socket, then received",
        configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal], maxDuration: .seconds(5))
    ) { benchmark in
        let loopback = TransportAddress(ip: IPAddress("127.0.0.1")!, port: 0)
        let sender = try bindUDPSocket(loopback, bufferBytes: 4 << 20)
        let receiver = try bindUDPSocket(loopback, bufferBytes: 4 << 20)
        defer {
            close(sender)
            close(receiver)
        }
        guard let bound = localAddress(of: receiver) else { fatalError("the receiving socket has no address") }
        let destination = RawSocketAddress(bound)
        var batch = SendBatch(capacity: 64)
        let payload = [UInt8](repeating: 0x5A, count: 200)
        var drain = [UInt8](repeating: 0, count: 2048)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            payload.withUnsafeBytes { bytes in
                for _ in 0..<64 { batch.append(bytes, to: destination) }
                precondition(batch.flush(through: sender) == 0, "the kernel refused datagrams")
            }
            for _ in 0..<64 { precondition(recv(receiver, &drain, drain.count, Int32(MSG_DONTWAIT)) == 200, "a datagram went missing") }
        }
    }

    // Parse and rewrite one packet for a subscriber: SSRC, sequence, timestamp, PT, extension ids.
    // A subscriber's estimator taking one transport-wide feedback of 100 packets (about 100 ms of
    // 1,000-byte packets at 8 Mbit/s): parse the RTCP, then update the estimate.
    Benchmark(
        "send-side estimator: one TWCC feedback of 100 packets (parse + estimate)",
        configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal], maxDuration: .seconds(5))
    ) { benchmark in
        var estimator = SendSideEstimator()
        var recorder = TWCCRecorder(senderSSRC: 1, mediaSSRC: 2)
        var now: Int64 = 1_000_000
        var feedbacks: [[UInt8]] = []
        for _ in benchmark.scaledIterations {
            for _ in 0..<100 {
                now += 1_000
                let sequence = estimator.packetSent(size: 1_000, at: now)
                recorder.packetArrived(sequenceNumber: sequence, arrivalMicroseconds: now + 20_000)
            }
            feedbacks.append(recorder.makeFeedback()[0].serialized())
        }
        benchmark.startMeasurement()
        for feedback in feedbacks {
            let parsed = try feedback.withUnsafeBytes { try TWCCFeedback(parsing: $0) }
            blackHole(estimator.feedbackReceived(parsed, now: now))
        }
    }

    Benchmark("RTP rewrite for one down-track", configuration: perPacket) { benchmark in
        var rewriter = SequenceRewriter(clockRate: 90_000, outgoingSSRC: 0x1111_2222)
        var map = ExtensionIDMap()
        map[1] = 2
        map[3] = 4
        var packet: [UInt8] = [0x90, 96, 0, 0, 0, 0, 0x10, 0, 0xCA, 0xFE, 0xBA, 0xBE, 0xBE, 0xDE, 0, 2, 0x10, 0x30, 0x32, 1, 2, 3, 0, 0]
        packet += [UInt8](repeating: 0x5A, count: 976)
        benchmark.startMeasurement()
        for index in benchmark.scaledIterations {
            packet[2] = UInt8(truncatingIfNeeded: index >> 8)
            packet[3] = UInt8(truncatingIfNeeded: index)
            packet.withUnsafeMutableBytes { buffer in
                guard var writer = RTPPacketRewriter(buffer) else { return }
                let header = writer.header
                guard let output = rewriter.rewrite(
                    ssrc: header.ssrc, sequenceNumber: header.sequenceNumber, timestamp: header.timestamp, arrivalNanoseconds: Int64(index))
                else { return }
                writer.setSSRC(0x1111_2222)
                writer.setSequenceNumber(output.sequenceNumber)
                writer.setTimestamp(output.timestamp)
                writer.setPayloadType(100)
                _ = writer.remapExtensionIDs(map)
                blackHole(writer)
            }
        }
    }

    // One received packet to 100 subscribers: per copy, rewrite + SRTP protect + hand to the socket layer.
    Benchmark(
        "one packet fanned out to 100 down-tracks",
        configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal, .cpuTotal], maxIterations: 20_000)
    ) { benchmark in
        let fixture = try FanoutFixture(subscribers: 100)
        defer { fixture.shutdown() }
        try measureFanout(benchmark, sink: fixture.sink, forward: fixture.forward)
    }

    // Issue 15: a packet of the layer every subscriber takes, each copy with its VP8 descriptor
    // rewritten and a transport-wide sequence number stamped (the estimator records it).
    Benchmark(
        "one simulcast VP8 packet fanned out to 100 down-tracks (layer chosen, VP8 rewritten, TWCC stamped)",
        configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal, .cpuTotal], maxIterations: 20_000)
    ) { benchmark in
        let fixture = try SimulcastFanoutFixture(subscribers: 100)
        defer { fixture.shutdown() }
        try measureFanout(benchmark, sink: fixture.sink, forward: fixture.forward)
    }

    // The same while the room is recorded: what recording adds to the forwarding path.
    Benchmark(
        "one packet fanned out to 100 down-tracks, room recorded",
        configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal, .cpuTotal], maxIterations: 20_000)
    ) { benchmark in
        let fixture = try FanoutFixture(subscribers: 100)
        defer { fixture.shutdown() }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("parley-bench-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let tap = try RecordingTap(directory: directory)
        try fixture.loop.submit { fixture.room.tap = tap }.wait()
        try fixture.forward(count: 100)
        benchmark.startMeasurement()
        try fixture.forward(count: benchmark.scaledIterations.count)
        benchmark.stopMeasurement()
        try fixture.loop.submit { fixture.room.tap = nil }.wait()
    }
}
