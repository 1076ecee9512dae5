import Testing
@testable import SDP

/// Chromium's simulcast offer (three layers q, h, f of a 960×540 camera: rids, `a=simulcast`,
/// the RID and repaired-RID extensions, RTX for every video codec) and the attributes' grammar.
@Suite struct SimulcastTests {
    @Test func chromiumsSimulcastOfferIsReadAsTyped() throws {
        let offer = try SessionDescription(parsing: try fixture("chromium-156-simulcast-offer"))
        let video = try #require(offer.media.first { $0.kind == "video" })
        #expect(video.rids.map(\.id) == ["q", "h", "f"])
        #expect(video.rids.allSatisfy { $0.direction == .send })
        #expect(video.simulcast == SimulcastDescription(send: [[.init(rid: "q")], [.init(rid: "h")], [.init(rid: "f")]]))
        let uris = Set(video.extmaps.map(\.uri))
        #expect(uris.isSuperset(of: [Extmap.ridURI, Extmap.repairedRIDURI, Extmap.midURI, Extmap.transportCCURI]))
        // Every video codec has its RTX payload type: VP8 96 → 97.
        let rtx = video.retransmissionPayloadTypes
        #expect(rtx[96] == 97)
        let vp8AndH264 = video.codecs.filter { ["VP8", "H264"].contains($0.name) }
        #expect(!vp8AndH264.isEmpty && vp8AndH264.allSatisfy { rtx[$0.payloadType] != nil })
        #expect(video.codecs.first { $0.name == "VP8" }?.feedback.contains("transport-cc") == true)
        // Chromium names no SSRCs for simulcast layers: they are learned from the packets.
        #expect(video.ssrcGroups.isEmpty)
        let audio = try #require(offer.media.first { $0.kind == "audio" })
        #expect(audio.rids.isEmpty && audio.simulcast == nil)
    }

    @Test func ridsSimulcastAndSSRCGroupsParseAndPrint() {
        let rid = RIDDescription("f send pt=96,97;max-width=1280;max-height=720")
        #expect(rid?.id == "f" && rid?.direction == .send)
        #expect(rid?.restrictions.map(\.key) == ["pt", "max-width", "max-height"])
        #expect(rid?.value == "f send pt=96,97;max-width=1280;max-height=720")
        #expect(RIDDescription("q recv")?.direction == .recv)
        for bad in ["", "q", "q both", "bad/id send", String(repeating: "a", count: 256) + " send"] {
            #expect(RIDDescription(Substring(bad)) == nil, "\(bad)")
        }

        let simulcast = SimulcastDescription("send q;~h;f,f2 recv r")
        #expect(simulcast?.send.map { $0.map(\.rid) } == [["q"], ["h"], ["f", "f2"]])
        #expect(simulcast?.send[1].first?.paused == true)
        #expect(simulcast?.receive.map { $0.map(\.rid) } == [["r"]])
        #expect(simulcast?.value == "send q;~h;f,f2 recv r")
        for bad in ["", "send", "send q;;h", "send q send h", "up q", "send q recv"] {
            #expect(SimulcastDescription(Substring(bad)) == nil, "\(bad)")
        }

        #expect(SSRCGroup("SIM 1 2 3") == SSRCGroup(semantics: "SIM", ssrcs: [1, 2, 3]))
        #expect(SSRCGroup("FID 10 11")?.value == "FID 10 11")
        #expect(SSRCGroup("SIM 1 x") == nil && SSRCGroup("SIM") == nil)
    }

    @Test func anSSRCGroupSIMOfferListsItsLayersLowestFirst() throws {
        let text = """
            v=0\r
            o=- 1 2 IN IP4 127.0.0.1\r
            s=-\r
            t=0 0\r
            m=video 9 UDP/TLS/RTP/SAVPF 96 97\r
            a=mid:0\r
            a=sendonly\r
            a=rtpmap:96 VP8/90000\r
            a=rtpmap:97 rtx/90000\r
            a=fmtp:97 apt=96\r
            a=ssrc-group:SIM 100 200 300\r
            a=ssrc-group:FID 100 101\r
            a=ssrc-group:FID 200 201\r
            a=ssrc-group:FID 300 301\r
            a=ssrc:100 cname:x\r
            a=ssrc:101 cname:x\r
            a=ssrc:200 cname:x\r
            a=ssrc:201 cname:x\r
            a=ssrc:300 cname:x\r
            a=ssrc:301 cname:x\r

            """
        let video = try #require(try SessionDescription(parsing: text).media.first)
        #expect(video.ssrcGroups.first { $0.semantics == "SIM" }?.ssrcs == [100, 200, 300])
        #expect(video.ssrcGroups.filter { $0.semantics == "FID" }.map(\.ssrcs) == [[100, 101], [200, 201], [300, 301]])
        #expect(video.retransmissionPayloadTypes == [96: 97])
    }

    @Test func chromiumsSimulcastOfferIsAnsweredWithItsThreeLayers() throws {
        let offer = try SessionDescription(parsing: try fixture("chromium-156-simulcast-offer"))
        let answer = try Negotiation.answerPublisherOffer(offer, local: local)
        let video = try #require(answer.description.media.first { $0.kind == "video" })
        #expect(video.rids.map(\.id) == ["q", "h", "f"])
        #expect(video.rids.allSatisfy { $0.direction == .recv })
        #expect(video.simulcast == SimulcastDescription(receive: [[.init(rid: "q")], [.init(rid: "h")], [.init(rid: "f")]]))
        #expect(Set(video.extmaps.map(\.uri)).isSuperset(of: [Extmap.ridURI, Extmap.repairedRIDURI, Extmap.midURI, Extmap.transportCCURI]))
        let accepted = try #require(answer.accepted.first { $0.kind == "video" })
        #expect(accepted.rids == ["q", "h", "f"])
        #expect(accepted.retransmissionPayloadTypes[97] == 96)
        #expect(try SessionDescription(parsing: answer.description.serialized()) == answer.description)
    }

    @Test func simulcastNeedsTheRIDExtensionAndTakesAtMostThreeLayers() throws {
        func answer(rids: [String], ridExtension: Bool) throws -> [String] {
            var lines = [
                "v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "m=video 9 UDP/TLS/RTP/SAVPF 96", "a=mid:0", "a=sendonly",
                "a=ice-ufrag:abcd", "a=ice-pwd:0123456789012345678901", "a=fingerprint:sha-256 01:02", "a=setup:actpass",
                "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid", "a=rtpmap:96 VP8/90000",
            ]
            if ridExtension { lines.append("a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id") }
            lines += rids.map { "a=rid:\($0) send" }
            lines.append("a=simulcast:send " + rids.joined(separator: ";"))
            let offer = try SessionDescription(parsing: lines.joined(separator: "\r\n") + "\r\n")
            return try Negotiation.answerPublisherOffer(offer, local: local).accepted[0].rids
        }
        #expect(try answer(rids: ["a", "b", "c", "d"], ridExtension: true) == ["a", "b", "c"], "a fourth layer is declined")
        #expect(try answer(rids: ["q", "h"], ridExtension: false).isEmpty, "without the RID extension layers cannot be told apart")
    }

    @Test func subscriberOffersCarryRTXAndTransportCC() throws {
        let vp8 = SDPCodec(payloadType: 100, name: "VP8", clockRate: 90_000)
        let h264 = SDPCodec(payloadType: 102, name: "H264", clockRate: 90_000, fmtp: "packetization-mode=1;profile-level-id=42e01f")
        let slots = [
            Negotiation.SubscriberSlot(
                mid: "0", kind: "video", track: .init(ssrc: 22, cname: "c", streamID: "PA_a", trackID: "TR_v", codec: vp8, retransmissionSSRC: 23)),
            Negotiation.SubscriberSlot(
                mid: "1", kind: "video", track: .init(ssrc: 32, cname: "c", streamID: "PA_b", trackID: "TR_w", codec: h264, retransmissionSSRC: 33)),
        ]
        let offer = Negotiation.makeSubscriberOffer(slots: slots, local: local, previous: nil)
        #expect(try SessionDescription(parsing: offer.serialized()) == offer)
        for (media, ssrcs) in zip(offer.media, [[UInt32(22), 23], [32, 33]]) {
            let codecs = media.codecs
            #expect(codecs.count == 2 && codecs[1].name == "rtx")
            #expect(codecs[1].parameter("apt") == String(codecs[0].payloadType))
            #expect(codecs[0].feedback.contains("transport-cc"))
            #expect(media.ssrcGroups == [SSRCGroup(semantics: "FID", ssrcs: ssrcs)])
            #expect(media.extmaps.contains { $0.uri == Extmap.transportCCURI })
        }
        let numbers = offer.media.flatMap { $0.codecs.map(\.payloadType) }
        #expect(Set(numbers).count == 4, "one numbering for the bundle: \(numbers)")
    }
}
