import Foundation
import NIOConcurrencyHelpers
import NIOCore
import RTP
import SDP

/// What a publisher sends for its tracks: made once the server's answer is applied, then asked on
/// every tick of the publisher's transport (on its loop) for the packets that are due.
public protocol MediaSender: AnyObject {
    func sendDue(now: UInt64)
}

/// The sending half of a client: the publisher transport, where the client offers. It writes an
/// offer with an Opus m-line and, when asked, a VP8 one (each sendonly, with its SSRC and msid),
/// applies the server's answer, and sends what its `MediaSender`s produce.
///
/// With `simulcast` the VP8 m-line carries three layers, lowest first, as an
/// `a=ssrc-group:SIM` of their SSRCs, each paired by `a=ssrc-group:FID` with an RTX SSRC, and
/// the offer asks for transport-wide congestion control: the transport-wide-cc extension on
/// every m-line and `transport-cc` feedback, as a browser sending simulcast does.
public final class PublisherConnection: TransportConnection, @unchecked Sendable {
    /// One SSRC the offer announces: the microphone, the camera, or one simulcast layer of it.
    public struct Source: Sendable, Equatable {
        public var kind: String
        public var mid: String
        public var ssrc: UInt32
        public var payloadType: UInt8
        /// The simulcast layer (0 lowest); nil for a single-stream track.
        public var layer: Int?
        /// Where NACKed packets of this source go again (RFC 4588), when RTX is offered.
        public var retransmissionSSRC: UInt32?
    }

    public let transport: ClientTransport
    public private(set) var sources: [Source] = []
    /// Simulcast layers the server said no subscriber needs now (`publisher.layers`): their
    /// senders pause until a later `setActiveLayers` lists them again.
    public private(set) var pausedLayers: Set<Int> = []
    private let streamID = "stream-\(UInt32.random(in: 1...UInt32.max))"
    /// The extension ids the offer gives abs-send-time, abs-capture-time and (with simulcast)
    /// the transport-wide sequence number.
    public static let absSendTimeID: UInt8 = 3
    public static let absCaptureTimeID: UInt8 = 4
    public static let transportSequenceID: UInt8 = 5
    public static let simulcastLayerCount = 3
    static let retransmissionPayloadType: UInt8 = 97

    public init(loop: any EventLoop, clock: @escaping MediaClock = MediaClocks.system) throws {
        transport = try ClientTransport(loop: loop, clock: clock)
    }

    /// The name a layer has in `publisher.layers` and the track's `layers`: the server names
    /// layers of an `a=ssrc-group:SIM` offer by their index.
    public static func layerName(_ index: Int) -> String { String(index) }

    /// The offer for an audio track and, with `video`, a video track, sent as three simulcast
    /// layers with RTX and transport-cc when `simulcast` is set. On the loop.
    public func makeOffer(video: Bool, simulcast: Bool = false) -> String {
        loop.preconditionInEventLoop()
        func randomSSRC() -> UInt32 { UInt32.random(in: 1...UInt32.max) }
        sources = [Source(kind: "audio", mid: "0", ssrc: randomSSRC(), payloadType: 111)]
        if video, simulcast {
            for layer in 0..<Self.simulcastLayerCount {
                sources.append(Source(kind: "video", mid: "1", ssrc: randomSSRC(), payloadType: 96, layer: layer, retransmissionSSRC: randomSSRC()))
            }
        } else if video {
            sources.append(Source(kind: "video", mid: "1", ssrc: randomSSRC(), payloadType: 96))
        }
        pausedLayers = []
        // Video offers NACK (below), so its packets are kept to be sent again.
        for source in sources {
            transport.outbound.willSend(
                ssrc: source.ssrc, clockRate: source.kind == "audio" ? 48_000 : 90_000, retransmittable: source.kind == "video")
        }
        var offer = SessionDescription(lines: [
            SDPLine("o", "- \(UInt32.random(in: 1...UInt32.max)) 1 IN IP4 127.0.0.1"), SDPLine("s", "-"), SDPLine("t", "0 0"),
            SDPLine("a", "group:BUNDLE \(Set(sources.map(\.mid)).sorted().joined(separator: " "))"), SDPLine("a", "msid-semantic: WMS \(streamID)"),
        ])
        for mid in Set(sources.map(\.mid)).sorted() {
            let section = sources.filter { $0.mid == mid }
            let kind = section[0].kind
            let rtx = section.contains { $0.retransmissionSSRC != nil }
            var lines: [SDPLine] = [SDPLine("c", "IN IP4 0.0.0.0"), SDPLine("a", "mid:\(mid)")]
            lines += transport.transportAttributes(setup: "actpass")
            lines.append(SDPLine("a", "sendonly"))
            lines.append(SDPLine("a", "extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid"))
            lines.append(SDPLine("a", "extmap:\(Self.absSendTimeID) \(Extmap.absSendTimeURI)"))
            lines.append(SDPLine("a", "extmap:\(Self.absCaptureTimeID) \(Extmap.absCaptureTimeURI)"))
            // Every m-line of the bundle, so the server numbers audio packets too: a gap in the
            // transport-wide sequence would read as loss.
            if simulcast { lines.append(SDPLine("a", "extmap:\(Self.transportSequenceID) \(Extmap.transportCCURI)")) }
            if kind == "audio" {
                lines.append(SDPLine("a", "rtpmap:111 opus/48000/2"))
                lines.append(SDPLine("a", "fmtp:111 minptime=10;useinbandfec=1"))
                if simulcast { lines.append(SDPLine("a", "rtcp-fb:111 transport-cc")) }
            } else {
                lines.append(SDPLine("a", "rtpmap:96 VP8/90000"))
                for feedback in ["nack", "nack pli", "ccm fir", "goog-remb"] + (simulcast ? ["transport-cc"] : []) {
                    lines.append(SDPLine("a", "rtcp-fb:96 \(feedback)"))
                }
                if rtx {
                    lines.append(SDPLine("a", "rtpmap:\(Self.retransmissionPayloadType) rtx/90000"))
                    lines.append(SDPLine("a", "fmtp:\(Self.retransmissionPayloadType) apt=96"))
                }
            }
            if section.count > 1 { lines.append(SDPLine("a", "ssrc-group:SIM \(section.map { String($0.ssrc) }.joined(separator: " "))")) }
            for source in section {
                if let repair = source.retransmissionSSRC { lines.append(SDPLine("a", "ssrc-group:FID \(source.ssrc) \(repair)")) }
            }
            lines.append(SDPLine("a", "msid:\(streamID) \(kind)-\(section[0].ssrc)"))
            for source in section {
                for ssrc in [source.ssrc] + (source.retransmissionSSRC.map { [$0] } ?? []) {
                    lines.append(SDPLine("a", "ssrc:\(ssrc) cname:\(streamID)"))
                }
            }
            let formats = ["\(section[0].payloadType)"] + (rtx ? ["\(Self.retransmissionPayloadType)"] : [])
            offer.media.append(MediaDescription(kind: kind, port: 9, proto: "UDP/TLS/RTP/SAVPF", formats: formats, lines: lines))
        }
        return offer.serialized()
    }

    /// Sends what `senders` produce, paced by the transport's tick. On the loop, after
    /// `apply(answer:)`.
    public func startSending(_ senders: [any MediaSender]) {
        loop.preconditionInEventLoop()
        transport.onTick = { now in
            for sender in senders { sender.sendDue(now: now) }
        }
    }

    /// Applies the server's answer (its ICE credentials, fingerprint and candidates; RTX and
    /// transport-cc if it kept them). On the loop.
    public func apply(answer text: String) throws {
        loop.preconditionInEventLoop()
        let answer = try SessionDescription(parsing: text)
        try transport.apply(remote: answer)
        for media in answer.media where !media.isRejected {
            guard let mid = media.mid else { continue }
            let keptRTX = media.codecs.contains { $0.name.lowercased() == "rtx" && $0.payloadType == Self.retransmissionPayloadType }
            for source in sources where source.mid == mid {
                if keptRTX, let repair = source.retransmissionSSRC {
                    transport.outbound.retransmit(source.ssrc, on: repair, payloadType: Self.retransmissionPayloadType)
                }
            }
            if let transportCC = media.extmaps.first(where: { $0.uri == Extmap.transportCCURI }) { transport.transportSequenceID = transportCC.id }
        }
    }

    /// `publisher.layers`: only the layers named in `active` are needed; the others pause. On the loop.
    public func setActiveLayers(_ active: [String]) {
        loop.preconditionInEventLoop()
        let named = Set(active)
        pausedLayers = Set(sources.compactMap(\.layer).filter { !named.contains(Self.layerName($0)) })
    }
}
