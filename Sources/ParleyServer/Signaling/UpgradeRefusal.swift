import Foundation
import Hummingbird
import HummingbirdWebSocket
import NIOConcurrencyHelpers
import NIOCore
import ParleyProtocol
import Auth

/// Request context of a signaling upgrade. It carries the claims checked before the upgrade to
/// the WebSocket handler, and the channel so that a refusal can answer with its own status.
struct SignalingRequestContext: RequestContext, WebSocketRequestContext {
    var coreContext: CoreRequestContextStorage
    let webSocket: WebSocketHandlerReference<Self>
    let channel: any Channel
    let claims = NIOLockedValueBox<AccessClaims?>(nil)
    /// The node that relayed this connection, when it came with a valid cluster credential.
    let relayedFrom = NIOLockedValueBox<String?>(nil)

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        webSocket = .init()
        channel = source.channel
    }
}

enum UpgradeRefusal {
    /// Arms `channel` so that the refused upgrade is answered with `error`'s status (401, 403) and
    /// JSON body rather than the WebSocket library's bare 400.
    static func arm(_ channel: any Channel, with error: APIError) async throws {
        let status = error.status
        let body = JSONResponse.encode(error.body)
        var head = "HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\n"
        head += "Content-Type: \(JSONResponse.contentType)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        var response = ByteBuffer(string: head)
        response.writeBytes(body)
        try await channel.eventLoop.submit { [response] in
            try channel.pipeline.syncOperations.addHandler(RefusedUpgradeWriter(response: response), position: .first)
        }.get()
    }
}

/// Sits next to the socket and swaps the library's refusal bytes for the prepared response.
private final class RefusedUpgradeWriter: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    private let response: ByteBuffer
    private var written = false

    init(response: ByteBuffer) { self.response = response }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // The library writes its 400 head and end; the first write carries ours, the rest are dropped.
        guard !written else {
            promise?.succeed()
            return
        }
        written = true
        context.write(wrapOutboundOut(.byteBuffer(response)), promise: promise)
    }
}
