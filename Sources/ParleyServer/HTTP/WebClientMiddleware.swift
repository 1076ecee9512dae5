import Foundation
import Hummingbird

/// Serves the built-in web client (package resources under `Public/`) at `/`. Files are read
/// once at start; there is no build step and nothing comes from a CDN.
struct WebClientMiddleware<Context: RequestContext>: RouterMiddleware {
    private let files: [String: (type: String, body: ByteBuffer)]

    init() {
        var files: [String: (String, ByteBuffer)] = [:]
        let types = ["html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"]
        if let directory = Bundle.module.url(forResource: "Public", withExtension: nil),
           let names = try? FileManager.default.contentsOfDirectory(atPath: directory.path)
        {
            for name in names {
                let ext = (name as NSString).pathExtension
                guard let type = types[ext], let data = FileManager.default.contents(atPath: directory.appendingPathComponent(name).path)
                else { continue }
                files["/" + name] = (type, ByteBuffer(bytes: data))
            }
        }
        if let index = files["/index.html"] { files["/"] = index }
        self.files = files
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.method == .get, let file = files[request.uri.path] else {
            return try await next(request, context)
        }
        return Response(
            status: .ok, headers: [.contentType: file.type, .cacheControl: "no-cache"], body: .init(byteBuffer: file.body))
    }
}
