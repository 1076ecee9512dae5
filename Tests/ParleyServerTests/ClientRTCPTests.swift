@testable import ParleyClient
@testable import ParleyTools
import ParleyProtocol
import RTP
import Testing

/// The client's RTCP bookkeeping with times passed in: receiver reports and NACKs for what it
/// receives, retransmissions and feedback counts for what it sends; the room state a
/// reconnection reconciles; the reconnect backoff.
@Suite(.timeLimit(.minutes(2))) struct ClientRTCPTests {
    static let millisecond: UInt64 = 1_000_000

    /// An RTP packet as the synthetic senders write it, 90 kHz timestamps 10 ms apart.
    static func packet(_ sequenceNumber: UInt16, ssrc: UInt32, payload: [UInt8] = [1, 2, 3, 4]) -> [UInt8] {
        SyntheticRTP.header(payloadType: 96, sequence: sequenceNumber, timestamp: UInt32(sequenceNumber) * 900, ssrc: ssrc, marker: false, now: 0)
            + payload
    }

    static func receive(_ sequenceNumber: UInt16, ssrc: UInt32, into streams: inout InboundStreams) {
        let bytes = packet(sequenceNumber, ssrc: ssrc)
        bytes.withUnsafeBytes { raw in
            streams.received(RTPHeader(raw)!, packet: raw, now: UInt64(sequenceNumber) * 10 * millisecond)
        }
    }

    static func nackedSequenceNumbers(_ compound: [UInt8]) -> (mediaSSRC: UInt32, lost: [UInt16])? {
        compound.withUnsafeBytes { raw in
            var iterator = RTCPCompoundIterator(raw)
            guard let packet = iterator.next(), let nack = RTCPGenericNack(packet) else { return nil }
            var lost: [UInt16] = []
            nack.forEachLostSequenceNumber { lost.append($0) }
            return (nack.mediaSSRC, lost)
        }
    }

    @Test func gapsAreNackedUntilTheyArriveAndReportsCountTheLoss() throws {
        var streams = InboundStreams()
        streams.expect(ssrc: 7, clockRate: 90_000, nack: true)
        for sequenceNumber in UInt16(100)...109 where sequenceNumber != 104 && sequenceNumber != 105 {
            Self.receive(sequenceNumber, ssrc: 7, into: &streams)
        }
        Self.receive(1, ssrc: 99, into: &streams)  // not announced: ignored

        let first = streams.dueNacks(senderSSRC: 1, now: 1100 * Self.millisecond)
        #expect(first.compactMap(Self.nackedSequenceNumbers).map(\.lost) == [[104, 105]])
        #expect(first.compactMap(Self.nackedSequenceNumbers).map(\.mediaSSRC) == [7])
        // Asked again only after a retry interval.
        let tooSoon = streams.dueNacks(senderSSRC: 1, now: 1110 * Self.millisecond)
        let retry = streams.dueNacks(senderSSRC: 1, now: 1140 * Self.millisecond)
        #expect(tooSoon.isEmpty)
        #expect(retry.count == 1)

        let reports = streams.receiverReports(senderSSRC: 1, cname: "me", now: 2000 * Self.millisecond)
        let block = try #require(reports.first.flatMap { compound in
            compound.withUnsafeBytes { raw -> ReportBlock? in
                var iterator = RTCPCompoundIterator(raw)
                guard let packet = iterator.next(), let report = RTCPReceiverReport(packet), report.ssrc == 1,
                    let description = iterator.next(), description.packetType == .sourceDescription
                else { return nil }
                return report.reportBlocks.first
            }
        })
        #expect(block.ssrc == 7)
        #expect(block.cumulativeLost == 2)
        #expect(block.fractionLost == 51)  // 2 of 10, in 1/256
        #expect(block.extendedHighestSequence == 109)
        #expect(block.jitter == 0)  // timestamps and arrivals equally spaced
        #expect(streams.streams[99] == nil)

        // The retransmissions fill the gaps: nothing lost, nothing more to ask.
        Self.receive(104, ssrc: 7, into: &streams)
        Self.receive(105, ssrc: 7, into: &streams)
        let afterRecovery = streams.dueNacks(senderSSRC: 1, now: 1300 * Self.millisecond)
        #expect(afterRecovery.isEmpty)
        let stream = try #require(streams.streams[7])
        #expect(stream.statistics.cumulativeLost == 0)
        #expect(stream.nacksSent == 2)
        #expect(stream.fractionLost == 51)
        #expect(stream.packets == 10)
    }

    @Test func streamsWithoutNackAreOnlyCountedAndReportsWaitForPackets() {
        var streams = InboundStreams()
        streams.expect(ssrc: 8, clockRate: 48_000, nack: false)
        let beforePackets = streams.receiverReports(senderSSRC: 1, cname: "me", now: 0)
        #expect(beforePackets.isEmpty)
        for sequenceNumber in UInt16(1)...5 where sequenceNumber != 3 { Self.receive(sequenceNumber, ssrc: 8, into: &streams) }
        let nacks = streams.dueNacks(senderSSRC: 1, now: 500 * Self.millisecond)
        #expect(nacks.isEmpty)
        #expect(streams.streams[8]?.statistics.cumulativeLost == 1)
        let reports = streams.receiverReports(senderSSRC: 1, cname: "me", now: 1000 * Self.millisecond)
        #expect(reports.count == 1)
        streams.keepOnly([])
        #expect(streams.streams.isEmpty)
    }

    @Test func nackedPacketsAreResentFromTheHistoryAndFeedbackIsCounted() throws {
        var streams = OutboundStreams()
        streams.willSend(ssrc: 7, clockRate: 90_000, retransmittable: true)
        streams.willSend(ssrc: 8, clockRate: 48_000, retransmittable: false)
        var sent: [UInt16: [UInt8]] = [:]
        for sequenceNumber in UInt16(1)...5 {
            for ssrc: UInt32 in [7, 8] {
                let bytes = Self.packet(sequenceNumber, ssrc: ssrc, payload: [UInt8(sequenceNumber), 9, 9])
                bytes.withUnsafeBytes { streams.sent($0, header: RTPHeader($0)!, now: UInt64(sequenceNumber) * Self.millisecond) }
                if ssrc == 7 { sent[sequenceNumber] = bytes }
            }
        }
        var resent: [[UInt8]] = []
        let packets: [[UInt8]?] = [
            RTCPBuilder.genericNack(senderSSRC: 1, mediaSSRC: 7, lostSequenceNumbers: [2, 4, 900]),
            RTCPBuilder.genericNack(senderSSRC: 1, mediaSSRC: 8, lostSequenceNumbers: [3]),
            RTCPBuilder.pictureLossIndication(senderSSRC: 1, mediaSSRC: 7),
            RTCPBuilder.fullIntraRequest(senderSSRC: 1, entries: [FIREntry(ssrc: 7, sequenceNumber: 1)]),
            RTCPBuilder.receiverReport(ssrc: 1, reportBlocks: [ReportBlock(ssrc: 8, fractionLost: 64, cumulativeLost: 3, jitter: 480)]),
        ]
        let feedback = try packets.flatMap { try #require($0) }
        feedback.withUnsafeBytes { raw in
            var iterator = RTCPCompoundIterator(raw)
            while let packet = iterator.next() {
                streams.handle(packet) { stored, retransmission in
                    #expect(retransmission == nil)
                    resent.append(Array(stored))
                    return true
                }
            }
        }
        #expect(resent == [sent[2], sent[4]])
        let video = try #require(streams.streams[7])
        #expect(video.nacksReceived == 1)
        #expect(video.retransmissions == 2)
        #expect(video.retransmissionMisses == 1)
        #expect(video.plisReceived == 1)
        #expect(video.firsReceived == 1)
        #expect(video.packets == 5)
        #expect(video.remoteReport == nil)
        let audio = try #require(streams.streams[8])
        #expect(audio.nacksReceived == 1)
        #expect(audio.retransmissionMisses == 1)
        #expect(audio.remoteReport?.cumulativeLost == 3)

        streams.updateBitrates(now: 1001 * Self.millisecond)
        // 5 packets of 35 bytes in the second since the first one.
        #expect(streams.streams[7]?.bitrate == Double(5 * 35 * 8))
    }

    @Test func reconnectionReconcilesParticipantsAndChat() {
        func participant(_ name: String, tracks: [String], presence: PresenceStatus = .online) -> ParticipantInfo {
            ParticipantInfo(
                sid: "PA_\(name)", identity: name, name: name, metadata: "", presence: Presence(status: presence, text: "", since: 0),
                tracks: tracks.map { TrackInfo(sid: $0, kind: "audio", source: "microphone", muted: false) })
        }
        let joined = Joined(
            room: RoomInfo(sid: "RM_1", name: "r", metadata: "", createdAt: 0),
            participant: participant("me", tracks: []),
            participants: [participant("alice", tracks: ["TR_a1", "TR_a2"]), participant("bob", tracks: [])], iceServers: [],
            chat: ChatPage(messages: [], hasMore: false), server: ServerInfo(version: "t", node: "n"), resumed: false)
        var state = RoomState(joined: joined)
        #expect(state.lastChatSeq == 0)

        let events = state.reconcile(with: [
            participant("alice", tracks: ["TR_a2", "TR_a3"], presence: .away), participant("carol", tracks: ["TR_c1"]),
        ])
        let described = events.map { event -> String in
            switch event {
            case .participantLeft(let sid, _): "left \(sid)"
            case .participantJoined(let info): "joined \(info.sid) with \(info.tracks?.count ?? 0) tracks"
            case .trackPublished(let participant, let track): "published \(participant) \(track.sid)"
            case .trackUnpublished(let participant, let track): "unpublished \(participant) \(track)"
            case .presence(let presence): "presence \(presence.participant) \(presence.status)"
            default: "\(event)"
            }
        }
        #expect(described == [
            "left PA_bob", "unpublished PA_alice TR_a1", "published PA_alice TR_a3", "presence PA_alice away",
            "joined PA_carol with 0 tracks", "published PA_carol TR_c1",
        ])
        #expect(state.participants.map(\.sid) == ["PA_alice", "PA_carol"])

        func message(_ seq: Int64, from: String) -> ChatMessage {
            ChatMessage(id: "MS_\(seq)", seq: seq, from: ChatSender(sid: "PA_\(from)", identity: from, name: from), text: "\(seq)", to: nil, ts: 0,
                clientMsgId: nil)
        }
        let first = state.chatArrived(message(1, from: "alice"))
        #expect(first)
        // The catch-up delivers others' messages after the last one seen, and their live copies are not repeated.
        let fresh = state.caughtUp([message(2, from: "alice"), message(3, from: "me"), message(4, from: "carol")], ownIdentity: "me")
        #expect(fresh.map(\.seq) == [2, 4])
        #expect(state.lastChatSeq == 4)
        let liveCopy = state.chatArrived(message(4, from: "carol"))
        let next = state.chatArrived(message(5, from: "carol"))
        #expect(!liveCopy)
        #expect(next)
    }

    @Test func reconnectAttemptsBackOffUpToTheLimit() {
        let policy = ParleyRoom.ReconnectPolicy(initialDelay: .milliseconds(250), maxDelay: .seconds(2))
        let delays = (1...7).map { policy.delay(beforeAttempt: $0) }
        #expect(delays == [
            .zero, .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(2), .seconds(2),
        ])
    }
}
