import Addresses
import ParleyProtocol
import STUN

/// Which local candidates a transport may use, as WebRTC's `iceTransportPolicy` says: `.all`
/// checks from its own socket (host candidates), `.relay` only through a TURN relay.
public enum ICETransportPolicy: Sendable {
    case all, relay
}

public enum TURNClientError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `.relay` was asked for, but no ICE server is a `turn:` URL (UDP or TCP) with credentials.
    case noServer
    case unresolvable(host: String)
    /// The server refused the username and credential.
    case unauthorized
    case rejected(method: String, code: Int, reason: String)
    /// No answer to a request after its retransmissions.
    case timedOut(method: String)

    public var description: String {
        switch self {
        case .noServer: "no TURN server (UDP or TCP) with credentials among the ICE servers"
        case .unresolvable(let host): "the TURN server \(host) has no IPv4 address"
        case .unauthorized: "the TURN server refused the credentials (401)"
        case .rejected(let method, let code, let reason): "TURN \(method) refused: \(code) \(reason)"
        case .timedOut(let method): "the TURN server did not answer \(method)"
        }
    }
}

/// A TURN server a client may relay through: a `turn:` URL (RFC 7065) over UDP or TCP, or a
/// `turns:` one over TLS, and the long-term credentials to use with it.
struct TURNServerURL: Equatable, Sendable {
    static let defaultPort: UInt16 = 3478
    static let defaultTLSPort: UInt16 = 5349

    var host: String
    var port: UInt16
    var username: String
    var password: String
    /// `?transport=tcp`: the client reaches the server over TCP (the relay to peers is UDP still).
    var overTCP = false
    /// `turns:`: over TLS on TCP (RFC 7065), for networks that pass only TLS.
    var overTLS = false

    /// Parses `turn:host[:port][?transport=udp|tcp]` and `turns:host[:port][?transport=tcp]`.
    init?(_ url: String, username: String, password: String) {
        let scheme: String
        if url.hasPrefix("turns:") {
            scheme = "turns:"
            overTLS = true
            overTCP = true
        } else if url.hasPrefix("turn:") {
            scheme = "turn:"
        } else {
            return nil
        }
        let rest = url.dropFirst(scheme.count)
        let parts = rest.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        if parts.count == 2 {
            for parameter in parts[1].split(separator: "&").map({ $0.lowercased() }) where parameter.hasPrefix("transport=") {
                switch parameter {
                case "transport=udp" where !overTLS: overTCP = false
                case "transport=tcp": overTCP = true
                default: return nil
                }
            }
        }
        let hostPort = parts[0]
        var host = Substring(hostPort)
        var port = overTLS ? Self.defaultTLSPort : Self.defaultPort
        if hostPort.hasPrefix("[") {
            guard let close = hostPort.firstIndex(of: "]") else { return nil }
            host = hostPort[hostPort.index(after: hostPort.startIndex)..<close]
            let tail = hostPort[hostPort.index(after: close)...]
            if !tail.isEmpty {
                guard tail.hasPrefix(":"), let value = UInt16(tail.dropFirst()) else { return nil }
                port = value
            }
        } else if let colon = hostPort.lastIndex(of: ":") {
            host = hostPort[..<colon]
            guard let value = UInt16(hostPort[hostPort.index(after: colon)...]) else { return nil }
            port = value
        }
        guard !host.isEmpty else { return nil }
        self.host = String(host)
        self.port = port
        self.username = username
        self.password = password
    }

    /// The first URL of `servers` this client can relay through: over UDP if one is, else TCP,
    /// else TLS.
    static func first(in servers: [ICEServer]) -> TURNServerURL? {
        let usable = all(in: servers)
        return usable.first { !$0.overTCP } ?? usable.first { !$0.overTLS } ?? usable.first
    }

    /// The first URL over TCP among `servers` (plain before TLS), for when UDP to the server is blocked.
    static func firstOverTCP(in servers: [ICEServer]) -> TURNServerURL? {
        let overTCP = all(in: servers).filter(\.overTCP)
        return overTCP.first { !$0.overTLS } ?? overTCP.first
    }

    static func all(in servers: [ICEServer]) -> [TURNServerURL] {
        var usable: [TURNServerURL] = []
        for server in servers {
            guard let username = server.username, let credential = server.credential else { continue }
            for url in server.urls {
                if let parsed = TURNServerURL(url, username: username, password: credential) { usable.append(parsed) }
            }
        }
        return usable
    }
}

/// The client half of one TURN allocation over UDP (RFC 8656): Allocate with long-term
/// credentials (the unauthenticated first try earns realm and nonce; a stale nonce is replaced
/// and the request sent again), permissions and a channel for each peer, Refresh before the
/// lifetime runs out, permissions and channels renewed before theirs do, and Refresh with
/// lifetime 0 to deallocate. Requests are retransmitted until answered or timed out.
///
/// It does no I/O: calls return the datagrams for the TURN server and take what came from it,
/// with the time passed in, so a transport drives it from its tick and tests from their clock.
struct TURNClient {
    enum State: Equatable {
        case allocating
        case allocated(relayed: TransportAddress)
        case failed(TURNClientError)
        /// The deallocating Refresh is out.
        case closing
        case closed
    }

    /// What a datagram from the TURN server was.
    enum Received: Equatable {
        /// Data a peer sent to the relayed address: `range` of the datagram.
        case relayed(from: TransportAddress, range: Range<Int>)
        /// A response (or something to ignore); these datagrams go back to the server.
        case control([[UInt8]])
    }

    private enum Request: Equatable {
        case allocate
        case refresh(lifetime: UInt32)
        case createPermission([IPAddress])
        case channelBind(number: UInt16, peer: TransportAddress)

        var method: STUNMethod {
            switch self {
            case .allocate: .allocate
            case .refresh: .refresh
            case .createPermission: .createPermission
            case .channelBind: .channelBind
            }
        }
    }

    private struct Transaction {
        let request: Request
        let bytes: [UInt8]
        let firstSentAt: UInt64
        var nextSendAt: UInt64
        var interval: UInt64
        /// 438s answered so far, so a server that always says stale cannot keep us looping.
        let staleRetries: Int
    }

    /// A permission (for an IP) or a channel (for a peer): granted once its request succeeded,
    /// renewed at `renewAt` (`.max` while the renewal is out).
    private struct Grant {
        var granted = false
        var renewAt = UInt64.max
    }

    /// Permissions last 300 s and channels 600 s (RFC 8656 §9, §12); both are renewed a minute early.
    static let permissionRenewalNanoseconds: UInt64 = 240_000_000_000
    static let channelRenewalNanoseconds: UInt64 = 540_000_000_000
    static let refreshLifetimeSeconds: UInt32 = 600
    /// RFC 8489 §6.2.1's retransmission doubling from 250 ms, given up after 9.5 s (as libwebrtc).
    static let firstRetransmissionNanoseconds: UInt64 = 250_000_000
    static let transactionTimeoutNanoseconds: UInt64 = 9_500_000_000
    static let maxStaleRetries = 3

    let server: TransportAddress
    /// Reached over TCP: ChannelData is padded to a multiple of four bytes (RFC 8656 §12.5).
    let overTCP: Bool
    let username: String
    private let password: String
    private(set) var state = State.allocating
    private var realm: String?
    private var nonce: String?
    private var key: [UInt8]?
    private var transactions: [STUNTransactionID: Transaction] = [:]
    private var refreshAt = UInt64.max
    private var peers: [TransportAddress] = []
    private var permissions: [IPAddress: Grant] = [:]
    private var channels: [TransportAddress: Grant] = [:]
    private var channelNumbers: [TransportAddress: UInt16] = [:]
    private var peersByChannel: [UInt16: TransportAddress] = [:]

    init(server: TransportAddress, username: String, password: String, overTCP: Bool = false) {
        self.server = server
        self.overTCP = overTCP
        self.username = username
        self.password = password
    }

    var relayedAddress: TransportAddress? {
        if case .allocated(let relayed) = state { relayed } else { nil }
    }

    /// The first Allocate, without credentials: the server's 401 names the realm and a nonce.
    mutating func start(now: UInt64) -> [[UInt8]] {
        [send(.allocate, now: now)]
    }

    /// Asks for permissions (and then channels) for peers not asked for yet.
    mutating func permit(_ newPeers: [TransportAddress], now: UInt64) -> [[UInt8]] {
        for peer in newPeers where !peers.contains(peer) { peers.append(peer) }
        return requestMissingGrants(now: now)
    }

    /// Whether `peer` has a permission, so that data to it is relayed.
    func canRelay(to peer: TransportAddress) -> Bool {
        relayedAddress != nil && permissions[peer.ip]?.granted == true
    }

    /// `data` for `peer` as the server takes it: ChannelData once the peer's channel is bound, a
    /// Send indication before; nil without a permission.
    func frame(_ data: some Collection<UInt8>, to peer: TransportAddress) -> [UInt8]? {
        guard canRelay(to: peer) else { return nil }
        if channels[peer]?.granted == true, let number = channelNumbers[peer] {
            return ChannelData.encode(channel: number, data: data, padForTCP: overTCP)
        }
        return STUNMessageBuilder.relayIndication(.send, peer: peer, data: data, transactionID: .random())
    }

    /// A datagram from the server: relayed data (ChannelData or a Data indication) or a response.
    mutating func receive(_ datagram: UnsafeRawBufferPointer, now: UInt64) -> Received {
        if let channelData = ChannelData(datagram) {
            guard let peer = peersByChannel[channelData.channel] else { return .control([]) }
            return .relayed(from: peer, range: channelData.dataRange)
        }
        guard let message = try? STUNMessage(parsing: datagram) else { return .control([]) }
        if message.type == STUNMessageType(method: .data, class: .indication) {
            guard let peer = message.xorAddress(.xorPeerAddress), let data = message.attribute(.data) else { return .control([]) }
            return .relayed(from: peer, range: data.valueRange)
        }
        return .control(handleResponse(message, now: now))
    }

    /// Retransmissions and renewals that are due; a request unanswered for too long fails the allocation.
    mutating func tick(now: UInt64) -> [[UInt8]] {
        var datagrams: [[UInt8]] = []
        for (id, transaction) in transactions {
            guard now < transaction.firstSentAt + Self.transactionTimeoutNanoseconds else {
                fail(.timedOut(method: transaction.request.method.description))
                return []
            }
            guard now >= transaction.nextSendAt else { continue }
            transactions[id]?.interval *= 2
            transactions[id]?.nextSendAt = now + transaction.interval * 2
            datagrams.append(transaction.bytes)
        }
        guard relayedAddress != nil else { return datagrams }
        if now >= refreshAt {
            refreshAt = .max
            datagrams.append(send(.refresh(lifetime: Self.refreshLifetimeSeconds), now: now))
        }
        let duePermissions = permissions.filter { $0.value.granted && now >= $0.value.renewAt }.map(\.key)
        if !duePermissions.isEmpty {
            for ip in duePermissions { permissions[ip]?.renewAt = .max }
            datagrams.append(send(.createPermission(duePermissions), now: now))
        }
        for (peer, channel) in channels where channel.granted && now >= channel.renewAt {
            guard let number = channelNumbers[peer] else { continue }
            channels[peer]?.renewAt = .max
            datagrams.append(send(.channelBind(number: number, peer: peer), now: now))
        }
        return datagrams
    }

    /// Deallocates with a Refresh of lifetime 0, when there is an allocation to end.
    mutating func close(now: UInt64) -> [[UInt8]] {
        transactions.removeAll()
        guard relayedAddress != nil else {
            state = .closed
            return []
        }
        state = .closing
        return [send(.refresh(lifetime: 0), now: now)]
    }

    // MARK: Requests and responses

    private mutating func send(_ request: Request, now: UInt64, staleRetries: Int = 0) -> [UInt8] {
        var builder = STUNMessageBuilder(type: STUNMessageType(method: request.method, class: .request), transactionID: .random())
        switch request {
        case .allocate:
            builder.append(requestedTransport: TURNTransport.udpProtocolNumber)
        case .refresh(let lifetime):
            builder.append(.lifetime, uint32: lifetime)
        case .createPermission(let ips):
            for ip in ips { builder.append(.xorPeerAddress, xorAddress: TransportAddress(ip: ip, port: 0)) }
        case .channelBind(let number, let peer):
            builder.append(channelNumber: number)
            builder.append(.xorPeerAddress, xorAddress: peer)
        }
        if let key, let realm, let nonce {
            builder.append(.username, string: username)
            builder.append(.realm, string: realm)
            builder.append(.nonce, string: nonce)
            builder.appendMessageIntegrity(key: key)
        }
        builder.appendFingerprint()
        transactions[builder.transactionID] = Transaction(
            request: request, bytes: builder.bytes, firstSentAt: now, nextSendAt: now + Self.firstRetransmissionNanoseconds,
            interval: Self.firstRetransmissionNanoseconds, staleRetries: staleRetries)
        return builder.bytes
    }

    private mutating func handleResponse(_ message: STUNMessage, now: UInt64) -> [[UInt8]] {
        guard let transaction = transactions[message.transactionID] else { return [] }  // stray, or answered already
        switch message.type.messageClass {
        case .successResponse:
            // Only the holder of the key can have answered; anything else is ignored and the request retried.
            guard let key, message.hasValidIntegrity(key: key) else { return [] }
            transactions[message.transactionID] = nil
            return succeeded(transaction.request, message, now: now)
        case .errorResponse:
            transactions[message.transactionID] = nil
            let (code, reason) = message.errorCode ?? (0, "no ERROR-CODE")
            if code == 401, key == nil, let realm = message.string(.realm), let nonce = message.string(.nonce) {
                self.realm = realm
                self.nonce = nonce
                key = STUNIntegrity.longTermKey(username: username, realm: realm, password: password)
                return [send(transaction.request, now: now)]
            }
            if code == 438, key != nil, let nonce = message.string(.nonce), transaction.staleRetries < Self.maxStaleRetries {
                self.nonce = nonce
                return [send(transaction.request, now: now, staleRetries: transaction.staleRetries + 1)]
            }
            fail(code == 401 ? .unauthorized : .rejected(method: transaction.request.method.description, code: code, reason: reason))
            return []
        default:
            return []
        }
    }

    private mutating func succeeded(_ request: Request, _ response: STUNMessage, now: UInt64) -> [[UInt8]] {
        switch request {
        case .allocate:
            guard let relayed = response.xorAddress(.xorRelayedAddress) else {
                fail(.rejected(method: "Allocate", code: 0, reason: "no XOR-RELAYED-ADDRESS"))
                return []
            }
            state = .allocated(relayed: relayed)
            scheduleRefresh(lifetime: response.uint32(.lifetime), now: now)
            return requestMissingGrants(now: now)
        case .refresh(lifetime: 0):
            state = .closed
        case .refresh:
            scheduleRefresh(lifetime: response.uint32(.lifetime), now: now)
        case .createPermission(let ips):
            for ip in ips { permissions[ip] = Grant(granted: true, renewAt: now + Self.permissionRenewalNanoseconds) }
            return requestMissingGrants(now: now)
        case .channelBind(_, let peer):
            channels[peer] = Grant(granted: true, renewAt: now + Self.channelRenewalNanoseconds)
        }
        return []
    }

    /// A CreatePermission for the peers' addresses without one, and a ChannelBind for each peer
    /// whose address is permitted and which has no channel yet.
    private mutating func requestMissingGrants(now: UInt64) -> [[UInt8]] {
        guard relayedAddress != nil else { return [] }
        var datagrams: [[UInt8]] = []
        var unasked: [IPAddress] = []
        for peer in peers where permissions[peer.ip] == nil && !unasked.contains(peer.ip) { unasked.append(peer.ip) }
        if !unasked.isEmpty {
            for ip in unasked { permissions[ip] = Grant() }
            datagrams.append(send(.createPermission(unasked), now: now))
        }
        for peer in peers where permissions[peer.ip]?.granted == true && channels[peer] == nil {
            let number = ChannelData.channelRange.lowerBound + UInt16(channelNumbers.count)
            channelNumbers[peer] = number
            // Data may come on the channel before its success response does.
            peersByChannel[number] = peer
            channels[peer] = Grant()
            datagrams.append(send(.channelBind(number: number, peer: peer), now: now))
        }
        return datagrams
    }

    /// The next Refresh a minute before the lifetime ends (halfway through a short one).
    private mutating func scheduleRefresh(lifetime: UInt32?, now: UInt64) {
        let seconds = UInt64(lifetime ?? Self.refreshLifetimeSeconds)
        refreshAt = now + (seconds > 120 ? seconds - 60 : seconds / 2) * 1_000_000_000
    }

    /// Ends the allocation's life on this side; a failing deallocation just ends it.
    private mutating func fail(_ error: TURNClientError) {
        transactions.removeAll()
        state = state == .closing ? .closed : .failed(error)
    }
}
