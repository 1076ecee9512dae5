import Logging
import ServiceLifecycle
import Store

/// `chat.retention`: messages older than it are deleted, at start and then every tenth of the
/// retention (at most hourly, at least every second), each room's newest kept so its sequence
/// numbers go on. Every node of a cluster may run it: a delete is the same from any of them.
struct ChatRetentionService: Service {
    let retention: Duration
    let chat: any ChatRepository
    let clock: any ServerClock
    let metrics: ServerMetrics
    let logger: Logger

    var interval: Duration { min(.seconds(3600), max(.seconds(1), retention / 10)) }

    func run() async throws {
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            do {
                let cutoff = clock.wallMilliseconds() - Int64(retention.components.seconds) * 1000
                let deleted = try await chat.deleteMessages(olderThan: cutoff)
                if deleted > 0 {
                    metrics.chatMessagesExpired.increment(by: Int64(deleted))
                    logger.info("chat messages past their retention deleted", metadata: ["count": "\(deleted)"])
                }
            } catch {
                logger.warning("chat retention could not delete; trying again later", metadata: ["error": "\(error)"])
            }
            try? await gracefulShutdownOrSleep(interval)
        }
    }

    /// Sleeps `delay`, ending early at a graceful shutdown.
    private func gracefulShutdownOrSleep(_ delay: Duration) async throws {
        try await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
    }
}
