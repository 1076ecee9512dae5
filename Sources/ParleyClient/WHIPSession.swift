import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import NIOCore
import NIOPosix
import ParleyProtocol

/// Publishing by WHIP (RFC 9725) instead of the signaling WebSocket: one HTTP POST of the offer,
/// one DELETE to leave. For encoders, bots and apps that only send. The publisher's media goes as
/// with a room's (`PublisherConnection`); the server makes an ordinary participant of it.
public final class WHIPSession: Sendable {
    public let publisher: PublisherConnection
    /// The session's URL (the answer's `Location`), for PATCH and DELETE.
    public let location: URL
    /// The ICE servers the answer's `Link` headers named (TURN with credentials).
    public let iceServers: [ICEServer]
    private let token: String
    /// The loop the session made for itself (when not given one), shut down at `close`.
    private let ownedGroup: MultiThreadedEventLoopGroup?

    init(publisher: PublisherConnection, location: URL, iceServers: [ICEServer], token: String, ownedGroup: MultiThreadedEventLoopGroup?) {
        self.publisher = publisher
        self.location = location
        self.iceServers = iceServers
        self.token = token
        self.ownedGroup = ownedGroup
    }

    public enum Failure: Error, CustomStringConvertible {
        case refused(status: Int, body: String)
        case noLocation

        public var description: String {
            switch self {
            case .refused(let status, let body): "the WHIP endpoint answered \(status): \(body)"
            case .noLocation: "the WHIP endpoint's answer has no Location"
            }
        }
    }

    /// Offers `video` (and audio) to `endpoint` (`https://host/v1/whip`) with `token` and applies
    /// the answer; media flows once `publisher.startSending` is given senders. Without `loop` the
    /// session runs on a thread of its own.
    public static func publish(
        endpoint: URL, token: String, video: Bool, simulcast: Bool = false, on given: (any EventLoop)? = nil,
        clock: @escaping MediaClock = MediaClocks.system
    ) async throws -> WHIPSession {
        let ownedGroup = given == nil ? MultiThreadedEventLoopGroup(numberOfThreads: 1) : nil
        let loop = given ?? ownedGroup!.next()
        let publisher: PublisherConnection
        do {
            publisher = try await loop.submit { try PublisherConnection(loop: loop, clock: clock) }.get()
        } catch {
            try? await ownedGroup?.shutdownGracefully()
            throw error
        }
        do {
            try await publisher.start()
            let offer = try await loop.submit { publisher.makeOffer(video: video, simulcast: simulcast) }.get()
            var request = URLRequest(url: endpoint, timeoutInterval: 15)
            request.httpMethod = "POST"
            request.setValue("application/sdp", forHTTPHeaderField: "Content-Type")
            request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
            request.httpBody = Data(offer.utf8)
            let (data, response) = try await URLSession.shared.data(for: request)
            let http = response as? HTTPURLResponse
            guard http?.statusCode == 201 else {
                throw Failure.refused(status: http?.statusCode ?? 0, body: String(decoding: data, as: UTF8.self))
            }
            guard let path = http?.value(forHTTPHeaderField: "Location"), let location = URL(string: path, relativeTo: endpoint) else {
                throw Failure.noLocation
            }
            let answer = String(decoding: data, as: UTF8.self)
            try await loop.submit { try publisher.apply(answer: answer) }.get()
            let links = http?.value(forHTTPHeaderField: "Link") ?? ""
            return WHIPSession(
                publisher: publisher, location: location.absoluteURL, iceServers: Self.iceServers(fromLinks: links), token: token,
                ownedGroup: ownedGroup)
        } catch {
            await publisher.close()
            try? await ownedGroup?.shutdownGracefully()
            throw error
        }
    }

    /// Ends the session: DELETE on its URL (the participant leaves), then the transport closes.
    public func close() async {
        var request = URLRequest(url: location, timeoutInterval: 5)
        request.httpMethod = "DELETE"
        request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        _ = try? await URLSession.shared.data(for: request)
        await publisher.close()
        try? await ownedGroup?.shutdownGracefully()
    }

    /// RFC 9725 §4.4's `Link: <url>; rel="ice-server"; username="…"; credential="…"`, one or more
    /// per header (comma-separated), as ICE servers.
    static func iceServers(fromLinks header: String) -> [ICEServer] {
        var servers: [ICEServer] = []
        for link in header.split(separator: ",") {
            let parts = link.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
            guard let first = parts.first, first.hasPrefix("<"), first.hasSuffix(">"),
                  parts.contains(where: { $0.replacingOccurrences(of: " ", with: "") == #"rel="ice-server""# })
            else { continue }
            func parameter(_ name: String) -> String? {
                parts.first { $0.hasPrefix("\(name)=") }.map { String($0.dropFirst(name.count + 1)).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
            }
            servers.append(ICEServer(urls: [String(first.dropFirst().dropLast())], username: parameter("username"), credential: parameter("credential")))
        }
        return servers
    }
}
