import HummingbirdWSClient
import Logging
import NIOSSL

/// A client WebSocket run in a task of its own, shared by Parley's signaling and Janus's API:
/// `onOpen` gets the writer once the socket is open, every text frame goes to `onText` in order,
/// and `onEnd` hears the server's close frame (nil when the connection dropped or failed).
public enum ClientWebSocket {
    /// Connects and returns the task that runs the socket once it is open; a connection that
    /// never opens throws `SignalingClientError.connectFailed`.
    public static func open(
        url: String, configuration: WebSocketClientConfiguration, tls: TLSConfiguration? = nil, logger: Logger,
        onOpen: @escaping @Sendable (WebSocketOutboundWriter) -> Void,
        onText: @escaping @Sendable (String) async -> Void,
        onEnd: @escaping @Sendable (WebSocketCloseFrame?) async -> Void
    ) async throws -> Task<Void, Never> {
        let opened = AsyncStream<Result<Void, any Error>>.makeStream()
        let task = Task {
            do {
                let closeFrame = try await WebSocketClient.connect(url: url, configuration: configuration, tlsConfiguration: tls, logger: logger) {
                    inbound, outbound, _ in
                    onOpen(outbound)
                    opened.continuation.yield(.success(()))
                    for try await message in inbound.messages(maxSize: configuration.maxFrameSize) {
                        guard case .text(let text) = message else { continue }
                        await onText(text)
                    }
                }
                await onEnd(closeFrame)
            } catch {
                opened.continuation.yield(.failure(error))
                await onEnd(nil)
            }
            opened.continuation.finish()
        }
        for await result in opened.stream {
            switch result {
            case .success: return task
            case .failure(let error): throw SignalingClientError.connectFailed("\(error)")
            }
        }
        throw SignalingClientError.connectFailed("connection ended before it opened")
    }
}
