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
public final class PublisherConnection: TransportConnection, @unchecked Sendable {
    public struct Source: Sendable, Equatable {
        public var kind: String
        public var mid: String
        public var ssrc: UInt32
        public var payloadType: UInt8
    }

    public let transport: ClientTransport
    public private(set) var sources: [Source] = []
    private let streamID = "stream-\(UInt32.random(in: 1...UInt32.max))"
    /// The extension ids the offer gives abs-send-time and abs-capture-time.
    public static let absSendTimeID: UInt8 = 3
    public static let absCaptureTimeID: UInt8 = 4

    public init(loop: any EventLoop, clock: @escaping MediaClock = MediaClocks.system) throws {
        transport = try ClientTransport(loop: loop, clock: clock)
    }

    /// The offer for an audio track and, with `video`, a video track. On the loop.
    public func makeOffer(video: Bool) -> String {
        loop.preconditionInEventLoop()
        sources = [Source(kind: "audio", mid: "0", ssrc: UInt32.random(in: 1...UInt32.max), payloadType: 111)]
        if video { sources.append(Source(kind: "video", mid: "1", ssrc: UInt32.random(in: 1...UInt32.max), payloadType: 96)) }
        // Video offers NACK (below), so its packets are kept to be sent again.
        for source in sources {
            transport.outbound.willSend(
                ssrc: source.ssrc, clockRate: source.kind == "audio" ? 48_000 : 90_000, retransmittable: source.kind == "video")
        }
        var offer = SessionDescription(lines: [
            SDPLine("o", "- \(UInt32.random(in: 1...UInt32.max)) 1 IN IP4 127.0.0.1"), SDPLine("s", "-"), SDPLine("t", "0 0"),
            SDPLine("a", "group:BUNDLE \(sources.map(\.mid).joined(separator: " "))"), SDPLine("a", "msid-semantic: WMS \(streamID)"),
        ])
        for source in sources {
            var lines: [SDPLine] = [SDPLine("c", "IN IP4 0.0.0.0"), SDPLine("a", "mid:\(source.mid)")]
            lines += transport.transportAttributes(setup: "actpass")
            lines.append(SDPLine("a", "sendonly"))
            lines.append(SDPLine("a", "extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid"))
            lines.append(SDPLine("a", "extmap:\(Self.absSendTimeID) \(Extmap.absSendTimeURI)"))
            lines.append(SDPLine("a", "extmap:\(Self.absCaptureTimeID) \(Extmap.absCaptureTimeURI)"))
            if source.kind == "audio" {
                lines.append(SDPLine("a", "rtpmap:111 opus/48000/2"))
                lines.append(SDPLine("a", "fmtp:111 minptime=10;useinbandfec=1"))
            } else {
                lines.append(SDPLine("a", "rtpmap:96 VP8/90000"))
                for feedback in ["nack", "nack pli", "ccm fir", "goog-remb"] { lines.append(SDPLine("a", "rtcp-fb:96 \(feedback)")) }
            }
            lines.append(SDPLine("a", "msid:\(streamID) \(source.kind)-\(source.ssrc)"))
            lines.append(SDPLine("a", "ssrc:\(source.ssrc) cname:\(streamID)"))
            offer.media.append(MediaDescription(
                kind: source.kind, port: 9, proto: "UDP/TLS/RTP/SAVPF", formats: ["\(source.payloadType)"], lines: lines))
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

    /// Applies the server's answer (its ICE credentials, fingerprint and candidates). On the loop.
    public func apply(answer text: String) throws {
        loop.preconditionInEventLoop()
        try transport.apply(remote: try SessionDescription(parsing: text))
    }
}

