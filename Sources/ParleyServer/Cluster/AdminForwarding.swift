import Auth
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HTTPTypes
import Hummingbird
import NIOCore

/// The admin API answers for the whole cluster from any node: a request about one room
/// (`/v1/rooms/{room}…`) that is not open here goes to the node that holds it, with the caller's
/// own Authorization (the owner checks it) and this node's `ClusterCredential`, and its answer
/// comes back as it is. A forwarded request is never forwarded again.
struct AdminForwardingMiddleware<Context: RequestContext>: RouterMiddleware {
    let membership: ClusterMembership
    let registry: RoomRegistry
    let secret: [UInt8]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        guard path.hasPrefix("/v1/rooms/"), request.headers[SignalingRelay.credentialHeader] == nil else {
            return try await next(request, context)
        }
        let encodedRoom = path.dropFirst("/v1/rooms/".count).split(separator: "/", maxSplits: 1).first.map(String.init) ?? ""
        guard let room = encodedRoom.removingPercentEncoding, !room.isEmpty, await registry.room(named: room) == nil,
              let owner = try? await membership.owner(of: room), owner.node != membership.nodeName,
              let base = await membership.signalingURL(of: owner.node), let url = URL(string: base + path + Self.query(request))
        else {
            return try await next(request, context)
        }
        var forwarded = URLRequest(url: url, timeoutInterval: 10)
        forwarded.httpMethod = request.method.rawValue
        if let authorization = request.headers[.authorization] { forwarded.setValue(authorization, forHTTPHeaderField: "Authorization") }
        if let type = request.headers[.contentType] { forwarded.setValue(type, forHTTPHeaderField: "Content-Type") }
        forwarded.setValue(
            ClusterCredential.sign(node: membership.nodeName, unixTime: Int64(Date().timeIntervalSince1970), secret: secret),
            forHTTPHeaderField: SignalingRelay.credentialHeader.rawName)
        let body = try await request.body.collect(upTo: APIRoutes.maxBodyBytes)
        if body.readableBytes > 0 { forwarded.httpBody = Data(body.readableBytesView) }
        do {
            let (data, response) = try await URLSession.shared.data(for: forwarded)
            let status = (response as? HTTPURLResponse)?.statusCode ?? 502
            var headers = HTTPFields()
            headers[.contentType] = (response as? HTTPURLResponse)?.value(forHTTPHeaderField: "Content-Type") ?? "application/json"
            headers[HTTPField.Name("X-Parley-Node")!] = owner.node
            return Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
        } catch {
            throw APIError(.unavailable, "room \(room) lives on node \(owner.node), which cannot be reached now: \(error)")
        }
    }

    static func query(_ request: Request) -> String {
        guard let query = request.uri.query, !query.isEmpty else { return "" }
        return "?" + query
    }
}
