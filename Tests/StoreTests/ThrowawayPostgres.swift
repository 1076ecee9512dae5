import Foundation
import Store

/// A PostgreSQL server of the test process's own: initdb into a temporary folder, started on a
/// free loopback port, stopped and removed by a watcher when the test process exits (however it
/// ends). Each caller gets a fresh database in it.
actor ThrowawayPostgres {
    static let shared = ThrowawayPostgres()

    /// One start, however many tests ask at once (the actor is reentrant across awaits).
    private var starting: Task<Int, any Error>?
    private var databases = 0

    /// A URL to a new, empty database.
    func freshDatabaseURL() async throws -> PostgresURL {
        if starting == nil { starting = Task { try await Self.start() } }
        let port = try await starting!.value
        databases += 1
        let name = "t\(databases)_\(UUID().uuidString.prefix(8).lowercased())"
        try Self.run(Self.binary("psql"), [
            "-h", "127.0.0.1", "-p", "\(port)", "-U", "parley", "-d", "postgres", "-q", "-c", "CREATE DATABASE \(name)",
        ])
        return try PostgresURL("postgres://parley@127.0.0.1:\(port)/\(name)?sslmode=disable")
    }

    private static func start() async throws -> Int {
        let folder = "/tmp/parley-pg-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        // initdb refuses root; CI runs as root, so the server runs as Debian's postgres user.
        // setpriv execs (runuser would fork and keep the signals meant for the server).
        let asUser: [String] = getuid() == 0 ? ["/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] : []
        if getuid() == 0 { try run("/bin/chown", ["postgres:postgres", folder]) }
        let initdb = [try binary("initdb"), "-D", "\(folder)/data", "-U", "parley", "-A", "trust", "--no-sync", "-E", "UTF8"]
        let command = asUser + initdb
        try run(command[0], Array(command.dropFirst()))
        let port = try freePort()
        let postgres = (asUser + [try binary("postgres")]).map { "'\($0)'" }.joined(separator: " ")
        // The watcher outlives nothing: when the test process is gone it stops the server and
        // removes the folder.
        let watcher = """
            \(postgres) -D '\(folder)/data' -p \(port) -k '\(folder)' -c listen_addresses=127.0.0.1 \
              -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
              >'\(folder)/log' 2>&1 &
            server=$!
            while kill -0 \(getpid()) 2>/dev/null && kill -0 $server 2>/dev/null; do sleep 0.5; done
            kill -INT $server 2>/dev/null; wait $server; rm -rf '\(folder)'
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", watcher]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        for _ in 0..<100 {
            if (try? Self.run(Self.binary("pg_isready"), ["-q", "-h", "127.0.0.1", "-p", "\(port)"])) != nil {
                return port
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let log = (try? String(contentsOfFile: "\(folder)/log", encoding: .utf8)) ?? ""
        throw StoreError("the throwaway PostgreSQL did not start on port \(port): \(log)")
    }

    /// Debian's newest PostgreSQL binaries (`make apt` installs the postgresql package).
    static func binary(_ name: String) throws -> String {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
            .compactMap(Int.init).sorted(by: >)
        for version in versions where FileManager.default.isExecutableFile(atPath: "\(root)/\(version)/bin/\(name)") {
            return "\(root)/\(version)/bin/\(name)"
        }
        throw StoreError("PostgreSQL's \(name) is missing under \(root): run `make apt` (it installs the postgresql package)")
    }

    static func run(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw StoreError("\(executable) \(arguments.joined(separator: " ")) failed: \(String(decoding: text, as: UTF8.self))")
        }
    }

    /// A loopback TCP port nobody holds now.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
                bind(fd, generic, length) == 0 && getsockname(fd, generic, &length) == 0
            }
        }
        guard bound else { throw StoreError("no free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
