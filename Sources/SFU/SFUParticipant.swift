import Congestion
import RTP
import StreamAllocation
import WebRTC

public enum TransportRole: String, Sendable, Equatable {
    case publisher, subscriber
}

/// A participant's media inside the room: its two transports, what it publishes and what it
/// receives. Receives its transports' packets and hands them to the room.
/// Where packets of one incoming SSRC go: a publication's layer, as media or as its RTX stream.
struct IncomingStream {
    let publication: Publication
    let layer: PublishedLayer
    let isRetransmission: Bool
}

/// A participant's media inside the room: its two transports, what it publishes and what it
/// receives. Receives its transports' packets and hands them to the room.
public final class SFUParticipant: WebRTCTransportDelegate {
    public let sid: String
    weak var room: SFURoom?
    public internal(set) var publisher: WebRTCTransport?
    public internal(set) var subscriber: WebRTCTransport?
    public internal(set) var publications: [Publication] = []
    var streamsBySSRC: [UInt32: IncomingStream] = [:]
    public internal(set) var downTracks: [DownTrack] = []
    var downTracksBySSRC: [UInt32: DownTrack] = [:]
    /// Our SSRC in RTCP towards this participant (reports and feedback need a sender).
    let rtcpSSRC: UInt32
    /// Its downlink as the SFU estimates it (subscriber side).
    public let bandwidth: SubscriberBandwidth
    /// Arrival times of its publisher transport's transport-wide sequence numbers, reported
    /// back so its browser estimates its uplink (publisher side).
    var uplinkFeedback: TWCCRecorder?
    var lastUplinkFeedbackAt: UInt64 = 0
    /// Chooses the layers it receives from `bandwidth`.
    var allocator = StreamAllocator()

    init(sid: String, room: SFURoom, rtcpSSRC: UInt32, bandwidth: SubscriberBandwidth) {
        self.sid = sid
        self.room = room
        self.rtcpSSRC = rtcpSSRC
        self.bandwidth = bandwidth
    }

    public func transport(_ role: TransportRole) -> WebRTCTransport? { role == .publisher ? publisher : subscriber }

    func role(of transport: WebRTCTransport) -> TransportRole? {
        if transport === publisher { return .publisher }
        if transport === subscriber { return .subscriber }
        return nil
    }

    /// Binds the SSRCs a publication's SDP announced.
    func bindAnnouncedStreams(of publication: Publication) {
        for layer in publication.layers {
            if let ssrc = layer.ssrc { streamsBySSRC[ssrc] = IncomingStream(publication: publication, layer: layer, isRetransmission: false) }
            if let rtx = layer.retransmissionSSRC {
                streamsBySSRC[rtx] = IncomingStream(publication: publication, layer: layer, isRetransmission: true)
            }
        }
    }

    func unbindStreams(of publication: Publication) {
        streamsBySSRC = streamsBySSRC.filter { $0.value.publication !== publication }
    }

    /// The stream a packet belongs to: by SSRC, or for an SSRC the SDP did not announce by its
    /// mid and rid (or repaired rid) extensions; the SSRC is then bound to that layer. Nil for a
    /// packet no negotiated layer takes (unknown mid or rid, more layers than negotiated).
    func stream(for header: RTPHeader, packet: UnsafeRawBufferPointer) -> IncomingStream? {
        if let known = streamsBySSRC[header.ssrc] { return known }
        guard let publication = publication(byMidIn: header, packet: packet) else { return nil }
        let isRetransmission = publication.retransmissionPayloadTypes[header.payloadType] != PayloadTypeMap.drop
        let ridID = isRetransmission ? publication.extensions.repairedRID : publication.extensions.rid
        let layer: PublishedLayer?
        if ridID != 0, let range = header.extensionElement(id: ridID, in: packet) {
            layer = publication.layer(rid: UnsafeRawBufferPointer(rebasing: packet[range]))
        } else {
            layer = publication.isSimulcast ? nil : publication.layers[0]
        }
        guard let layer else { return nil }
        if isRetransmission {
            if let old = layer.retransmissionSSRC { streamsBySSRC[old] = nil }
            layer.retransmissionSSRC = header.ssrc
        } else {
            // A publisher restart (new SSRC for the same layer): the old one is forgotten.
            if let old = layer.ssrc { streamsBySSRC[old] = nil }
            layer.ssrc = header.ssrc
        }
        let stream = IncomingStream(publication: publication, layer: layer, isRetransmission: isRetransmission)
        streamsBySSRC[header.ssrc] = stream
        return stream
    }

    private func publication(byMidIn header: RTPHeader, packet: UnsafeRawBufferPointer) -> Publication? {
        for candidate in publications where candidate.extensions.mid != 0 {
            guard let element = header.extensionElements(in: packet).first(id: candidate.extensions.mid),
                let trimmed = MidExtension.range(of: element, in: packet)
            else { continue }
            let mid = UnsafeRawBufferPointer(rebasing: packet[trimmed])
            return publications.first { $0.mid.utf8.elementsEqual(mid) }
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
        room?.forward(packet, from: self)
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
