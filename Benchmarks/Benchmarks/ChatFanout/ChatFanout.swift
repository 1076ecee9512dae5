import Auth
import Benchmark
import Foundation
import Logging
import ParleyProtocol
import ParleyServer
import Store

/// A room of `size` participants whose outboxes are drained by counting tasks, as sockets would.
struct FanoutRoom {
    let room: Room
    let senderSID: String
    let received: Counter
    let registry: RoomRegistry

    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var value = 0
        func add() { lock.withLock { value += 1 } }
        var count: Int { lock.withLock { value } }
    }

    static func make(size: Int, durability: ParleyDatabase.Durability) async throws -> FanoutRoom {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("parley-bench-\(UUID().uuidString)")
        var config = ParleyConfig.defaults(dev: true)
        config.chatRateLimit = .init(perSecond: 0, burst: 1)  // unlimited: the benchmark sends flat out
        config.chatHistoryOnJoin = 0
        let database = try ParleyDatabase(path: folder.appendingPathComponent("bench.sqlite").path, durability: durability)
        var logger = Logger(label: "bench")
        logger.logLevel = .critical
        let services = RoomServices(
            config: config, chat: SQLiteChatRepository(database: database), clock: SystemClock(), ids: IDGenerator(),
            metrics: ServerMetrics(), logger: logger, server: ServerInfo(version: "bench", node: "bench"), media: try MediaServices())
        let registry = RoomRegistry(services: services, workers: MediaWorkers(count: 1))
        let room = try await registry.roomForJoin("bench")
        let received = Counter()
        var senderSID = ""
        for n in 0..<size {
            let connection = SignalingConnection(limit: 1 << 20)
            Task.detached { for await _ in connection.frames { received.add() } }
            let claims = AccessClaims(
                apiKey: "devkey", identity: "p\(n)", notBefore: 0, expires: .max, name: "P\(n)",
                grants: Grants(room: "bench", join: true, chat: true))
            let sid = try await room.join(claims: claims, resume: nil, connection: connection)
            if n == 0 { senderSID = sid }
        }
        return FanoutRoom(room: room, senderSID: senderSID, received: received, registry: registry)
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal, .cpuTotal],
        warmupIterations: 20,
        maxDuration: .seconds(5),
        maxIterations: 2_000)

    // chat.send through the room: commit to SQLite, ack, fan out to 99 others.
    for durability in ParleyDatabase.Durability.allCases {
        Benchmark("chat.send to a 100-participant room (store \(durability.rawValue))") { benchmark in
            let fanout = try await FanoutRoom.make(size: 100, durability: durability)
            benchmark.startMeasurement()
            for iteration in benchmark.scaledIterations {
                let error = await fanout.room.handle(
                    .chatSend(ChatSend(text: "message \(iteration)", clientMsgId: "c\(iteration)-\(UUID().uuidString)")),
                    id: "\(iteration)", from: fanout.senderSID)
                precondition(error == nil, "\(error!)")
            }
            benchmark.stopMeasurement()
        }
    }

    // Fan-out alone: one stored message delivered to 100 participants (encode once, enqueue 100).
    Benchmark("deliver one message to 100 participants") { benchmark in
        let fanout = try await FanoutRoom.make(size: 100, durability: .normal)
        let message = ChatMessage(
            id: "MS_bench", seq: 1, from: ChatSender(sid: "", identity: "", name: "System"), text: "hello everyone",
            to: nil, ts: 0, clientMsgId: nil, system: true)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            await fanout.room.deliverSystemMessage(message)
        }
        benchmark.stopMeasurement()
    }

    Benchmark("decode a chat.send frame") { benchmark in
        let codec = SignalCodec()
        let frame = #"{"type":"chat.send","id":"42","clientMsgId":"6f1c2a","text":"Shall we start the standup?","to":["bob"]}"#
        for _ in benchmark.scaledIterations {
            blackHole(try codec.decodeRequest(frame).get())
        }
    }
}
