import Hummingbird
import NIOConcurrencyHelpers
import NIOCore
import ParleyProtocol

/// The HTTP API's request context: the basic one, plus the client's address for per-client limits.
struct APIRequestContext: RequestContext, RemoteAddressRequestContext {
    var coreContext: CoreRequestContextStorage
    let remoteAddress: SocketAddress?

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }
}

/// Per-client token buckets for the HTTP API, keyed by the client's address. Refilled buckets are
/// the same as none, so they are swept: the table holds the clients seen in the last few seconds.
final class ClientRateLimiter: Sendable {
    let perSecond: Double
    let burst: Int
    private let buckets = NIOLockedValueBox<(table: [String: TokenBucket], sweptAt: Duration)>(([:], .zero))
    static let sweepInterval: Duration = .seconds(10)

    init(perSecond: Double, burst: Int) {
        self.perSecond = perSecond
        self.burst = burst
    }

    func take(_ client: String, now: Duration) -> Bool {
        guard perSecond > 0 else { return true }
        return buckets.withLockedValue { state in
            if now - state.sweptAt >= Self.sweepInterval {
                state.table = state.table.filter { !$0.value.isFull(now: now) }
                state.sweptAt = now
            }
            var bucket = state.table[client] ?? TokenBucket(perSecond: perSecond, burst: burst, now: now)
            let taken = bucket.take(now: now)
            state.table[client] = bucket
            return taken
        }
    }

    var trackedClients: Int { buckets.withLockedValue { $0.table.count } }
}

/// Refuses, before any handler reads it, a body declared larger than the API takes (413), and a
/// client over its request rate (429 with Retry-After). Probes and scrapes (`/healthz`,
/// `/readyz`, `/metrics`) are not limited: a monitoring system must always get its answer.
struct RequestLimitsMiddleware<Context: RequestContext & RemoteAddressRequestContext>: RouterMiddleware {
    let limiter: ClientRateLimiter
    let maxBodyBytes: Int
    let clock: any ServerClock
    let metrics: ServerMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > maxBodyBytes {
            metrics.recordError(.tooLarge)
            throw APIError(.tooLarge, "request body of \(length) bytes exceeds \(maxBodyBytes)")
        }
        if !unlimitedPaths.contains(request.uri.path) {
            let client = context.remoteAddress?.ipAddress ?? "unknown"
            guard limiter.take(client, now: clock.now()) else {
                metrics.recordError(.rateLimited)
                metrics.httpRateLimited.increment()
                var response = APIError(.rateLimited, "too many requests from \(client); slow down").response
                response.headers[.retryAfter] = "1"
                return response
            }
        }
        return try await next(request, context)
    }
}

/// Probes and scrapes: never rate limited. (A generic type cannot hold a stored static.)
private let unlimitedPaths: Set<String> = ["/healthz", "/readyz", "/metrics"]

extension APIError {
    var response: Response { JSONResponse.make(body, status: status) }
}
