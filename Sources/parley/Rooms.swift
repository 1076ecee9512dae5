import ArgumentParser
import Auth
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Operator commands over the admin HTTP API.
struct Rooms: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage rooms through the admin API.",
        subcommands: [List.self, Create.self, Delete.self, Participants.self, Kick.self])

    struct Target: ParsableArguments {
        @Option(help: "Server URL") var url = ProcessInfo.processInfo.environment["PARLEY_URL"] ?? "http://127.0.0.1:7880"
        @OptionGroup var credentials: Credentials

        /// Calls the API with a short-lived server-wide admin token; prints the JSON answer.
        func call(_ method: String, _ path: String, body: [String: Any]? = nil) async throws {
            let (status, data) = try await send(method, path, body: body)
            if let object = try? JSONSerialization.jsonObject(with: data),
               let pretty = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]) {
                print(String(decoding: pretty, as: UTF8.self))
            } else if status == 204 {
                print("done")
            }
            guard (200..<300).contains(status) else { throw ExitCode(1) }
        }

        /// Calls the API with a short-lived server-wide admin token; returns the status and body.
        func send(_ method: String, _ path: String, body: [String: Any]? = nil) async throws -> (Int, Data) {
            let token = try await credentials.issuer().mint(identity: "parley-cli", grants: Grants(admin: true), ttl: 300)
            guard let endpoint = URL(string: url.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + path) else {
                throw ValidationError("bad --url \(url)")
            }
            var request = URLRequest(url: endpoint)
            request.httpMethod = method
            request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
            if let body {
                request.setValue("application/json", forHTTPHeaderField: "Content-Type")
                request.httpBody = try JSONSerialization.data(withJSONObject: body)
            }
            let (data, response) = try await URLSession.shared.data(for: request)
            return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
        }
    }

    static func escape(_ component: String) -> String {
        component.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? component
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List open rooms.")
        @OptionGroup var target: Target
        func run() async throws { try await target.call("GET", "/v1/rooms") }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a room.")
        @Argument(help: "Room name") var name: String
        @Option(help: "Cap on participants (0: none)") var maxParticipants: Int?
        @Option(help: "Seconds an empty room stays open") var emptyTimeout: Int?
        @Option(help: "Room metadata") var metadata: String?
        @OptionGroup var target: Target
        func run() async throws {
            var body: [String: Any] = ["name": name]
            body["maxParticipants"] = maxParticipants
            body["emptyTimeout"] = emptyTimeout
            body["metadata"] = metadata
            try await target.call("POST", "/v1/rooms", body: body)
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Close a room; everyone in it gets room.closed.")
        @Argument(help: "Room name") var name: String
        @OptionGroup var target: Target
        func run() async throws { try await target.call("DELETE", "/v1/rooms/\(Rooms.escape(name))") }
    }

    struct Participants: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a room's participants.")
        @Argument(help: "Room name") var room: String
        @OptionGroup var target: Target
        func run() async throws { try await target.call("GET", "/v1/rooms/\(Rooms.escape(room))/participants") }
    }

    struct Kick: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a participant from a room.")
        @Argument(help: "Room name") var room: String
        @Argument(help: "Participant identity") var identity: String
        @OptionGroup var target: Target
        func run() async throws {
            try await target.call("DELETE", "/v1/rooms/\(Rooms.escape(room))/participants/\(Rooms.escape(identity))")
        }
    }
}
