/// One fuzz iteration: parse, and when that succeeds, serialize and parse again (must be equal),
/// read every typed attribute, and answer it as a publisher's offer and as a player's (WHEP).
public enum SDPFuzz {
    public static func run(_ data: UnsafeRawBufferPointer) {
        let text = String(decoding: data, as: UTF8.self)
        guard let description = try? SessionDescription(parsing: text) else { return }
        guard let again = try? SessionDescription(parsing: description.serialized()), again == description else {
            fatalError("an SDP that parsed does not survive serialize and parse")
        }
        _ = description.bundle
        _ = description.origin
        for media in description.media {
            _ = description.iceCredentials(of: media)
            _ = description.fingerprints(of: media)
            _ = media.codecs.map { $0.parameters }
            _ = media.extmaps
            _ = media.primarySSRC
            _ = media.msid
            _ = media.candidates.map(\.value)
            _ = media.direction
        }
        let local = LocalTransportParameters(
            iceUfrag: "fuzz", icePassword: "fuzzfuzzfuzzfuzzfuzzfuzz", fingerprint: Fingerprint(algorithm: "sha-256", value: "00:11"),
            candidates: [], sessionID: "1")
        if let answer = try? Negotiation.answerPublisherOffer(description, local: local) {
            guard (try? SessionDescription(parsing: answer.description.serialized())) != nil else {
                fatalError("an answer we wrote does not parse")
            }
        }
        let stream = Negotiation.PlayerStream(ssrc: 1, retransmissionSSRC: 2, cname: "fuzz", streamID: "fuzz", trackID: "fuzz")
        if let answer = try? Negotiation.answerPlayerOffer(description, local: local, stream: { _, _ in stream }) {
            guard (try? SessionDescription(parsing: answer.description.serialized())) != nil else {
                fatalError("a player's answer we wrote does not parse")
            }
        }
    }
}
