import Foundation
import NIOCore
import RTP
import SDP

/// The receiving half of a client: the subscriber transport, where the server offers. It answers
/// every offer (each m-line received with the server's codecs and extensions) and tells which
/// track each packet belongs to, from the offer's `a=ssrc` and `a=msid` lines.
public final class SubscriberConnection: TransportConnection, @unchecked Sendable {
    /// What the offer said about the track an SSRC carries.
    public struct Track: Sendable, Equatable {
        public var trackSid: String
        public var participantSid: String
        public var kind: String
        /// Lower-case codec name (`opus`, `vp8`, `h264`).
        public var codec: String
    }

    public let transport: ClientTransport
    public private(set) var tracksBySSRC: [UInt32: Track] = [:]
    /// Names the track of an m-line by its mid, for servers whose msid says nothing useful
    /// (Janus); nil uses `a=msid` (Parley: "<participant sid> <track sid>").
    public var trackForMid: ((String) -> (participant: String, track: String)?)?
    /// Called on the loop for each decrypted RTP packet of a known track.
    public var onRTP: ((UnsafeRawBufferPointer, RTPHeader, Track, UInt64) -> Void)? {
        didSet {
            transport.onRTP = { [unowned self] packet, header, now in
                guard let track = tracksBySSRC[header.ssrc] else { return }
                onRTP?(packet, header, track, now)
            }
        }
    }

    public init(loop: any EventLoop, clock: @escaping MediaClock = MediaClocks.system) throws {
        transport = try ClientTransport(loop: loop, clock: clock)
    }

    /// Applies a server offer and returns the answer SDP. On the loop.
    public func answer(offer text: String) throws -> String {
        loop.preconditionInEventLoop()
        let offer = try SessionDescription(parsing: text)
        try transport.apply(remote: offer)
        var answer = SessionDescription(lines: [
            SDPLine("o", "- \(UInt32.random(in: 1...UInt32.max)) 2 IN IP4 127.0.0.1"), SDPLine("s", "-"), SDPLine("t", "0 0"),
        ])
        var mids: [String] = []
        var announced: Set<UInt32> = []
        for media in offer.media {
            var lines: [SDPLine] = [SDPLine("c", "IN IP4 0.0.0.0")]
            if let mid = media.mid {
                lines.append(SDPLine("a", "mid:\(mid)"))
                mids.append(mid)
            }
            lines += transport.transportAttributes(setup: "active")
            lines.append(SDPLine("a", media.direction.sends ? "recvonly" : "inactive"))
            // This client neither unwraps RTX nor sends transport-wide feedback: it declines
            // both, so the server retransmits on the media SSRC and reads its REMB instead.
            let declined = Set(media.codecs.filter { $0.name.lowercased() == "rtx" }.map { String($0.payloadType) })
            for line in media.lines {
                guard let (name, optionalValue) = line.attribute else { continue }
                let value = optionalValue ?? ""
                let payloadType = value.prefix { $0 != " " }
                switch name {
                case "rtpmap", "fmtp": if !declined.contains(String(payloadType)) { lines.append(line) }
                case "rtcp-fb": if !declined.contains(String(payloadType)), !value.hasSuffix("transport-cc") { lines.append(line) }
                case "extmap": if !value.contains(Extmap.transportCCURI) { lines.append(line) }
                default: break
                }
            }
            let formats = media.formats.filter { !declined.contains($0) }
            answer.media.append(MediaDescription(kind: media.kind, port: 9, proto: media.proto, formats: formats, lines: lines))
            if media.direction.sends, let ssrc = media.primarySSRC, let codec = media.codecs.first {
                if let resolve = trackForMid, let mid = media.mid, let named = resolve(mid) {
                    tracksBySSRC[ssrc] = Track(trackSid: named.track, participantSid: named.participant, kind: media.kind, codec: codec.name.lowercased())
                } else if let msid = media.msid {
                    tracksBySSRC[ssrc] = Track(
                        trackSid: msid.track ?? "", participantSid: msid.stream, kind: media.kind, codec: codec.name.lowercased())
                }
                announced.insert(ssrc)
                transport.inbound.expect(
                    ssrc: ssrc, clockRate: codec.clockRate, nack: codec.feedback.contains("nack"), isVP8: codec.name.lowercased() == "vp8",
                    pli: codec.feedback.contains("nack pli"))
            }
        }
        transport.inbound.keepOnly(announced)
        answer.lines.append(SDPLine("a", "group:BUNDLE \(mids.joined(separator: " "))"))
        return answer.serialized()
    }
}
