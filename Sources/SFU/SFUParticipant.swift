import RTP
import WebRTC

public enum TransportRole: String, Sendable, Equatable {
    case publisher, subscriber
}

/// A participant's media inside the room: its two transports, what it publishes and what it
/// receives. Receives its transports' packets and hands them to the room.
public final class SFUParticipant: WebRTCTransportDelegate {
    public let sid: String
    weak var room: SFURoom?
    public internal(set) var publisher: WebRTCTransport?
    public internal(set) var subscriber: WebRTCTransport?
    public internal(set) var publications: [Publication] = []
    var publicationsBySSRC: [UInt32: Publication] = [:]
    public internal(set) var downTracks: [DownTrack] = []
    var downTracksBySSRC: [UInt32: DownTrack] = [:]
    /// Our SSRC in RTCP towards this participant (reports and feedback need a sender).
    let rtcpSSRC: UInt32

    init(sid: String, room: SFURoom, rtcpSSRC: UInt32) {
        self.sid = sid
        self.room = room
        self.rtcpSSRC = rtcpSSRC
    }

    public func transport(_ role: TransportRole) -> WebRTCTransport? { role == .publisher ? publisher : subscriber }

    func role(of transport: WebRTCTransport) -> TransportRole? {
        if transport === publisher { return .publisher }
        if transport === subscriber { return .subscriber }
        return nil
    }

    /// The publication a packet belongs to: by SSRC, or by the mid extension for an SSRC the SDP
    /// did not announce (the SSRC is then bound to it).
    func publication(for header: RTPHeader, packet: UnsafeRawBufferPointer) -> Publication? {
        if let known = publicationsBySSRC[header.ssrc] { return known }
        for candidate in publications where candidate.extensions.mid != 0 {
            guard let range = header.extensionElement(id: candidate.extensions.mid, in: packet) else { continue }
            let mid = UnsafeRawBufferPointer(rebasing: packet[range])
            guard let publication = publications.first(where: { $0.mid.utf8.elementsEqual(mid) }) else { return nil }
            if let old = publication.ssrc { publicationsBySSRC[old] = nil }
            publication.ssrc = header.ssrc
            publicationsBySSRC[header.ssrc] = publication
            return publication
        }
        return nil
    }

    // MARK: WebRTCTransportDelegate

    public func transportDidConnect(_ transport: WebRTCTransport) {
        guard let role = role(of: transport) else { return }
        room?.transportDidConnect(self, role: role)
    }

    public func transport(_ transport: WebRTCTransport, didReceiveRTP packet: UnsafeMutableRawBufferPointer) {
        guard transport === publisher else { return }  // a subscriber transport only receives RTCP
        room?.forward(UnsafeRawBufferPointer(packet), from: self)
    }

    public func transport(_ transport: WebRTCTransport, didReceiveRTCP packet: UnsafeMutableRawBufferPointer) {
        guard let role = role(of: transport) else { return }
        room?.handleRTCP(UnsafeRawBufferPointer(packet), from: self, role: role)
    }

    public func transport(_ transport: WebRTCTransport, didClose reason: WebRTCTransport.CloseReason) {
        guard let role = role(of: transport) else { return }
        room?.transportDidClose(self, role: role, reason: reason)
    }
}
