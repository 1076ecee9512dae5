import Foundation
import Hummingbird
import ParleyProtocol
import Store

/// The recordings API of PROTOCOL.md: start in a room, list, get, stop and download (with Range).
/// `grants.record` suffices; a token scoped to a room sees only that room's recordings.
struct RecordingRoutes: Sendable {
    let registry: RoomRegistry
    let services: RoomServices
    let auth: AdminAuth

    func register(on router: Router<APIRequestContext>) {
        router.post("/v1/rooms/:room/recordings") { request, context -> Response in
            guard let room = context.parameters.get("room")?.removingPercentEncoding else { throw APIError(.badRequest, "missing room") }
            try await auth.require(request, .record, room: room)
            struct Start: Decodable { let mode: String? }
            var body = try await request.body.collect(upTo: 64 * 1024)
            let mode: String?
            if body.readableBytes == 0 {
                mode = nil
            } else {
                do {
                    mode = try JSONDecoder().decode(Start.self, from: Data(body.readBytes(length: body.readableBytes) ?? [])).mode
                } catch {
                    throw APIError(.badRequest, "body must be {\"mode\":\"tracks|mix|both\"}")
                }
            }
            guard let open = await registry.room(named: room), await !open.isClosed else {
                throw APIError(.notFound, "room \(room) is not open")
            }
            do {
                return JSONResponse.make(try await open.startRecording(mode: mode), status: .created)
            } catch let error as ProtocolError {
                throw APIError(error)
            }
        }
        router.get("/v1/recordings") { request, _ -> Response in
            let room = request.uri.queryParameters.get("room")
            let claims = try await auth.require(request, .record, room: room)
            let scope = room ?? claims.grants.room
            return JSONResponse.make(["recordings": try await repository().list(room: scope)])
        }
        router.get("/v1/recordings/:id") { request, context -> Response in
            JSONResponse.make(try await recording(request, context))
        }
        router.post("/v1/recordings/:id/stop") { request, context -> Response in
            let found = try await recording(request, context)
            guard found.state == "active" || found.state == "starting" else {
                throw APIError(.conflict, "recording \(found.id) is \(found.state)")
            }
            guard let open = await registry.room(named: found.room) else { throw APIError(.notFound, "room \(found.room) is not open") }
            do {
                return JSONResponse.make(try await open.stopRecording(found.id))
            } catch let error as ProtocolError {
                throw APIError(error)
            }
        }
        router.get("/v1/recordings/:id/files/:name") { request, context -> Response in
            let found = try await recording(request, context)
            guard let name = context.parameters.get("name")?.removingPercentEncoding,
                let file = found.files.first(where: { $0.name == name }) ?? manifestlessFile(found, name: name)
            else { throw APIError(.notFound, "recording \(found.id) has no file of that name") }
            let path = (directory(of: found) as NSString).appendingPathComponent(file.name)
            return try await FileDownload.response(path: path, contentType: Self.contentType(of: file.format), request: request, context: context)
        }
    }

    private func repository() throws -> RecordingLog {
        guard let repository = services.recordings else { throw APIError(.notFound, "this server keeps no recordings") }
        return repository
    }

    /// The recording named in the path, if the caller may see it.
    private func recording(_ request: Request, _ context: APIRequestContext) async throws -> RecordingInfo {
        guard let id = context.parameters.get("id") else { throw APIError(.badRequest, "missing id") }
        let claims = try await auth.claims(request)
        guard let found = try await repository().get(id) else { throw APIError(.notFound, "no recording \(id)") }
        try await auth.require(request, .record, room: claims.grants.room == nil ? nil : found.room)
        return found
    }

    /// While a recording runs its files are not listed yet, nor when its node was lost; their
    /// names are in the directory.
    private func manifestlessFile(_ recording: RecordingInfo, name: String) -> RecordingFileInfo? {
        guard recording.state == "active" || recording.state == "interrupted", FileDownload.isPlainName(name),
            FileManager.default.fileExists(atPath: (directory(of: recording) as NSString).appendingPathComponent(name))
        else { return nil }
        let format = name.hasSuffix(".ogg") ? "ogg/opus" : name.hasSuffix(".webm") ? "webm/vp8" : "matroska/h264"
        return RecordingFileInfo(name: name, track: nil, participant: nil, kind: "", format: format, bytes: 0, durationMs: 0, offsetMs: 0)
    }

    private func directory(of recording: RecordingInfo) -> String {
        (services.config.recordingDir as NSString).appendingPathComponent("\(Room.safePathComponent(recording.room))/\(recording.id)")
    }

    static func contentType(of format: String) -> String {
        switch format {
        case "ogg/opus": "audio/ogg"
        case "webm/vp8": "video/webm"
        default: "video/x-matroska"
        }
    }
}

/// A file download with single-range support (RFC 9110 §14): `bytes=a-b`, `bytes=a-`, `bytes=-n`.
enum FileDownload {
    /// A name with no path in it: the download never leaves the recording's folder.
    static func isPlainName(_ name: String) -> Bool {
        !name.isEmpty && !name.contains("/") && !name.contains("\\") && name != "." && name != ".." && !name.contains("\0")
    }

    /// Streams the file (or its range) from disk in chunks: a recording of hours is served in
    /// bounded memory, whatever its size.
    static func response(path: String, contentType: String, request: Request, context: some RequestContext) async throws -> Response {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
              let size = (attributes[.size] as? NSNumber)?.intValue
        else { throw APIError(.notFound, "the file is missing on disk") }
        var start = 0
        var end = size - 1
        var status = HTTPResponse.Status.ok
        if let range = request.headers[.range] {
            guard let parsed = parseRange(range, size: size) else {
                return Response(status: .rangeNotSatisfiable, headers: [.contentRange: "bytes */\(size)"])
            }
            (start, end) = parsed
            status = .partialContent
        }
        let length = max(0, end - start + 1)
        let body: ResponseBody = length > 0 ? try await FileIO().loadFile(path: path, range: start...end, context: context) : .init()
        var headers: HTTPFields = [.contentType: contentType, .acceptRanges: "bytes", .contentLength: "\(length)"]
        if status == .partialContent { headers[.contentRange] = "bytes \(start)-\(end)/\(size)" }
        return Response(status: status, headers: headers, body: body)
    }

    static func parseRange(_ header: String, size: Int) -> (Int, Int)? {
        guard header.hasPrefix("bytes="), !header.contains(","), size > 0 else { return nil }
        let spec = header.dropFirst(6).split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard spec.count == 2 else { return nil }
        if spec[0].isEmpty {
            guard let suffix = Int(spec[1]), suffix > 0 else { return nil }
            return (max(0, size - suffix), size - 1)
        }
        guard let first = Int(spec[0]), first < size else { return nil }
        if spec[1].isEmpty { return (first, size - 1) }
        guard let last = Int(spec[1]), last >= first else { return nil }
        return (first, min(last, size - 1))
    }
}
