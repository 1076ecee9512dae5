import Auth
import Foundation
import HummingbirdWebSocket
import Logging
import NIOCore
import ParleyProtocol

/// Serves one signaling WebSocket: joins the room, then reads frames, decodes them and hands
/// requests to the room. Decoding and limits are checked here, off the room's actor.
struct SignalingSession {
    let claims: AccessClaims
    let resume: String?
    let registry: RoomRegistry
    let services: RoomServices
    let sessions: SessionCounter
    /// In a cluster, how to reach a room held by another node, and the query to pass on.
    var relay: (relay: SignalingRelay, query: String, token: String)?
    let codec = SignalCodec()

    func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, logger baseLogger: Logger) async {
        let config = services.config
        let metrics = services.metrics
        let connection = SignalingConnection(limit: config.outboxLimit, byteLimit: config.outboxBytes)
        var logger = baseLogger
        logger[metadataKey: "identity"] = "\(claims.identity)"
        metrics.webSocketConnections.increment()
        sessions.started()
        defer {
            metrics.webSocketConnections.decrement()
            sessions.ended()
        }

        await withTaskGroup(of: Role.self) { group in
            // Writer: drains the outbox into the socket, then closes it as requested.
            group.addTask {
                for await frame in connection.frames {
                    connection.written(frame)
                    do { try await outbound.write(.text(frame)) } catch { break }
                }
                let (code, reason) = connection.closeFrame
                try? await outbound.close(code, reason: reason)
                return .writer
            }
            group.addTask { [logger] in
                await serve(inbound: inbound, connection: connection, logger: logger)
                connection.close(.normal("closed"))
                return .reader
            }
            // Whichever side ends first, the other gets a grace period: the writer to flush what
            // is queued, the reader to see the client's close reply. A client that never answers
            // would otherwise hold the connection (and shutdown) forever.
            _ = await group.next()
            group.addTask {
                try? await Task.sleep(for: Self.closeGrace)
                return .timer
            }
            _ = await group.next()
            group.cancelAll()
        }
        logger.debug("signaling connection ended")
    }

    private enum Role { case reader, writer, timer }

    /// How long a closing connection waits on its peer before it is cut.
    static let closeGrace: Duration = .seconds(2)

    /// Joins the room, then reads requests until the socket closes.
    private func serve(inbound: WebSocketInboundStream, connection: SignalingConnection, logger: Logger) async {
        var logger = logger
        guard let roomName = claims.grants.room else { return }  // checked before the upgrade
        let room: Room
        let sid: String
        do throws(ProtocolError) {
            switch try await registry.roomForJoin(roomName, anywhere: relay != nil) {
            case .room(let found):
                room = found
            case .elsewhere(let node, let url):
                // roomForJoin sends a join elsewhere only when this connection may be relayed.
                guard let relay else { throw ProtocolError(.unavailable, "room \(roomName) lives on node \(node)") }
                logger[metadataKey: "room"] = "\(roomName)"
                logger.info("relaying signaling", metadata: ["owner": "\(node)"])
                await relay.relay.run(to: (node, url), query: relay.query, token: relay.token, inbound: inbound, connection: connection, logger: logger)
                return
            }
            sid = try await room.join(claims: claims, resume: resume, connection: connection)
        } catch {
            refuse(error, connection: connection, logger: logger)
            return
        }
        logger[metadataKey: "room"] = "\(roomName)"
        logger[metadataKey: "participant"] = "\(sid)"
        let endedByClient = await readLoop(inbound: inbound, room: room, sid: sid, connection: connection, logger: logger)
        if endedByClient {
            await room.connectionLost(sid: sid, connection: connection)
        }
    }

    private func refuse(_ error: ProtocolError, connection: SignalingConnection, logger: Logger) {
        services.metrics.recordError(error.code)
        logger.notice("join refused", metadata: ["code": "\(error.code.rawValue)", "reason": "\(error.message)"])
        connection.send(codec.encode(ErrorReply(error)))
        connection.close(.policy(error.code.rawValue))
    }

    /// Reads until the socket closes. Returns true when the client went away (not a leave or a
    /// server-side close), so the session is held for resuming.
    private func readLoop(
        inbound: WebSocketInboundStream, room: Room, sid: String, connection: SignalingConnection, logger: Logger
    ) async -> Bool {
        let config = services.config
        var bucket = sessions.resumeBucket(of: sid) ?? TokenBucket(
            perSecond: config.signalingRateLimit.perSecond, burst: config.signalingRateLimit.burst,
            now: services.clock.now())
        defer { sessions.holdBucket(bucket, of: sid, now: services.clock.now(), window: config.resumeWindow) }
        // Messages refused for the rate in a row: a client that ignores the refusals is closed.
        var refusedInARow = 0
        var message = ByteBuffer()
        var messageOpcode: WebSocketDataFrame.Opcode?
        var oversized = false
        do {
            for try await frame in inbound {
                // Reassemble fragmented messages, refusing (not buffering) ones over the limit.
                switch frame.opcode {
                case .text, .binary:
                    messageOpcode = frame.opcode
                    message.clear()
                    oversized = false
                case .continuation:
                    guard messageOpcode != nil else { continue }
                }
                if message.readableBytes + frame.data.readableBytes > config.maxMessageBytes {
                    oversized = true
                    message.clear()
                } else if !oversized {
                    var data = frame.data
                    message.writeBuffer(&data)
                }
                guard frame.fin, let opcode = messageOpcode else { continue }
                messageOpcode = nil
                services.metrics.signalingMessages.increment()

                if connection.requestedClose != nil { break }
                // Every message counts against the rate, malformed or not: decoding and answering
                // garbage costs as much as serving a request.
                guard bucket.take(now: services.clock.now()) else {
                    refusedInARow += 1
                    if refusedInARow > config.signalingRateLimit.burst {
                        logger.notice("signaling closed: the client ignores rate limiting")
                        answer(ProtocolError(.rateLimited, "too many signaling messages; closing"), re: nil, connection)
                        connection.close(.policy("rate_limited"))
                        break
                    }
                    answer(ProtocolError(.rateLimited, "too many signaling messages; slow down"), re: Self.requestID(message), connection)
                    continue
                }
                refusedInARow = 0
                if oversized {
                    answer(ProtocolError(.tooLarge, "message exceeds \(config.maxMessageBytes) bytes"), re: nil, connection)
                    continue
                }
                guard opcode == .text else {
                    answer(ProtocolError(.badRequest, "binary frames are not accepted; send JSON text"), re: nil, connection)
                    continue
                }
                let text = String(decoding: message.readableBytesView, as: UTF8.self)
                switch codec.decodeRequest(text) {
                case .failure(let failure):
                    answer(failure.error, re: failure.id, connection)
                case .success(let (id, request)):
                    if let error = await room.handle(request, id: id, from: sid) {
                        answer(error, re: id, connection)
                    }
                    if request == .leave { return false }
                }
            }
        } catch {
            logger.debug("signaling read ended with error", metadata: ["error": "\(error)"])
        }
        // A slow client that overflowed its outbox may still resume, as may one whose socket dropped.
        return connection.requestedClose == nil || connection.requestedClose == .overflow
    }

    /// The `id` of a request refused unread, so the client can tell which one: a cheap scan for
    /// `"id":"…"`, not a decode.
    static func requestID(_ message: ByteBuffer) -> String? {
        let text = String(decoding: message.readableBytesView.prefix(4096), as: UTF8.self)
        guard let key = text.range(of: "\"id\""), let colon = text[key.upperBound...].firstIndex(of: ":") else { return nil }
        let rest = text[text.index(after: colon)...].drop { $0 == " " }
        guard rest.first == "\"", let end = rest.dropFirst().firstIndex(of: "\"") else { return nil }
        let id = rest[rest.index(after: rest.startIndex)..<end]
        return id.count <= 64 ? String(id) : nil
    }

    private func answer(_ error: ProtocolError, re: String?, _ connection: SignalingConnection) {
        services.metrics.recordError(error.code)
        connection.send(codec.encode(ErrorReply(error), re: re))
    }
}
