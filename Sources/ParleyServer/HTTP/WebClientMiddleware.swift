import Foundation
import Hummingbird

/// Serves the built-in web client, the browser SDK (`/sdk/parley.js`, `/sdk/parley.d.ts`) and the
/// examples (`/examples/…`): the package resources under `Public/`, read once at start. There is
/// no build step and nothing comes from a CDN.
struct WebClientMiddleware<Context: RequestContext>: RouterMiddleware {
    private let files: [String: (type: String, body: ByteBuffer)]

    private static var types: [String: String] { [
        "html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8",
        "ts": "application/typescript; charset=utf-8", "svg": "image/svg+xml", "png": "image/png",
    ] }

    init() {
        var files: [String: (String, ByteBuffer)] = [:]
        if let directory = Bundle.module.url(forResource: "Public", withExtension: nil),
           let walker = FileManager.default.enumerator(atPath: directory.path)
        {
            while let relative = walker.nextObject() as? String {
                guard let type = Self.types[(relative as NSString).pathExtension],
                    let data = FileManager.default.contents(atPath: directory.appendingPathComponent(relative).path)
                else { continue }
                files["/" + relative] = (type, ByteBuffer(bytes: data))
            }
        }
        // A folder's index.html answers for the folder.
        for (path, file) in files where path.hasSuffix("/index.html") {
            let folder = String(path.dropLast("index.html".count))
            files[folder] = file
        }
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
