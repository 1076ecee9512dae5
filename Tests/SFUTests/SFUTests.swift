import Addresses
import NIOCore
import NIOPosix
import RTP
import STUN
import Testing
@testable import SFU
@testable import WebRTC

/// Records what transports send, instead of a socket.
final class CapturingSink: DatagramSink, @unchecked Sendable {
    var sent: [(bytes: [UInt8], to: TransportAddress)] = []

    func send(_ datagram: UnsafeRawBufferPointer, to address: TransportAddress) { sent.append((Array(datagram), address)) }

    func transport(_ transport: WebRTCTransport, didSelect address: TransportAddress, previous: TransportAddress?) {}

    func take(to address: TransportAddress) -> [[UInt8]] {
        let matching = sent.filter { $0.to == address }.map(\.bytes)
        sent.removeAll { $0.to == address }
        return matching
    }
}

/// The client end of one server transport: its address and SRTP sessions from a real handshake.
/// Used only on the room's loop (the fixture runs every step there).
struct Peer: @unchecked Sendable {
    let transport: WebRTCTransport
    let address: TransportAddress
    let outbound: SRTPSession
    let inbound: SRTPSession

    /// Protects `packet` as the client and feeds it to the server transport.
    func sendRTP(_ packet: [UInt8], now: UInt64) throws {
        var buffer = packet + [UInt8](repeating: 0, count: SRTPSession.maxTrailer)
        let length = try buffer.withUnsafeMutableBytes { try outbound.protectRTP($0, length: packet.count) }
        buffer.withUnsafeMutableBytes { transport.receive(UnsafeMutableRawBufferPointer(rebasing: $0[..<length]), from: address, now: now) }
    }

    func sendRTCP(_ packet: [UInt8], now: UInt64) throws {
        var buffer = packet + [UInt8](repeating: 0, count: SRTPSession.maxTrailer + 4)
        let length = try buffer.withUnsafeMutableBytes { try outbound.protectRTCP($0, length: packet.count) }
        buffer.withUnsafeMutableBytes { transport.receive(UnsafeMutableRawBufferPointer(rebasing: $0[..<length]), from: address, now: now) }
    }

    /// How many PLIs for `mediaSSRC` the server sent this peer since the last look.
    func pictureLossIndications(for mediaSSRC: UInt32, from sink: CapturingSink) -> Int {
        var count = 0
        for compound in received(from: sink).rtcp {
            compound.withUnsafeBytes { bytes in
                var iterator = RTCPCompoundIterator(bytes)
                while let packet = iterator.next() {
                    if let pli = RTCPPictureLossIndication(packet), pli.mediaSSRC == mediaSSRC { count += 1 }
                }
            }
        }
        return count
    }

    /// What the server sent this peer, decrypted: RTP packets and RTCP compounds.
    func received(from sink: CapturingSink) -> (rtp: [[UInt8]], rtcp: [[UInt8]]) {
        var rtp: [[UInt8]] = [], rtcp: [[UInt8]] = []
        for var datagram in sink.take(to: address) {
            let count = datagram.count
            switch datagram.withUnsafeBytes({ PacketKind($0) }) {
            case .rtp:
                if let length = try? datagram.withUnsafeMutableBytes({ try inbound.unprotectRTP($0, length: count) }) { rtp.append(Array(datagram[..<length])) }
            case .rtcp:
                if let length = try? datagram.withUnsafeMutableBytes({ try inbound.unprotectRTCP($0, length: count) }) { rtcp.append(Array(datagram[..<length])) }
            default: break
            }
        }
        return (rtp, rtcp)
    }
}

/// An SFU room on its own loop, with peers connected through real ICE checks and DTLS.
final class RoomFixture: @unchecked Sendable {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let loop: any EventLoop
    let port: MediaPort
    let room: SFURoom
    let sink = CapturingSink()
    private var nextPort: UInt16 = 40_000

    init() throws {
        loop = group.next()
        port = MediaPort(loop: loop, port: 0)
        let dtls = try DTLSContext(certificate: DTLSCertificate())
        let port = port
        room = try loop.submit { SFURoom(port: port, dtls: dtls, configuration: SFUConfiguration(pliIntervalNanoseconds: 500_000_000)) }.wait()
    }

    func onLoop<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await loop.submit(body).get()
    }

    /// Connects `sid`'s transport for `role` the way a browser would (on the loop).
    func connect(_ sid: String, role: TransportRole) throws -> Peer {
        let transport = room.transport(for: sid, role: role)
        transport.sink = sink
        let clientCertificate = try DTLSCertificate()
        let clientICE = ICECredentials.random()
        let now = port.now()
        try transport.configure(remote: .init(ice: clientICE, fingerprint: clientCertificate.fingerprint, dtlsRole: .server), now: now)
        nextPort += 1
        let address = TransportAddress(ip: IPAddress("127.0.0.1")!, port: nextPort)
        var check = STUNMessageBuilder(type: .bindingRequest, transactionID: .random())
        check.append(.username, string: "\(transport.localICE.ufrag):\(clientICE.ufrag)")
        check.appendFlag(.useCandidate)
        check.appendMessageIntegrity(key: STUNIntegrity.shortTermKey(password: transport.localICE.password))
        check.appendFingerprint()
        transport.handleSTUN(try STUNMessage(parsing: check.bytes), from: address, now: now)
        _ = sink.take(to: address)
        let client = try DTLSEndpoint(
            context: try DTLSContext(certificate: clientCertificate), role: .client, remoteFingerprint: transport.localFingerprint)
        var toServer = client.start()
        while case .handshaking = client.state, !toServer.isEmpty {
            for var datagram in toServer { datagram.withUnsafeMutableBytes { transport.receive($0, from: address, now: now) } }
            toServer = sink.take(to: address).flatMap { reply in reply.withUnsafeBytes { client.receive($0) } }
        }
        guard case .connected(let keys) = client.state, transport.isConnected else { throw DTLSError.handshake("fixture did not connect") }
        return Peer(
            transport: transport, address: address, outbound: try SRTPSession(keys.local, direction: .outbound),
            inbound: try SRTPSession(keys.remote, direction: .inbound))
    }

    func shutdown() async throws {
        try await onLoop { self.room.close() }
        try await group.shutdownGracefully()
    }
}

/// A VP8 packet with the publisher's mid (id 1, "0") and abs-send-time (id 3) extensions.
func videoPacket(ssrc: UInt32, sequence: UInt16, timestamp: UInt32, payload: UInt8 = 0x42) -> [UInt8] {
    var packet: [UInt8] = [0x90, 96, UInt8(sequence >> 8), UInt8(sequence & 0xFF)]
    packet += withUnsafeBytes(of: timestamp.bigEndian, Array.init) + withUnsafeBytes(of: ssrc.bigEndian, Array.init)
    packet += [0xBE, 0xDE, 0, 2, 0x10, UInt8(ascii: "0"), 0x32, 1, 2, 3, 0, 0]
    return packet + [UInt8](repeating: payload, count: 100)
}

@Suite(.serialized, .timeLimit(.minutes(2))) struct SFUForwardingTests {
    static let vp8 = RTPCodec(payloadType: 96, name: "VP8", clockRate: 90_000)
    static let feedback = Publication.Feedback(nack: true, pli: true, fir: true, remb: true)

    /// Publisher "pub" with one video track; subscriber "sub" negotiated VP8 as 100, mid as 2, abs-send-time as 4.
    static func setUp(_ fixture: RoomFixture) async throws -> (publisher: Peer, subscriber: Peer, outgoingSSRC: UInt32) {
        let peers = try await fixture.onLoop { () -> (Peer, Peer, UInt32) in
            let publisher = try fixture.connect("pub", role: .publisher)
            let publication = fixture.room.publish(
                participant: "pub", trackSid: "TR_v", kind: .video, mid: "0", ssrc: 0xAAAA_0001, codecs: [vp8],
                extensions: RTPExtensionIDs(mid: 1, absSendTime: 3), feedback: feedback)
            let subscriber = try fixture.connect("sub", role: .subscriber)
            let downTrack = fixture.room.subscribe("sub", to: publication, mid: "0")
            fixture.room.negotiate(
                downTrack, codecs: [RTPCodec(payloadType: 100, name: "VP8", clockRate: 90_000)], extensions: RTPExtensionIDs(mid: 2, absSendTime: 4))
            return (publisher, subscriber, downTrack.outgoingSSRC)
        }
        return peers
    }

    @Test func packetsAreRewrittenForTheSubscriberAndContinueAcrossAPublisherRestart() async throws {
        let fixture = try RoomFixture()
        let (publisher, subscriber, outgoingSSRC) = try await Self.setUp(fixture)
        let received = try await fixture.onLoop { () -> [[UInt8]] in
            let now = fixture.port.now()
            for sequence in UInt16(1000)...1002 { try publisher.sendRTP(videoPacket(ssrc: 0xAAAA_0001, sequence: sequence, timestamp: 3000), now: now) }
            // The publisher restarts: new SSRC and numbering, found by its mid extension.
            for sequence in UInt16(7)...8 { try publisher.sendRTP(videoPacket(ssrc: 0xBBBB_0002, sequence: sequence, timestamp: 90), now: now + 40_000_000) }
            return subscriber.received(from: fixture.sink).rtp
        }
        #expect(received.count == 5)
        let headers = received.compactMap { packet in packet.withUnsafeBytes { RTPHeader($0) } }
        #expect(headers.allSatisfy { $0.ssrc == outgoingSSRC && $0.payloadType == 100 })
        let sequences = headers.map(\.sequenceNumber)
        #expect(zip(sequences, sequences.dropFirst()).allSatisfy { $1 == $0 &+ 1 }, "one continuous stream: \(sequences)")
        #expect(headers[3].timestamp > headers[2].timestamp, "the timestamp moves on across the restart")
        for packet in received {
            packet.withUnsafeBytes { bytes in
                let header = RTPHeader(bytes)!
                #expect(header.extensionElement(id: 4, in: bytes) != nil, "abs-send-time under the subscriber's id")
                #expect(header.extensionElement(id: 1, in: bytes) == nil, "the publisher's mid id is not forwarded")
                #expect(bytes[header.payloadRange].allSatisfy { $0 == 0x42 })
            }
        }
        try await fixture.shutdown()
    }

    @Test func aSubscriberNackIsAnsweredFromTheHistory() async throws {
        let fixture = try RoomFixture()
        let (publisher, subscriber, outgoingSSRC) = try await Self.setUp(fixture)
        let (resent, statistics) = try await fixture.onLoop { () -> ([[UInt8]], SFUStatistics) in
            let now = fixture.port.now()
            for (index, sequence) in (UInt16(200)...204).enumerated() {
                try publisher.sendRTP(videoPacket(ssrc: 0xAAAA_0001, sequence: sequence, timestamp: 3000, payload: UInt8(index)), now: now)
            }
            // The subscriber "loses" the 2nd and 4th copies: it reads their (clear) headers only, so
            // their SRTP indices stay unseen and the retransmissions are not replays.
            let forwarded = fixture.sink.take(to: subscriber.address).compactMap { $0.withUnsafeBytes { RTPHeader($0)?.sequenceNumber } }
            let nack = RTCPBuilder.genericNack(senderSSRC: 1, mediaSSRC: outgoingSSRC, lostSequenceNumbers: [forwarded[1], forwarded[3]])!
            try subscriber.sendRTCP(nack, now: now)
            return (subscriber.received(from: fixture.sink).rtp, fixture.room.workerStatistics.counts)
        }
        #expect(resent.count == 2)
        let payloads = resent.map { packet in packet.withUnsafeBytes { bytes in bytes[RTPHeader(bytes)!.payloadRange.lowerBound] } }
        #expect(payloads == [1, 3], "the NACKed packets, with their own payloads")
        #expect(statistics.nacksReceived == 1)
        #expect(statistics.retransmissions == 2)
        try await fixture.shutdown()
    }

    @Test func subscriberPLIsReachThePublisherThrottled() async throws {
        let fixture = try RoomFixture()
        let (publisher, subscriber, outgoingSSRC) = try await Self.setUp(fixture)
        let plis = try await fixture.onLoop { () -> Int in
            let now = fixture.port.now()
            _ = publisher.received(from: fixture.sink)
            let pli = RTCPBuilder.pictureLossIndication(senderSSRC: 1, mediaSSRC: outgoingSSRC)!
            try subscriber.sendRTCP(pli, now: now)
            try subscriber.sendRTCP(pli, now: now)  // within rtc.pliInterval: not forwarded again
            return publisher.pictureLossIndications(for: 0xAAAA_0001, from: fixture.sink)
        }
        #expect(plis == 1)
        try await fixture.shutdown()
    }

    /// The subscriber connects (and asks for a keyframe) before the publisher's transport does:
    /// the request waits and reaches the publisher once it is connected.
    @Test func aKeyframeRequestWaitsForThePublisherToConnect() async throws {
        let fixture = try RoomFixture()
        let plis = try await fixture.onLoop { () -> [Int] in
            let now = fixture.port.now()
            let publication = fixture.room.publish(
                participant: "pub", trackSid: "TR_v", kind: .video, mid: "0", ssrc: 0xAAAA_0001, codecs: [Self.vp8],
                extensions: RTPExtensionIDs(mid: 1, absSendTime: 3), feedback: Self.feedback)
            _ = try fixture.connect("sub", role: .subscriber)
            let downTrack = fixture.room.subscribe("sub", to: publication, mid: "0")
            fixture.room.negotiate(downTrack, codecs: [Self.vp8], extensions: RTPExtensionIDs(mid: 1, absSendTime: 3))
            fixture.room.tick(now: now)  // nobody to ask yet
            let publisher = try fixture.connect("pub", role: .publisher)
            return (1...2).map { step in
                fixture.room.tick(now: now + UInt64(step) * 20_000_000)
                return publisher.pictureLossIndications(for: 0xAAAA_0001, from: fixture.sink)
            }
        }
        // One PLI on the first tick after the publisher connected, and the request is then done.
        #expect(plis == [1, 0])
        try await fixture.shutdown()
    }

    @Test func unmutingContinuesTheStreamWithoutAGap() async throws {
        let fixture = try RoomFixture()
        let (publisher, subscriber, _) = try await Self.setUp(fixture)
        let sequences = try await fixture.onLoop { () -> [UInt16] in
            let now = fixture.port.now()
            let publication = fixture.room.publication(trackSid: "TR_v")!
            try publisher.sendRTP(videoPacket(ssrc: 0xAAAA_0001, sequence: 10, timestamp: 0), now: now)
            fixture.room.setMuted(publication, true)
            for sequence in UInt16(11)...40 { try publisher.sendRTP(videoPacket(ssrc: 0xAAAA_0001, sequence: sequence, timestamp: 0), now: now) }
            fixture.room.setMuted(publication, false)
            try publisher.sendRTP(videoPacket(ssrc: 0xAAAA_0001, sequence: 41, timestamp: 90_000), now: now + 1_000_000_000)
            return subscriber.received(from: fixture.sink).rtp.compactMap { $0.withUnsafeBytes { RTPHeader($0)?.sequenceNumber } }
        }
        #expect(sequences.count == 2)
        #expect(sequences[1] == sequences[0] &+ 1)
        try await fixture.shutdown()
    }

    /// A subscriber's tracks share one compound packet of sender reports each second.
    @Test func theSenderReportsOfASubscribersTracksGoInOneCompound() async throws {
        let fixture = try RoomFixture()
        let (publisher, subscriber, videoSSRC) = try await Self.setUp(fixture)
        let compounds = try await fixture.onLoop { () -> [[UInt32]] in
            let opus = RTPCodec(payloadType: 111, name: "opus", clockRate: 48_000, channels: 2)
            let audio = fixture.room.publish(
                participant: "pub", trackSid: "TR_a", kind: .audio, mid: "1", ssrc: 0xAAAA_0002, codecs: [opus],
                extensions: RTPExtensionIDs(mid: 1, absSendTime: 3), feedback: Publication.Feedback(nack: false, pli: false, fir: false, remb: false))
            let audioDown = fixture.room.subscribe("sub", to: audio, mid: "1")
            fixture.room.negotiate(audioDown, codecs: [opus], extensions: RTPExtensionIDs(mid: 2, absSendTime: 4))
            let now = fixture.port.now()
            try publisher.sendRTP(videoPacket(ssrc: 0xAAAA_0001, sequence: 1, timestamp: 3000), now: now)
            var audioPacket = videoPacket(ssrc: 0xAAAA_0002, sequence: 1, timestamp: 960)
            audioPacket[1] = 111
            try publisher.sendRTP(audioPacket, now: now)
            _ = subscriber.received(from: fixture.sink)
            fixture.room.tick(now: now + 2_000_000_000)
            return subscriber.received(from: fixture.sink).rtcp.map { compound in
                compound.withUnsafeBytes { bytes in
                    var ssrcs: [UInt32] = []
                    var iterator = RTCPCompoundIterator(bytes)
                    while let packet = iterator.next() { if let report = RTCPSenderReport(packet) { ssrcs.append(report.ssrc) } }
                    return ssrcs
                }
            }
        }
        #expect(compounds.count == 1, "one datagram: \(compounds)")
        #expect(compounds.first?.count == 2)
        #expect(compounds.first?.contains(videoSSRC) == true)
        try await fixture.shutdown()
    }

    @Test func gapsAreNackedUpstreamAndReportsGoOutEachSecond() async throws {
        let fixture = try RoomFixture()
        let (publisher, subscriber, outgoingSSRC) = try await Self.setUp(fixture)
        let (nacked, receiverReports, senderReports, rembs) = try await fixture.onLoop { () -> ([UInt16], Int, Int, [UInt64]) in
            let now = fixture.port.now()
            for sequence: UInt16 in [1, 2, 5] {
                try publisher.sendRTP(videoPacket(ssrc: 0xAAAA_0001, sequence: sequence, timestamp: 3000), now: now)
            }
            fixture.room.tick(now: now + 2_000_000_000)
            var nacked: [UInt16] = [], receiverReports = 0, senderReports = 0, rembs: [UInt64] = []
            for compound in publisher.received(from: fixture.sink).rtcp {
                compound.withUnsafeBytes { bytes in
                    var iterator = RTCPCompoundIterator(bytes)
                    while let packet = iterator.next() {
                        if let nack = RTCPGenericNack(packet), nack.mediaSSRC == 0xAAAA_0001 { nack.forEachLostSequenceNumber { nacked.append($0) } }
                        if let report = RTCPReceiverReport(packet), report.reportBlocks.contains(where: { $0.ssrc == 0xAAAA_0001 && $0.cumulativeLost == 2 }) {
                            receiverReports += 1
                        }
                        if let remb = RTCPREMB(packet) { rembs.append(remb.bitrate) }
                    }
                }
            }
            for compound in subscriber.received(from: fixture.sink).rtcp {
                compound.withUnsafeBytes { bytes in
                    var iterator = RTCPCompoundIterator(bytes)
                    while let packet = iterator.next() {
                        if let report = RTCPSenderReport(packet), report.ssrc == outgoingSSRC, report.packetCount == 3 { senderReports += 1 }
                    }
                }
            }
            return (nacked, receiverReports, senderReports, rembs)
        }
        #expect(nacked == [3, 4])
        #expect(receiverReports == 1, "the receiver report counts the two lost packets")
        #expect(senderReports == 1, "the subscriber gets a sender report for its down-track")
        #expect(rembs.count == 1 && rembs[0] <= 2_500_000 && rembs[0] > 2_000_000, "REMB capped by rtc.maxBitrate: \(rembs)")
        try await fixture.shutdown()
    }

    @Test func aParticipantLeavingTakesItsTransportsAndDownTracks() async throws {
        let fixture = try RoomFixture()
        _ = try await Self.setUp(fixture)
        let (transports, downTracks, publication, orphaned) = try await fixture.onLoop { () -> (Int, Int, Bool, Bool) in
            let publication = fixture.room.publication(trackSid: "TR_v")!
            fixture.room.removeParticipant("pub")
            return (
                fixture.port.transportCount, fixture.room.participants["sub"]?.downTracks.count ?? -1,
                fixture.room.publication(trackSid: "TR_v") != nil, publication.downTracks.isEmpty
            )
        }
        #expect(transports == 1)
        #expect(downTracks == 0)
        #expect(!publication)
        #expect(orphaned)
        try await fixture.onLoop { fixture.room.removeParticipant("sub") }
        #expect(try await fixture.onLoop { fixture.port.transportCount } == 0)
        try await fixture.shutdown()
    }
}
