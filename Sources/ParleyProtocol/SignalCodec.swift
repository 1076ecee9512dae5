import Foundation

/// Encodes and decodes signaling frames. One instance per connection or room: the coders are
/// reused rather than made per message.
public struct SignalCodec: Sendable {
    public init() {}

    // MARK: Encoding

    /// One frame's JSON text: `type`, then `re` when replying, then the message's own fields.
    public func encode<M: SignalMessage>(_ message: M, re: String? = nil) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        // Encoding plain Codable structs into JSON cannot fail.
        let data = try! encoder.encode(Envelope(type: M.type, id: nil, re: re, body: message))
        return String(decoding: data, as: UTF8.self)
    }

    /// A request frame, as a client sends it.
    public func encodeRequest<M: SignalMessage>(_ message: M, id: String?) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        let data = try! encoder.encode(Envelope(type: M.type, id: id, re: nil, body: message))
        return String(decoding: data, as: UTF8.self)
    }

    private struct Envelope<Body: Encodable>: Encodable {
        let type: String
        let id: String?
        let re: String?
        let body: Body

        enum Keys: String, CodingKey { case type, id, re }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Keys.self)
            try container.encode(type, forKey: .type)
            try container.encodeIfPresent(id, forKey: .id)
            try container.encodeIfPresent(re, forKey: .re)
            // The body's keys land in the same JSON object.
            try body.encode(to: encoder)
        }
    }

    // MARK: Decoding requests (server side)

    /// The `type` and `id` of a frame, read before its body so an error can still name `re`.
    public struct Header: Decodable, Sendable {
        public var type: String
        public var id: String?
        public var re: String?
    }

    /// Decodes a client's frame. A failure carries the request id when one could be read.
    public func decodeRequest(_ text: String) -> Result<(id: String?, request: ClientRequest), RequestDecodingError> {
        let data = Data(text.utf8)
        let header: Header
        switch decodeHeader(data) {
        case .success(let h): header = h
        case .failure(let error): return .failure(RequestDecodingError(id: nil, error: error))
        }
        do {
            let request = try decodeBody(type: header.type, data: data)
            return .success((header.id, request))
        } catch let error as ProtocolError {
            return .failure(RequestDecodingError(id: header.id, error: error))
        } catch {
            return .failure(RequestDecodingError(id: header.id, error: Self.describe(error)))
        }
    }

    public func decodeHeader(_ data: Data) -> Result<Header, ProtocolError> {
        guard let object = try? JSONSerialization.jsonObject(with: data), object is [String: Any] else {
            return .failure(ProtocolError(.badRequest, "frame is not a JSON object"))
        }
        do {
            return .success(try JSONDecoder().decode(Header.self, from: data))
        } catch {
            return .failure(Self.describe(error))
        }
    }

    private func decodeBody(type: String, data: Data) throws -> ClientRequest {
        let decoder = JSONDecoder()
        switch type {
        case Ping.type: return .ping
        case Leave.type: return .leave
        case ICEServersRequest.type: return .iceServers
        case ChatSend.type: return .chatSend(try decoder.decode(ChatSend.self, from: data))
        case ChatHistoryRequest.type: return .chatHistory(try decoder.decode(ChatHistoryRequest.self, from: data))
        case TypingRequest.type: return .typing(try decoder.decode(TypingRequest.self, from: data))
        case PresenceSet.type: return .presenceSet(try decoder.decode(PresenceSet.self, from: data))
        case "offer": return .offer(try decoder.decode(SessionDescription.self, from: data))
        case "answer": return .answer(try decoder.decode(SessionDescription.self, from: data))
        case CandidateMessage.type: return .candidate(try decoder.decode(CandidateMessage.self, from: data))
        case SubscribeRequest.type: return .subscribe(try decoder.decode(SubscribeRequest.self, from: data))
        case MuteRequest.type: return .mute(try decoder.decode(MuteRequest.self, from: data))
        case RecordingStartRequest.type: return .recordingStart(try decoder.decode(RecordingStartRequest.self, from: data))
        case RecordingStopRequest.type: return .recordingStop(try decoder.decode(RecordingStopRequest.self, from: data))
        default: throw ProtocolError(.badRequest, "unknown message type \"\(type)\"")
        }
    }

    /// Turns a decoding failure into a message that names the offending field.
    public static func describe(_ error: any Error) -> ProtocolError {
        func path(_ codingPath: [any CodingKey], _ key: (any CodingKey)? = nil) -> String {
            let keys = codingPath + (key.map { [$0] } ?? [])
            return keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
                .replacingOccurrences(of: ".[", with: "[")
        }
        guard let decodingError = error as? DecodingError else {
            return ProtocolError(.badRequest, "malformed message")
        }
        switch decodingError {
        case .keyNotFound(let key, let context):
            return ProtocolError(.badRequest, "missing field \"\(path(context.codingPath, key))\"")
        case .typeMismatch(let type, let context):
            return ProtocolError(.badRequest, "field \"\(path(context.codingPath))\" must be \(describe(type))")
        case .valueNotFound(let type, let context):
            return ProtocolError(.badRequest, "field \"\(path(context.codingPath))\" must be \(describe(type)), not null")
        case .dataCorrupted(let context):
            if context.codingPath.isEmpty { return ProtocolError(.badRequest, "frame is not valid JSON") }
            return ProtocolError(.badRequest, "field \"\(path(context.codingPath))\" has an invalid value")
        @unknown default:
            return ProtocolError(.badRequest, "malformed message")
        }
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Bool.Type: "a boolean"
        case is Int.Type, is Int64.Type: "an integer"
        case is Double.Type: "a number"
        case is [String].Type: "an array of strings"
        default: "of type \(type)"
        }
    }

    // MARK: Decoding server messages (client side)

    /// Decodes the body of a server frame whose header says `M.type`.
    public func decode<M: SignalMessage>(_ type: M.Type, from text: String) throws -> M {
        try JSONDecoder().decode(M.self, from: Data(text.utf8))
    }
}

public struct RequestDecodingError: Error, Sendable {
    public var id: String?
    public var error: ProtocolError
}
