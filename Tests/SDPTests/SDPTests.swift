import Foundation
import Testing
@testable import SDP

func fixture(_ name: String) throws -> String {
    let url = try #require(Bundle.module.url(forResource: name, withExtension: "sdp", subdirectory: "Fixtures"))
    return try String(contentsOf: url, encoding: .utf8)
}

let fixtures = [
    "chromium-156-publisher-offer", "chromium-156-recvonly-offer", "aiortc-1.16-publisher-offer", "chromium-156-simulcast-offer",
]

let local = LocalTransportParameters(
    iceUfrag: "srv1", icePassword: "server-password-0123456789",
    fingerprint: Fingerprint(algorithm: "sha-256", value: "AB:CD:EF:01"),
    candidates: [ICECandidate(foundation: "1", priority: 2_130_706_431, address: "127.0.0.1", port: 7882)], sessionID: "42")

@Suite struct SDPParsingTests {
    @Test(arguments: fixtures)
    func fixturesRoundTripByteForByte(name: String) throws {
        let text = try fixture(name)
        let parsed = try SessionDescription(parsing: text)
        #expect(parsed.serialized() == text)
        #expect(try SessionDescription(parsing: parsed.serialized()) == parsed)
    }

    @Test func chromiumOfferIsReadAsTyped() throws {
        let offer = try SessionDescription(parsing: fixture("chromium-156-publisher-offer"))
        #expect(offer.bundle == ["0", "1"])
        #expect(offer.media.map(\.kind) == ["audio", "video"])
        let audio = offer.media[0], video = offer.media[1]
        #expect(audio.mid == "0")
        #expect(audio.direction == .sendonly)
        #expect(audio.codecs.first?.name == "opus")
        #expect(audio.codecs.first?.payloadType == 111)
        #expect(audio.codecs.first?.parameter("useinbandfec") == "1")
        #expect(audio.codecs.first?.feedback == ["transport-cc"])
        #expect(audio.primarySSRC == 4_127_716_505)
        #expect(audio.msid?.track == "ce384d42-108c-4974-a369-814d2e133c31")
        #expect(audio.extmaps.first { $0.uri == Extmap.audioLevelURI }?.id == 1)
        let vp8 = try #require(video.codecs.first)
        #expect(vp8.name == "VP8" && vp8.payloadType == 96)
        #expect(Set(vp8.feedback) == ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"])
        #expect(video.codecs.contains { $0.name == "rtx" && $0.parameter("apt") == "96" })
        #expect(offer.iceCredentials(of: video)?.ufrag == "DRdw")
        #expect(offer.fingerprints(of: video).first?.algorithm == "sha-256")
        #expect(offer.setup(of: video) == .actpass)
        #expect(audio.candidates.count == 8)
        #expect(audio.candidates[0].address == "127.0.0.1")
        #expect(audio.candidates[2].address == "::1")
        #expect(audio.candidates[4].tcpType == "active")
    }

    @Test func candidatesParseAndSerialize() throws {
        let texts = [
            "candidate:2122919891 1 udp 2122194687 127.0.0.1 37634 typ host generation 0 network-id 3 network-cost 50",
            "1873100123 1 udp 2122267903 ::1 58288 typ host generation 0 network-id 4",
            "842163049 1 udp 1677729535 198.51.100.7 50000 typ srflx raddr 10.0.0.2 rport 50000 generation 0",
            "1 1 UDP 2130706431 6f2a1e9c-6b3e-4d2c-9d2a-3b9a8c1f0e11.local 54400 typ host",
            "2149841735 1 tcp 1518214911 127.0.0.1 9 typ host tcptype active generation 0",
        ]
        for text in texts {
            let candidate = try #require(ICECandidate(text))
            #expect(ICECandidate(candidate.value) == candidate)
        }
        #expect(ICECandidate(texts[3])?.isMDNS == true)
        #expect(ICECandidate(texts[3])?.transport == "udp")
        #expect(ICECandidate(texts[2])?.relatedAddress == "10.0.0.2")
        for bad in ["", "candidate:", "1 1 udp 1 127.0.0.1 99999 typ host", "1 1 sctp 1 127.0.0.1 9 typ host", "1 1 udp 1 127.0.0.1 9 type host",
                    "1 1 udp x 127.0.0.1 9 typ host", "1 1 udp 1 127.0.0.1 9 typ host generation"] {
            #expect(ICECandidate(bad) == nil, "\(bad)")
        }
    }

    @Test func errorsNameTheLine() {
        func error(_ text: String) -> SDPError? {
            do {
                _ = try SessionDescription(parsing: text)
                return nil
            } catch {
                return error
            }
        }
        let base = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        #expect(error("")?.reason == "empty description")
        #expect(error("o=- 1 1 IN IP4 0.0.0.0\r\n")?.line == 1)
        #expect(error("v=0\r\ns=-\r\n")?.reason == "no o= line")
        #expect(error(base + "m=audio x UDP/TLS/RTP/SAVPF 111\r\n")?.description == "line 5 \"m=audio x UDP/TLS/RTP/SAVPF 111\": port is not a number 0-65535")
        #expect(error(base + "m=audio 9 UDP/TLS/RTP/SAVPF\r\n")?.line == 5)
        #expect(error(base + "m=audio 9 RTP 111\r\na=rtpmap:200 opus/48000/2\r\n")?.line == 6)
        #expect(error(base + "m=audio 9 RTP 111\r\na=rtpmap:111 opus\r\n")?.line == 6)
        #expect(error(base + "a=extmap:0 urn:x\r\n")?.line == 5)
        #expect(error(base + "a=fingerprint:sha-256 XY:12\r\n")?.line == 5)
        #expect(error(base + "a=setup:sideways\r\n")?.line == 5)
        #expect(error(base + "a=candidate:1 1 udp 1 1.2.3.4 9 typ nope\r\n")?.line == 5)
        #expect(error(base + "x=unknown\r\n")?.reason == "unknown line type \"x\"")
        #expect(error(base + "garbage\r\n")?.line == 5)
        #expect(error(base + "a=" + String(repeating: "x", count: 5000) + "\r\n")?.line == 5)
        #expect(error(base + String(repeating: "m=audio 9 RTP 0\r\n", count: 65))?.reason == "more than 64 m-sections")
    }

    @Test(arguments: fixtures)
    func truncationsAndMutationsNeverCrash(name: String) throws {
        let bytes = Array(try fixture(name).utf8)
        for length in stride(from: 0, through: bytes.count, by: 23) {
            bytes[..<length].withUnsafeBytes { SDPFuzz.run($0) }
        }
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<100 {
            var mutated = bytes
            for _ in 0..<3 { mutated[Int.random(in: 0..<mutated.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator) }
            mutated.withUnsafeBytes { SDPFuzz.run($0) }
        }
    }
}

@Suite struct NegotiationTests {
    @Test func chromiumOfferIsAnsweredRecvonlyWithWhatTheSFUForwards() throws {
        let offer = try SessionDescription(parsing: fixture("chromium-156-publisher-offer"))
        let answer = try Negotiation.answerPublisherOffer(offer, local: local)
        let sdp = answer.description
        #expect(sdp.isICELite)
        #expect(sdp.bundle == ["0", "1"])
        #expect(answer.accepted.map(\.mid) == ["0", "1"])
        #expect(answer.remote.setup == .actpass)
        #expect(answer.remote.iceUfrag == "DRdw")
        for media in sdp.media {
            #expect(media.direction == .recvonly)
            #expect(sdp.setup(of: media) == .passive)
            #expect(media.hasAttribute("rtcp-mux") && media.hasAttribute("rtcp-rsize") && media.hasAttribute("end-of-candidates"))
            #expect(media.attribute("ice-ufrag") == "srv1")
            #expect(media.attribute("fingerprint") == "sha-256 AB:CD:EF:01")
            #expect(media.candidates.first?.port == 7882)
        }
        let audio = sdp.media[0], video = sdp.media[1]
        #expect(audio.codecs.map(\.name) == ["opus"])
        #expect(audio.codecs[0].feedback == ["transport-cc"])
        // Each video codec keeps its RTX, pointing at it.
        let mediaTypes = Set(video.codecs.filter { $0.name != "rtx" }.map(\.payloadType))
        let rtx = video.codecs.filter { $0.name == "rtx" }
        #expect(rtx.count == mediaTypes.count)
        #expect(rtx.allSatisfy { $0.parameter("apt").flatMap(UInt8.init).map(mediaTypes.contains) == true })
        #expect(answer.accepted[1].retransmissionPayloadTypes.count == mediaTypes.count)
        #expect(rtx.allSatisfy { $0.feedback.isEmpty })
        #expect(video.codecs.first?.name == "VP8")
        #expect(video.codecs.filter { $0.name == "H264" }.allSatisfy { $0.parameter("packetization-mode") == "1" })
        #expect(video.codecs.contains { $0.name == "H264" })
        #expect(Set(video.codecs[0].feedback) == ["nack", "nack pli", "ccm fir", "goog-remb", "transport-cc"])
        #expect(
            Set(video.extmaps.map(\.uri)) == [Extmap.absSendTimeURI, Extmap.transportCCURI, Extmap.midURI, Extmap.ridURI, Extmap.repairedRIDURI])
        #expect(video.attribute("simulcast") == nil, "no simulcast offered, none answered")
        #expect(video.extmaps.first { $0.uri == Extmap.midURI }?.id == 4, "the offerer's ids are kept")
        #expect(audio.extmaps.first { $0.uri == Extmap.audioLevelURI }?.id == 1)
        #expect(answer.accepted[0].ssrc == 4_127_716_505)
        // The answer itself parses back.
        #expect(try SessionDescription(parsing: sdp.serialized()) == sdp)
    }

    @Test func aiortcOfferKeepsOpusAndEachVideoCodecWithItsRTX() throws {
        let offer = try SessionDescription(parsing: fixture("aiortc-1.16-publisher-offer"))
        let answer = try Negotiation.answerPublisherOffer(offer, local: local)
        #expect(answer.description.media[0].codecs.map(\.name) == ["opus"])
        #expect(answer.description.media[1].codecs.map(\.name) == ["VP8", "rtx", "H264", "rtx", "H264", "rtx"])
        #expect(answer.accepted[1].ssrc == 2_759_102_695, "the FID group's first SSRC is the media SSRC")
        #expect(answer.remote.fingerprint.algorithm == "sha-256", "of three fingerprints, sha-256 is taken")
        #expect(answer.description.media.allSatisfy { answer.description.setup(of: $0) == .passive })
    }

    @Test func receiveOnlyOfferIsRejected() throws {
        let offer = try SessionDescription(parsing: fixture("chromium-156-recvonly-offer"))
        let answer = try Negotiation.answerPublisherOffer(offer, local: local)
        #expect(answer.accepted.isEmpty)
        #expect(answer.description.media.allSatisfy { $0.port == 0 && $0.direction == .inactive && $0.mid != nil })
        #expect(answer.description.bundle.isEmpty)
    }

    @Test func aPlayersRecvonlyOfferIsAnsweredSendonlyOnTheGivenSSRCs() throws {
        let offer = try SessionDescription(parsing: fixture("chromium-156-recvonly-offer"))
        let answer = try Negotiation.answerPlayerOffer(offer, local: local) { mid, kind in
            Negotiation.PlayerStream(
                ssrc: kind == "audio" ? 1111 : 2222, retransmissionSSRC: 3333, cname: "whep", streamID: "room", trackID: "\(kind)-\(mid)")
        }
        #expect(answer.accepted.map(\.mid) == ["0", "1"])
        let audio = answer.description.media[0]
        let video = answer.description.media[1]
        #expect(audio.direction == .sendonly && video.direction == .sendonly)
        #expect(audio.codecs.map(\.name) == ["opus"], "red, G.722, PCMU… are not forwarded")
        // Every VP8 and H.264 (packetization-mode 1) the player takes, with their RTX; not VP9 or AV1.
        let names = video.codecs.map(\.name)
        #expect(names.first == "VP8" && names.contains("H264") && !names.contains("VP9") && !names.contains("AV1"))
        #expect(names.filter { $0 == "rtx" }.count == names.filter { $0 != "rtx" }.count)
        #expect(video.codecs.first { $0.name == "VP8" }?.payloadType == 96, "the player's payload types")
        #expect(video.attributes("ssrc").contains("2222 msid:room video-1"))
        #expect(video.attributes("ssrc-group") == ["FID 2222 3333"])
        #expect(audio.attributes("ssrc") == ["1111 cname:whep", "1111 msid:room audio-0"])
        // Only the extensions a subscriber transport sends, under the player's ids.
        #expect(Set(answer.accepted[1].extmaps.map(\.uri)) == [Extmap.absSendTimeURI, Extmap.transportCCURI, Extmap.midURI])
        #expect(answer.accepted[1].extmaps.first { $0.uri == Extmap.midURI }?.id == 4)
        #expect(answer.description.media.allSatisfy { answer.description.setup(of: $0) == .passive })
        #expect(answer.description.bundle == ["0", "1"])
        // The publisher's offer (sendonly) has nothing to play.
        let publisherOffer = try SessionDescription(parsing: fixture("aiortc-1.16-publisher-offer"))
        let none = try Negotiation.answerPlayerOffer(publisherOffer, local: local) { _, _ in
            Negotiation.PlayerStream(ssrc: 1, retransmissionSSRC: 2, cname: "", streamID: "", trackID: "")
        }
        #expect(none.accepted.isEmpty)
    }

    @Test func passiveOfferMakesUsActive() throws {
        let text = try fixture("aiortc-1.16-publisher-offer").replacingOccurrences(of: "a=setup:actpass", with: "a=setup:passive")
        let answer = try Negotiation.answerPublisherOffer(try SessionDescription(parsing: text), local: local)
        #expect(answer.description.setup(of: answer.description.media[0]) == .active)
        #expect(Negotiation.weAreDTLSClient(ourSetup: .active, theirSetup: .passive))
        #expect(!Negotiation.weAreDTLSClient(ourSetup: .passive, theirSetup: .actpass))
        #expect(!Negotiation.weAreDTLSClient(ourSetup: .actpass, theirSetup: .active))
    }

    static let opus = SDPCodec(payloadType: 96, name: "opus", clockRate: 48_000, channels: 2, fmtp: "minptime=10;useinbandfec=1")
    static let vp8 = SDPCodec(payloadType: 97, name: "VP8", clockRate: 90_000)

    @Test func subscriberOfferHasOneMLinePerSlotAndOneNumbering() throws {
        let slots = [
            Negotiation.SubscriberSlot(mid: "0", kind: "audio", track: .init(ssrc: 11, cname: "c", streamID: "PA_a", trackID: "TR_a", codec: Self.opus)),
            Negotiation.SubscriberSlot(mid: "1", kind: "video", track: .init(ssrc: 22, cname: "c", streamID: "PA_a", trackID: "TR_v", codec: Self.vp8)),
            Negotiation.SubscriberSlot(mid: "2", kind: "video", track: nil),
        ]
        let offer = Negotiation.makeSubscriberOffer(slots: slots, local: local, previous: nil)
        let reparsed = try SessionDescription(parsing: offer.serialized())
        #expect(reparsed == offer)
        #expect(offer.bundle == ["0", "1", "2"])
        #expect(offer.media.map(\.direction) == [.sendonly, .sendonly, .inactive])
        #expect(offer.media.allSatisfy { offer.setup(of: $0) == .actpass })
        #expect(offer.media[0].codecs.first?.payloadType == 111, "aiortc's Opus 96 is renumbered for the bundle")
        #expect(offer.media[1].codecs.first?.payloadType == 96)
        #expect(offer.media[2].codecs.first?.payloadType == 96, "an inactive video slot shares VP8's number")
        #expect(offer.media[0].primarySSRC == 11)
        #expect(offer.media[1].msid?.stream == "PA_a" && offer.media[1].msid?.track == "TR_v")
        #expect(offer.media[1].codecs[0].feedback.contains("nack pli"))
        #expect(offer.origin?.sessionID == "42")

        let again = Negotiation.makeSubscriberOffer(slots: slots, local: local, previous: offer)
        #expect(again.origin?.sessionID == "42")
        #expect(again.origin?.version == (offer.origin?.version ?? 0) + 1)
    }

    @Test func subscriberAnswerGivesRoleCodecsAndExtensions() throws {
        let slots = [
            Negotiation.SubscriberSlot(mid: "0", kind: "audio", track: .init(ssrc: 11, cname: "c", streamID: "PA_a", trackID: "TR_a", codec: Self.opus))
        ]
        let offer = Negotiation.makeSubscriberOffer(slots: slots, local: local, previous: nil)
        let answerText = """
            v=0\r
            o=- 9 2 IN IP4 127.0.0.1\r
            s=-\r
            t=0 0\r
            a=group:BUNDLE 0\r
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r
            c=IN IP4 0.0.0.0\r
            a=ice-ufrag:cli1\r
            a=ice-pwd:client-password-0123456789\r
            a=fingerprint:sha-256 01:02:03\r
            a=setup:active\r
            a=mid:0\r
            a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r
            a=recvonly\r
            a=rtcp-mux\r
            a=rtpmap:111 opus/48000/2\r

            """
        let summary = try Negotiation.readSubscriberAnswer(try SessionDescription(parsing: answerText), for: offer)
        #expect(summary.remote.setup == .active)
        #expect(summary.remote.iceUfrag == "cli1")
        #expect(summary.media["0"]?.codecs.first?.payloadType == 111)
        #expect(summary.media["0"]?.extmaps.first?.id == 1)
        #expect(summary.media["0"]?.direction == .recvonly)
        let wrongCount = answerText + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n"
        #expect(throws: SDPError.self) { try Negotiation.readSubscriberAnswer(try SessionDescription(parsing: wrongCount), for: offer) }
    }
}
