import ParleyProtocol
import Testing

@testable import ParleyClient

/// RFC 9725 §4.4 Link headers, as Foundation joins several into one with ", ".
@Suite struct WHIPLinkTests {
    @Test func iceServersComeFromTheLinkHeaders() {
        let header = #"<stun:10.0.0.1:3478>; rel="ice-server", <turn:10.0.0.1:3478?transport=udp>; rel="ice-server"; "#
            + #"username="1700000000:obs"; credential="c2VjcmV0"; credential-type="password", <https://example.com/>; rel="next""#
        #expect(WHIPSession.iceServers(fromLinks: header) == [
            ICEServer(urls: ["stun:10.0.0.1:3478"]),
            ICEServer(urls: ["turn:10.0.0.1:3478?transport=udp"], username: "1700000000:obs", credential: "c2VjcmV0"),
        ])
    }

    @Test func headersThatAreNotIceServersGiveNone() {
        for header in ["", "garbage", "<stun:x>", #"<stun:x>; rel="preload""#, #"stun:x; rel="ice-server""#, ";;,,"] {
            #expect(WHIPSession.iceServers(fromLinks: header).isEmpty, "\(header)")
        }
    }
}
