import ArgumentParser
import Foundation

/// Operator commands about the nodes of a cluster, over the admin HTTP API of any node.
struct Node: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "See and drain the nodes of a cluster.", subcommands: [List.self, Drain.self, Undrain.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the live nodes with their load.")
        @OptionGroup var target: Rooms.Target
        func run() async throws { try await target.call("GET", "/v1/nodes") }
    }

    struct Drain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Empty a node onto the others.",
            discussion: """
                New rooms stop landing on the node at once; its rooms run on until they empty or the \
                timeout passes; then the participants left are sent to the least loaded other node \
                (they reconnect there by themselves). Shows progress until the node is empty.
                """)
        @Argument(help: "The node's name (server.nodeName); any node's --url reaches it") var name: String
        @Option(help: "How long to wait for rooms to empty before moving the participants left (30s, 2m)") var timeout: String?
        @Flag(help: "Shut the node down once it is empty") var shutdown = false
        @Flag(help: "Return once the drain has started") var noWait = false
        @OptionGroup var target: Rooms.Target

        func run() async throws {
            var body: [String: Any] = ["shutdown": shutdown]
            body["timeout"] = timeout
            let path = "/v1/nodes/\(Rooms.escape(name))/drain"
            let (status, data) = try await target.send("POST", path, body: body)
            guard status == 202, var drain = try? JSONDecoder().decode(DrainProgress.self, from: data) else {
                print(String(decoding: data, as: UTF8.self))
                throw ExitCode(1)
            }
            print(drain.line)
            guard !noWait else { return }
            var last = drain.line
            while drain.phase != "drained" {
                try await Task.sleep(for: .seconds(1))
                guard let (code, answer) = try? await target.send("GET", path), code == 200,
                      let now = try? JSONDecoder().decode(DrainProgress.self, from: answer)
                else {
                    // A node shutting down after its drain stops answering: done.
                    if shutdown, drain.phase == "moving" { break }
                    continue
                }
                drain = now
                if drain.line != last { print(drain.line) }
                last = drain.line
            }
            print(shutdown ? "\(name) is empty and shutting down" : "\(name) is empty; it takes no new rooms until it restarts")
        }
    }

    struct Undrain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop a drain that is still waiting: the node takes new rooms again.")
        @Argument(help: "The node's name") var name: String
        @OptionGroup var target: Rooms.Target
        func run() async throws { try await target.call("DELETE", "/v1/nodes/\(Rooms.escape(name))/drain") }
    }

    /// `GET /v1/nodes/{node}/drain`, as far as the progress line needs it.
    struct DrainProgress: Decodable {
        var node: String
        var phase: String
        var deadline: Int64?
        var rooms: Int
        var participants: Int
        var moved: Int

        var line: String {
            switch phase {
            case "waiting":
                let left = deadline.map { max(0, Int(($0 - Int64(Date().timeIntervalSince1970 * 1000)) / 1000)) }
                return "\(node): waiting for \(rooms) room(s), \(participants) participant(s) to leave"
                    + (left.map { "; moving them in \($0) s" } ?? "")
            case "moving": return "\(node): moving \(participants) participant(s) to other nodes"
            case "drained": return "\(node): drained, \(moved) participant(s) moved to other nodes"
            default: return "\(node): \(phase)"
            }
        }
    }
}
