import Auth
import Hummingbird
import ParleyProtocol

/// Checks `Authorization: Bearer <JWT>` on admin calls. A token whose grants name a room may
/// only administer that room; one without a room administers the whole server.
struct AdminAuth: Sendable {
    let verifier: TokenVerifier

    enum Need { case admin, record }

    func claims(_ request: Request) async throws -> AccessClaims {
        guard let header = request.headers[.authorization] else {
            throw APIError(.unauthorized, "missing Authorization: Bearer <token>")
        }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else {
            throw APIError(.unauthorized, "Authorization must be Bearer <token>")
        }
        do {
            return try await verifier.verify(String(parts[1]))
        } catch {
            throw APIError(.unauthorized, error.description)
        }
    }

    /// The caller's claims, if they hold `need` for `room` (nil: the whole server).
    @discardableResult
    func require(_ request: Request, _ need: Need = .admin, room: String? = nil) async throws -> AccessClaims {
        let claims = try await claims(request)
        let granted = claims.grants.admin || (need == .record && claims.grants.record)
        guard granted else {
            throw APIError(.forbidden, need == .admin ? "token lacks the admin grant" : "token lacks the record grant")
        }
        if let scope = claims.grants.room, scope != room {
            throw APIError(.forbidden, room == nil ? "token is limited to room \(scope)" : "token is limited to room \(scope), not \(room!)")
        }
        return claims
    }
}
