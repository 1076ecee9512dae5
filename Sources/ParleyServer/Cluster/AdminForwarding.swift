import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HTTPTypes
import Hummingbird
import NIOCore

/// The admin API answers for the whole cluster from any node: a request about one room
/// (`/v1/rooms/{room}…`) that is not open here goes to the node that holds it, one about a node
/// (`/v1/nodes/{node}/…`) to that node, with the caller's
/// own Authorization (the owner checks it) and this node's `ClusterCredential`, and its answer
/// comes back as it is. A forwarded request is never forwarded again.
struct AdminForwardingMiddleware<Context: RequestContext>: RouterMiddleware {
    let membership: ClusterMembership
    let registry: RoomRegistry

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        guard request.headers[SignalingRelay.credentialHeader] == nil else { return try await next(request, context) }
        if path == "/v1/rooms" || path == "/v1/rooms/", request.method == .get {
            return try await listEverywhere(request, context: context, next: next)
        }
        if path.hasPrefix("/v1/nodes/") {
            // A drain acts on the node it names.
            let node = path.dropFirst("/v1/nodes/".count).split(separator: "/", maxSplits: 1).first.map(String.init) ?? ""
            guard node != membership.nodeName, !node.isEmpty, let base = await membership.signalingURL(of: node) else {
                return try await next(request, context)
            }
            return try await forward(request, to: node, at: base, what: "node \(node)")
        }
        guard path.hasPrefix("/v1/rooms/") else { return try await next(request, context) }
        let encodedRoom = path.dropFirst("/v1/rooms/".count).split(separator: "/", maxSplits: 1).first.map(String.init) ?? ""
        guard let room = encodedRoom.removingPercentEncoding, !room.isEmpty, await registry.room(named: room) == nil,
              let owner = try? await membership.owner(of: room), owner.node != membership.nodeName,
              let base = await membership.signalingURL(of: owner.node)
        else {
            return try await next(request, context)
        }
        return try await forward(request, to: owner.node, at: base, what: "room \(room) lives on node \(owner.node), which")
    }

    /// Sends `request` on to `node` and brings its answer back, marked with `X-Parley-Node`.
    func forward(_ request: Request, to node: String, at base: String, what: String) async throws -> Response {
        guard let url = URL(string: base + request.uri.path + Self.query(request)) else {
            throw APIError(.internal, "node \(node) has an unusable address \(base)")
        }
        var forwarded = nodeRequest(url, for: request, timeout: 10)
        forwarded.httpMethod = request.method.rawValue
        if let type = request.headers[.contentType] { forwarded.setValue(type, forHTTPHeaderField: "Content-Type") }
        let body = try await request.body.collect(upTo: APIRoutes.maxBodyBytes)
        if body.readableBytes > 0 { forwarded.httpBody = Data(body.readableBytesView) }
        do {
            let (data, response) = try await URLSession.shared.data(for: forwarded)
            let status = (response as? HTTPURLResponse)?.statusCode ?? 502
            var headers = HTTPFields()
            headers[.contentType] = (response as? HTTPURLResponse)?.value(forHTTPHeaderField: "Content-Type") ?? "application/json"
            headers[HTTPField.Name("X-Parley-Node")!] = node
            return Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
        } catch {
            throw APIError(.unavailable, "\(what) cannot be reached now: \(error)")
        }
    }

    /// `GET /v1/rooms` from any node: this node's rooms and every other live node's, by name. A
    /// node that cannot be reached is left out (and named in `X-Parley-Unreachable`).
    func listEverywhere(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // The local route checks the caller's token; its rooms are then read here as objects.
        let local = try await next(request, context)
        guard local.status == .ok,
              let data = try? JSONEncoder().encode(await registry.list()),
              var rooms = (try? JSONSerialization.jsonObject(with: data)) as? [[String: Any]]
        else { return local }
        var unreachable: [String] = []
        let others = ((try? await membership.liveNodes()) ?? []).filter { $0.name != membership.nodeName }
        for node in others {
            guard let url = URL(string: node.signalingURL + "/v1/rooms") else { continue }
            guard let (answer, response) = try? await URLSession.shared.data(for: nodeRequest(url, for: request, timeout: 5)),
                  (response as? HTTPURLResponse)?.statusCode == 200,
                  let theirs = (try? JSONSerialization.jsonObject(with: answer) as? [String: Any])?["rooms"] as? [[String: Any]]
            else {
                unreachable.append(node.name)
                continue
            }
            rooms += theirs
        }
        rooms.sort { ($0["name"] as? String ?? "") < ($1["name"] as? String ?? "") }
        let merged = try JSONSerialization.data(withJSONObject: ["rooms": rooms], options: [.sortedKeys])
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        if !unreachable.isEmpty { headers[HTTPField.Name("X-Parley-Unreachable")!] = unreachable.joined(separator: ",") }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: merged)))
    }

    /// A request to another node on behalf of `request`: the caller's Authorization, which that
    /// node checks, and this node's credential, which keeps it from forwarding again.
    func nodeRequest(_ url: URL, for request: Request, timeout: TimeInterval) -> URLRequest {
        var asked = URLRequest(url: url, timeoutInterval: timeout)
        if let authorization = request.headers[.authorization] { asked.setValue(authorization, forHTTPHeaderField: "Authorization") }
        asked.setValue(membership.credential(), forHTTPHeaderField: SignalingRelay.credentialHeader.rawName)
        return asked
    }

    static func query(_ request: Request) -> String {
        guard let query = request.uri.query, !query.isEmpty else { return "" }
        return "?" + query
    }
}
