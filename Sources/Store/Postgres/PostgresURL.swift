import Foundation

/// A `postgres://user:password@host:port/database?sslmode=…` URL, as libpq and most tools write
/// it. `host` may also be given as a query item (`?host=/run/postgresql`) for a Unix socket.
public struct PostgresURL: Sendable, Equatable, CustomStringConvertible {
    public enum TLSMode: String, Sendable {
        /// Plain TCP (loopback, a private network).
        case disable
        /// TLS when the server offers it.
        case prefer
        /// TLS or no connection.
        case require
    }

    public var host: String
    public var port: Int
    public var unixSocketPath: String?
    public var username: String
    public var password: String?
    public var database: String
    public var tls: TLSMode

    public init(_ text: String) throws {
        guard let components = URLComponents(string: text), let scheme = components.scheme,
              scheme == "postgres" || scheme == "postgresql"
        else {
            throw StoreError("database.url: expected postgres://user:password@host:port/database, got \(Self.redacted(text))")
        }
        let query = Dictionary(
            (components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { _, last in last })
        guard let user = components.user?.removingPercentEncoding, !user.isEmpty else {
            throw StoreError("database.url: no user name in \(Self.redacted(text))")
        }
        username = user
        password = components.password?.removingPercentEncoding
        host = components.host.flatMap { $0.isEmpty ? nil : $0 } ?? "localhost"
        port = components.port ?? 5432
        if let socketFolder = query["host"], socketFolder.hasPrefix("/") {
            unixSocketPath = "\(socketFolder)/.s.PGSQL.\(port)"
        }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        database = path.isEmpty ? user : path
        let mode = query["sslmode"] ?? "prefer"
        switch mode {
        case "disable": tls = .disable
        case "allow", "prefer": tls = .prefer
        case "require", "verify-ca", "verify-full": tls = .require
        default: throw StoreError("database.url: sslmode \(mode) is not one of disable, prefer, require")
        }
    }

    /// The URL without its password, for logs.
    public var description: String {
        let target = unixSocketPath ?? "\(host):\(port)"
        return "postgres://\(username)@\(target)/\(database)"
    }

    static func redacted(_ text: String) -> String {
        guard var components = URLComponents(string: text), components.password != nil else { return text }
        components.password = "***"
        return components.string ?? "(unreadable URL)"
    }
}

/// A store failure worded for an operator or a client's error message.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}
