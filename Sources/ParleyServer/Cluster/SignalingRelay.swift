import Foundation
import HTTPTypes
import HummingbirdWSClient
import HummingbirdWebSocket
import Logging
import NIOCore
import ParleyProtocol

/// Carries a client's signaling to the node that holds its room, when the client reached another
/// node. The client's own token and query go along unchanged (the owner checks them again and
/// handles join, resume and everything after); the relaying node adds its `ClusterCredential`,
/// without which the owner refuses a relayed connection. Media does not pass here: the owner's
/// answers carry its own ICE candidates and TURN servers.
struct SignalingRelay: Sendable {
    /// The header that carries the relaying node's credential.
    static let credentialHeader = HTTPField.Name("X-Parley-Relay")!

    let membership: ClusterMembership
    let maxMessageBytes: Int
    let metrics: ServerMetrics

    /// Runs until either side closes. The owner's close (code and reason) is passed on.
    func run(
        to owner: (node: String, signalingURL: String), query: String, token: String, inbound: WebSocketInboundStream,
        connection: SignalingConnection, logger: Logger
    ) async {
        let url = Self.webSocketURL(owner.signalingURL) + "/v1/rtc" + (query.isEmpty ? "" : "?\(query)")
        var headers = HTTPFields()
        headers[Self.credentialHeader] = membership.credential()
        // The token may have come in a header or a subprotocol rather than the query.
        if !query.contains("token="), !token.isEmpty { headers[.authorization] = "Bearer \(token)" }
        let configuration = WebSocketClientConfiguration(
            maxFrameSize: max(maxMessageBytes, 1 << 16) * 16, additionalHeaders: headers, closeTimeout: .seconds(2))
        metrics.relayedSessions.increment()
        metrics.relaysOpen.increment()
        defer { metrics.relaysOpen.decrement() }
        let maxMessageBytes = self.maxMessageBytes
        do {
            let closeFrame = try await WebSocketClient.connect(url: url, configuration: configuration, logger: logger) {
                upstreamInbound, upstreamOutbound, _ in
                await withTaskGroup(of: Void.self) { group in
                    // Client to owner: every message as it came.
                    group.addTask {
                        do {
                            for try await message in inbound.messages(maxSize: maxMessageBytes * 4) {
                                switch message {
                                case .text(let text): try await upstreamOutbound.write(.text(text))
                                case .binary(let data): try await upstreamOutbound.write(.binary(data))
                                }
                            }
                        } catch {}
                    }
                    // Owner to client, through the client's bounded outbox.
                    group.addTask {
                        do {
                            for try await message in upstreamInbound.messages(maxSize: 1 << 24) {
                                guard case .text(let text) = message else { continue }
                                if !connection.send(text) { break }
                            }
                        } catch {}
                    }
                    _ = await group.next()
                    group.cancelAll()
                }
            }
            switch closeFrame?.closeCode {
            case .policyViolation?: connection.close(.policy(closeFrame?.reason ?? "closed by \(owner.node)"))
            case .normalClosure?: connection.close(.normal(closeFrame?.reason ?? "closed"))
            // No close frame: the owner vanished (killed, cut off). Not a normal close, so the
            // client reconnects; by then its room may live on another node.
            default: connection.close(.goingAway(closeFrame?.reason ?? "node \(owner.node) went away"))
            }
        } catch {
            metrics.relayFailures.increment()
            logger.warning("signaling relay failed", metadata: ["owner": "\(owner.node)", "url": "\(url)", "error": "\(error)"])
            connection.send(SignalCodec().encode(ErrorReply(ProtocolError(
                .unavailable, "room's node \(owner.node) cannot be reached now (\(error)); try again shortly"))))
            connection.close(.policy(ErrorCode.unavailable.rawValue))
        }
    }

    /// `http://h:p` → `ws://h:p`, `https://` → `wss://`.
    static func webSocketURL(_ signalingURL: String) -> String {
        var url = signalingURL
        while url.hasSuffix("/") { url.removeLast() }
        if url.hasPrefix("https://") { return "wss://" + url.dropFirst("https://".count) }
        if url.hasPrefix("http://") { return "ws://" + url.dropFirst("http://".count) }
        return url
    }
}
