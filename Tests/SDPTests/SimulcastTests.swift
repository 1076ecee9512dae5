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
}
