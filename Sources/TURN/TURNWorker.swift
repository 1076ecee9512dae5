import Addresses
import NIOCore
import NetworkAddress
import STUN

#if canImport(Glibc)
import Glibc
#endif

/// The TURN server's work on one engine thread: the allocations of the clients whose datagrams
/// (or TCP frames) reach this worker, their relay sockets, and the requests that manage them.
/// Every method runs on the engine's thread, so the UDP relay path takes no lock and hops no
/// thread; `@unchecked Sendable` only so listeners can hand it work through the engine.
final class TURNWorker: @unchecked Sendable {
    let engine: UDPEngine
    let configuration: TURNConfiguration
    let nonces: NonceIssuer
    let quota: AllocationQuota
    let reservations: PortReservations
    let admission: StreamAdmission
    /// The TCP clients of this worker's engine, for the idle sweep.
    private var streams: [ObjectIdentifier: StreamConnection] = [:]
    /// Monotonic nanoseconds, and wall-clock seconds for nonces and REST expiries; both injected.
    let now: @Sendable () -> UInt64
    let unixTime: @Sendable () -> UInt64
    var statistics = TURNStatistics()
    private var allocations: [ClientKey: Allocation] = [:]
    private var unauthenticated: [IPAddress: Allowance] = [:]
    private var random = SystemRandomNumberGenerator()
    /// What a round relayed to each TLS client, written with one hop to its channel's loop at
    /// the round's end instead of one per packet. A frame per buffer: each goes in its own TLS
    /// record, as clients that read one record at a time (coturn's) expect.
    private var pendingChannels: [ObjectIdentifier: (channel: any Channel, frames: [ByteBuffer])] = [:]

    static let knownAttributes: Set<STUNAttributeType> = [
        .username, .messageIntegrity, .messageIntegritySHA256, .realm, .nonce, .fingerprint, .lifetime, .xorPeerAddress,
        .data, .requestedTransport, .requestedAddressFamily, .evenPort, .dontFragment, .reservationToken, .channelNumber,
        .bandwidth,
    ]

    init(
        engine: UDPEngine, configuration: TURNConfiguration, nonces: NonceIssuer, quota: AllocationQuota,
        reservations: PortReservations, admission: StreamAdmission, now: @escaping @Sendable () -> UInt64,
        unixTime: @escaping @Sendable () -> UInt64
    ) {
        self.admission = admission
        self.engine = engine
        self.configuration = configuration
        self.nonces = nonces
        self.quota = quota
        self.reservations = reservations
        self.now = now
        self.unixTime = unixTime
    }

    /// Connects the worker to its engine: datagrams in, and the one-second tick.
    func attach() {
        engine.onTick = { [unowned self] now in tick(now: now) }
        engine.onRoundEnd = { [unowned self] in flushChannels() }
        engine.handleStreamAccepted = { [unowned self] fd, client, server in
            guard admission.acquire(client.ip) else {
                statistics.streamsRefused += 1
                return nil
            }
            statistics.tcpConnections += 1
            let connection = StreamConnection(fd: fd, key: ClientKey(transport: .tcp, client: client, server: server))
            connection.idleSince = now()
            streams[ObjectIdentifier(connection)] = connection
            return connection
        }
        engine.onAcceptExhausted = { [unowned self] in statistics.acceptsExhausted += 1 }
        engine.handleStreamFrame = { [unowned self] connection, frame in
            handleClient(frame, key: connection.key, link: .stream(connection))
        }
        engine.handleStreamClosed = { [unowned self] connection, malformed in
            statistics.tcpConnections -= 1
            admission.release(connection.key.client.ip)
            streams[ObjectIdentifier(connection)] = nil
            if malformed { statistics.droppedMalformed += 1 }
            connectionClosed(connection.key)
        }
        engine.handleDatagram = { [unowned self] fd, role, payload, source in
            switch role {
            case .listener(let server):
                guard let client = source.transportAddress else { return }
                handleClient(payload, key: ClientKey(transport: .udp, client: client, server: server), link: .udp(fd, source))
            case .relay(let allocation):
                relayRead(payload, from: source, allocation: allocation)
            case .wakeup, .streamListener, .stream:
                break  // the engine serves these itself
            }
        }
    }

    func stop() {
        for allocation in Array(allocations.values) { remove(allocation) }
    }

    func snapshot() -> TURNStatistics {
        var snapshot = statistics
        snapshot.allocationsActive = allocations.count
        return snapshot
    }

    /// Expires allocations, permissions, channels and reservations; trims rate-limit state.
    func tick(now: UInt64) {
        for allocation in Array(allocations.values) {
            if allocation.expiresAt <= now {
                remove(allocation)
            } else {
                allocation.expire(now: now)
            }
        }
        reservations.expire(now: now)
        // A refilled allowance is the same as none: the table keeps only sources seen lately.
        unauthenticated = unauthenticated.filter { !$0.value.isFull(now: now) }
        let idleLimit = configuration.streamIdleSeconds * 1_000_000_000
        for connection in Array(streams.values) where allocations[connection.key] == nil && now &- connection.idleSince > idleLimit {
            statistics.streamsClosedIdle += 1
            engine.closeStream(connection, malformed: false)
        }
    }

    // MARK: From clients

    /// One datagram from a UDP client, or one frame from a TCP client: STUN or ChannelData.
    func handleClient(_ bytes: UnsafeMutableRawBufferPointer, key: ClientKey, link: ClientLink) {
        guard bytes.count >= 4 else { return statistics.droppedMalformed += 1 }
        let first = bytes[0]
        if first & 0xC0 == 0x40 {
            relayChannelData(UnsafeRawBufferPointer(bytes), key: key)
        } else if first & 0xC0 == 0 {
            handleSTUN(UnsafeRawBufferPointer(bytes), key: key, link: link)
        } else {
            statistics.droppedMalformed += 1
        }
    }

    /// A TCP client went away: its allocation goes with it (RFC 6062 §4.2... and RFC 8656 §5).
    func hasAllocation(_ key: ClientKey) -> Bool { allocations[key] != nil }

    func connectionClosed(_ key: ClientKey) {
        if let allocation = allocations[key] { remove(allocation) }
    }

    private func relayChannelData(_ bytes: UnsafeRawBufferPointer, key: ClientKey) {
        let number = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
        let length = Int(UInt16(bytes[2]) << 8 | UInt16(bytes[3]))
        guard length + 4 <= bytes.count else { return statistics.droppedMalformed += 1 }
        guard let allocation = allocations[key], let binding = allocation.channels[number] else {
            return statistics.droppedNoPermission += 1
        }
        let now = now()
        guard binding.expiresAt > now, allocation.permits(binding.peer, policy: configuration.policy, now: now) else {
            return statistics.droppedNoPermission += 1
        }
        guard allocation.allowance?.take(length, now: now) ?? true else { return statistics.bandwidthDrops += 1 }
        sendToPeer(UnsafeRawBufferPointer(rebasing: bytes[4..<(4 + length)]), address: binding.socketAddress, from: allocation)
    }

    private func sendToPeer(_ payload: UnsafeRawBufferPointer, address: RawSocketAddress, from allocation: Allocation) {
        statistics.packetsToPeers += 1
        statistics.bytesToPeers += UInt64(payload.count)
        if !engine.send(allocation.relaySocket, payload, to: address) { statistics.sendFailures += 1 }
    }

    private func handleSTUN(_ bytes: UnsafeRawBufferPointer, key: ClientKey, link: ClientLink) {
        guard let message = try? STUNMessage(parsing: bytes) else { return statistics.droppedMalformed += 1 }
        if message.fingerprintAttribute != nil, !message.hasValidFingerprint { return statistics.droppedMalformed += 1 }
        switch (message.type.method, message.type.messageClass) {
        case (.binding, .request):
            statistics.bindingRequests += 1
            var response = STUNMessageBuilder(responding: message, class: .successResponse)
            response.append(.xorMappedAddress, xorAddress: key.client)
            response.append(.software, string: configuration.software)
            respond(&response, to: message, link: link, key: nil)
        case (.send, .indication):
            relaySendIndication(message, key: key)
        case (_, .request):
            handleRequest(message, key: key, link: link)
        default:
            break  // other indications and stray responses are ignored (RFC 8489 §6.3)
        }
    }

    private func relaySendIndication(_ message: STUNMessage, key: ClientKey) {
        guard let allocation = allocations[key] else { return statistics.droppedNoPermission += 1 }
        guard let peer = message.xorAddress(.xorPeerAddress), let data = message.attribute(.data) else {
            return statistics.droppedMalformed += 1
        }
        let now = now()
        guard allocation.permits(peer, policy: configuration.policy, now: now) else { return statistics.droppedNoPermission += 1 }
        guard allocation.allowance?.take(data.length, now: now) ?? true else { return statistics.bandwidthDrops += 1 }
        message.bytes[data.valueRange].withUnsafeBytes { payload in
            sendToPeer(payload, address: RawSocketAddress(peer), from: allocation)
        }
    }

    // MARK: Requests

    private func handleRequest(_ message: STUNMessage, key: ClientKey, link: ClientLink) {
        let method = message.type.method
        guard [.allocate, .refresh, .createPermission, .channelBind].contains(method) else {
            return reject(message, 400, "\(method) is not supported", link: link, key: nil)
        }
        // Long-term credentials, in RFC 8489 §9.2.4's order.
        let realm = configuration.credentials.realm
        let unixTime = unixTime()
        guard message.integrityAttribute != nil else {
            return challenge(message, 401, "Unauthorized", key: key, link: link, unixTime: unixTime)
        }
        guard let username = message.string(.username), let requestRealm = message.string(.realm),
            let nonce = message.string(.nonce)
        else { return reject(message, 400, "USERNAME, REALM and NONCE are required with MESSAGE-INTEGRITY", link: link, key: nil) }
        guard nonces.isValid(nonce, for: key.client.ip, unixTime: unixTime) else {
            return challenge(message, 438, "Stale Nonce", key: key, link: link, unixTime: unixTime)
        }
        guard requestRealm == realm,
            case .key(let integrityKey, let identity) = configuration.credentials.lookup(username: username, unixTime: unixTime),
            message.hasValidIntegrity(key: integrityKey)
        else {
            statistics.authFailures += 1
            return challenge(message, 401, "Unauthorized", key: key, link: link, unixTime: unixTime)
        }
        let unknown = message.unknownComprehensionRequired(known: Self.knownAttributes)
        guard unknown.isEmpty else {
            var response = STUNMessageBuilder(responding: message, class: .errorResponse)
            response.appendErrorCode(420, reason: "Unknown Attribute")
            response.appendUnknownAttributes(unknown)
            statistics.errorResponses += 1
            return respond(&response, to: message, link: link, key: integrityKey)
        }
        let request = AuthenticatedRequest(
            message: message, key: key, link: link, username: username, identity: identity, integrityKey: integrityKey)
        if method == .allocate { return allocate(request) }
        guard let allocation = allocations[key] else {
            return reject(message, 437, "Allocation Mismatch", link: link, key: integrityKey)
        }
        guard allocation.username == username else {
            return reject(message, 441, "Wrong Credentials", link: link, key: integrityKey)
        }
        switch method {
        case .refresh: refresh(request, allocation)
        case .createPermission: createPermission(request, allocation)
        default: channelBind(request, allocation)
        }
    }

    struct AuthenticatedRequest {
        let message: STUNMessage
        let key: ClientKey
        let link: ClientLink
        let username: String
        let identity: String
        let integrityKey: [UInt8]
    }

    private func allocate(_ request: AuthenticatedRequest) {
        let message = request.message
        if let existing = allocations[request.key] {
            guard existing.allocateTransaction == message.transactionID else {
                return reject(message, 437, "Allocation Mismatch", link: request.link, key: request.integrityKey)
            }
            return sendToClient(existing.allocateResponse, link: request.link)  // a retransmission
        }
        guard let transport = message.requestedTransport else {
            return reject(message, 400, "REQUESTED-TRANSPORT is required", link: request.link, key: request.integrityKey)
        }
        guard transport == TURNTransport.udpProtocolNumber else {
            return reject(message, 442, "Unsupported Transport Protocol", link: request.link, key: request.integrityKey)
        }
        if let family = message.value(.requestedAddressFamily) {
            let wantsIPv4 = family.first == 0x01
            guard family.count == 4, family.first == 0x01 || family.first == 0x02 else {
                return reject(message, 400, "REQUESTED-ADDRESS-FAMILY is invalid", link: request.link, key: request.integrityKey)
            }
            guard wantsIPv4 == request.key.server.ip.isIPv4 else {
                return reject(message, 440, "Address Family not Supported", link: request.link, key: request.integrityKey)
            }
        }
        let evenPort = message.value(.evenPort)
        let token = message.uint64(.reservationToken)
        if token != nil, evenPort != nil || message.contains(.requestedAddressFamily) {
            return reject(message, 400, "RESERVATION-TOKEN excludes EVEN-PORT", link: request.link, key: request.integrityKey)
        }
        var reserved: PortReservations.Reservation?
        if let token {
            guard let reservation = reservations.take(token: token), reservation.address.ip == request.key.server.ip else {
                return reject(message, 508, "Insufficient Capacity", link: request.link, key: request.integrityKey)
            }
            reserved = reservation
        }
        guard quota.acquire(request.identity) else {
            if let reserved { close(reserved.socket) }
            statistics.quotaRefusals += 1
            return reject(message, 486, "Allocation Quota Reached", link: request.link, key: request.integrityKey)
        }
        let reserveNext = (evenPort?.first ?? 0) & 0x80 != 0
        // A reserved port's socket is already bound: this worker adopts it.
        let opened = reserved.map { (socket: $0.socket, token: UInt64?.none) }
            ?? openRelay(ip: request.key.server.ip, even: evenPort != nil, reserveNext: reserveNext)
        guard let opened else {
            quota.release(request.identity)
            return reject(message, 508, "Insufficient Capacity", link: request.link, key: request.integrityKey)
        }
        completeAllocation(request, relaySocket: opened.socket, reservationToken: opened.token)
    }

    private func completeAllocation(_ request: AuthenticatedRequest, relaySocket: Int32, reservationToken: UInt64?) {
        guard let relayed = localAddress(of: relaySocket) else {
            close(relaySocket)
            quota.release(request.identity)
            return reject(request.message, 508, "Insufficient Capacity", link: request.link, key: request.integrityKey)
        }
        let now = now()
        let lifetime = configuration.lifetime(requested: request.message.uint32(.lifetime))
        let bitrate = configuration.maxBitratePerAllocation
        let allocation = Allocation(
            key: request.key, link: request.link, username: request.username, identity: request.identity,
            integrityKey: request.integrityKey, relayed: relayed, relaySocket: relaySocket,
            expiresAt: now + UInt64(lifetime) * 1_000_000_000, allocateTransaction: request.message.transactionID,
            allowance: bitrate > 0 ? Allowance(bitsPerSecond: bitrate, now: now) : nil)
        engine.register(relaySocket, role: .relay(allocation))
        var response = STUNMessageBuilder(responding: request.message, class: .successResponse)
        response.append(.xorRelayedAddress, xorAddress: relayed)
        response.append(.lifetime, uint32: lifetime)
        if let reservationToken { response.append(.reservationToken, uint64: reservationToken) }
        response.append(.xorMappedAddress, xorAddress: request.key.client)
        response.append(.software, string: configuration.software)
        response.appendMessageIntegrity(key: request.integrityKey)
        if request.message.fingerprintAttribute != nil { response.appendFingerprint() }
        allocation.allocateResponse = response.bytes
        allocations[request.key] = allocation
        statistics.allocationsCreated += 1
        sendToClient(response.bytes, link: request.link)
    }

    private func refresh(_ request: AuthenticatedRequest, _ allocation: Allocation) {
        let requested = request.message.uint32(.lifetime)
        var response = STUNMessageBuilder(responding: request.message, class: .successResponse)
        if requested == 0 {
            remove(allocation)
            response.append(.lifetime, uint32: 0)
        } else {
            let lifetime = configuration.lifetime(requested: requested)
            allocation.expiresAt = now() + UInt64(lifetime) * 1_000_000_000
            response.append(.lifetime, uint32: lifetime)
        }
        respond(&response, to: request.message, link: request.link, key: request.integrityKey)
    }

    private func createPermission(_ request: AuthenticatedRequest, _ allocation: Allocation) {
        guard let peers = request.message.xorAddresses(.xorPeerAddress), !peers.isEmpty else {
            return reject(request.message, 400, "XOR-PEER-ADDRESS is required", link: request.link, key: request.integrityKey)
        }
        let added = Set(peers.map(\.ip)).subtracting(allocation.permissions.keys).count
        guard allocation.permissions.count + added <= configuration.maxPermissionsPerAllocation else {
            statistics.permissionCapRefusals += 1
            return reject(
                request.message, 508, "Insufficient Capacity: at most \(configuration.maxPermissionsPerAllocation) permissions per allocation",
                link: request.link, key: request.integrityKey)
        }
        var decisions: [(IPAddress, PeerPolicy.Decision)] = []
        for peer in peers {
            guard peer.ip.isIPv4 == allocation.relayed.ip.isIPv4 else {
                return reject(request.message, 443, "Peer Address Family Mismatch", link: request.link, key: request.integrityKey)
            }
            let decision = configuration.policy.decision(for: peer.ip)
            guard decision != .denied else {
                statistics.deniedPeers += 1
                return reject(request.message, 403, "Forbidden: \(peer.ip) is not a permitted peer", link: request.link, key: request.integrityKey)
            }
            decisions.append((peer.ip, decision))
        }
        let expiresAt = now() + TURNConfiguration.permissionLifetimeSeconds * 1_000_000_000
        for (ip, decision) in decisions { allocation.permissions[ip] = .init(expiresAt: expiresAt, decision: decision) }
        var response = STUNMessageBuilder(responding: request.message, class: .successResponse)
        respond(&response, to: request.message, link: request.link, key: request.integrityKey)
    }

    private func channelBind(_ request: AuthenticatedRequest, _ allocation: Allocation) {
        let message = request.message
        guard let number = message.channelNumber, ChannelData.channelRange.contains(number) else {
            return reject(message, 400, "CHANNEL-NUMBER must be 0x4000 to 0x7FFF", link: request.link, key: request.integrityKey)
        }
        guard let peer = message.xorAddress(.xorPeerAddress) else {
            return reject(message, 400, "XOR-PEER-ADDRESS is required", link: request.link, key: request.integrityKey)
        }
        guard peer.ip.isIPv4 == allocation.relayed.ip.isIPv4 else {
            return reject(message, 443, "Peer Address Family Mismatch", link: request.link, key: request.integrityKey)
        }
        let decision = configuration.policy.decision(for: peer.ip)
        guard configuration.policy.permits(peer, under: decision) else {
            statistics.deniedPeers += 1
            return reject(message, 403, "Forbidden: \(peer) is not a permitted peer", link: request.link, key: request.integrityKey)
        }
        if let existing = allocation.channels[number], existing.peer != peer {
            return reject(message, 400, "channel \(number) is bound to another peer", link: request.link, key: request.integrityKey)
        }
        if let other = allocation.channelByPeer[peer], other != number {
            return reject(message, 400, "\(peer) is bound to another channel", link: request.link, key: request.integrityKey)
        }
        if allocation.permissions[peer.ip] == nil, allocation.permissions.count >= configuration.maxPermissionsPerAllocation {
            statistics.permissionCapRefusals += 1
            return reject(
                message, 508, "Insufficient Capacity: at most \(configuration.maxPermissionsPerAllocation) permissions per allocation",
                link: request.link, key: request.integrityKey)
        }
        let now = now()
        allocation.channels[number] = .init(
            peer: peer, socketAddress: RawSocketAddress(peer), expiresAt: now + TURNConfiguration.channelLifetimeSeconds * 1_000_000_000)
        allocation.channelByPeer[peer] = number
        allocation.permissions[peer.ip] = .init(
            expiresAt: now + TURNConfiguration.permissionLifetimeSeconds * 1_000_000_000, decision: decision)
        var response = STUNMessageBuilder(responding: message, class: .successResponse)
        respond(&response, to: message, link: request.link, key: request.integrityKey)
    }

    private func remove(_ allocation: Allocation) {
        guard allocations[allocation.key] === allocation else { return }
        allocations[allocation.key] = nil
        // A TCP client without its allocation starts its idle time again.
        if case .stream(let connection) = allocation.link { connection.idleSince = now() }
        engine.unregister(allocation.relaySocket)
        quota.release(allocation.identity)
    }

    // MARK: From peers

    /// A datagram on a relay: to the client as ChannelData when the peer has a channel, else as a
    /// Data indication; dropped without a permission.
    func relayRead(_ payload: UnsafeMutableRawBufferPointer, from source: RawSocketAddress, allocation: Allocation) {
        guard let peer = source.transportAddress else { return }
        let now = now()
        guard allocation.permits(peer, policy: configuration.policy, now: now) else { return statistics.droppedNoPermission += 1 }
        let length = payload.count
        guard allocation.allowance?.take(length, now: now) ?? true else { return statistics.bandwidthDrops += 1 }
        statistics.packetsToClients += 1
        statistics.bytesToClients += UInt64(length)
        if let number = allocation.channelByPeer[peer], let binding = allocation.channels[number], binding.expiresAt > now {
            switch allocation.link {
            case .udp(let listener, let client):
                // The header goes into the headroom the engine left in front of the payload.
                let frame = UnsafeMutableRawBufferPointer(start: payload.baseAddress! - 4, count: length + 4)
                frame[0] = UInt8(number >> 8)
                frame[1] = UInt8(number & 0xFF)
                frame[2] = UInt8(length >> 8)
                frame[3] = UInt8(length & 0xFF)
                engine.enqueue(listener, UnsafeRawBufferPointer(frame), to: client)
            case .stream(let connection):
                let padding = (4 - length % 4) % 4
                let queued = engine.appendToStream(connection, count: 4 + length + padding) { bytes in
                    bytes.append(contentsOf: [UInt8(number >> 8), UInt8(number & 0xFF), UInt8(length >> 8), UInt8(length & 0xFF)])
                    bytes.append(contentsOf: UnsafeRawBufferPointer(payload))
                    if padding > 0 { bytes.append(contentsOf: repeatElement(0, count: padding)) }
                }
                if !queued { statistics.bandwidthDrops += 1 }
            case .channel(let channel):
                let padding = (4 - length % 4) % 4
                appendToChannel(channel, capacity: 4 + length + padding) { buffer in
                    buffer.writeInteger(number)
                    buffer.writeInteger(UInt16(length))
                    buffer.writeBytes(UnsafeRawBufferPointer(payload))
                    if padding > 0 { buffer.writeRepeatingByte(0, count: padding) }
                }
            }
        } else {
            let indication = STUNMessageBuilder.relayIndication(
                .data, peer: peer, data: UnsafeRawBufferPointer(payload), transactionID: .random(using: &random))
            sendToClient(indication, link: allocation.link)
        }
    }

    // MARK: Writing

    private func challenge(_ message: STUNMessage, _ code: Int, _ reason: String, key: ClientKey, link: ClientLink, unixTime: UInt64) {
        guard takeUnauthenticated(key.client.ip) else { return statistics.rateLimited += 1 }
        var response = STUNMessageBuilder(responding: message, class: .errorResponse)
        response.appendErrorCode(code, reason: reason)
        response.append(.realm, string: configuration.credentials.realm)
        response.append(.nonce, string: nonces.issue(for: key.client.ip, unixTime: unixTime))
        statistics.errorResponses += 1
        respond(&response, to: message, link: link, key: nil)
    }

    private func reject(_ message: STUNMessage, _ code: Int, _ reason: String, link: ClientLink, key: [UInt8]?) {
        var response = STUNMessageBuilder(responding: message, class: .errorResponse)
        response.appendErrorCode(code, reason: reason)
        statistics.errorResponses += 1
        respond(&response, to: message, link: link, key: key)
    }

    private func respond(_ response: inout STUNMessageBuilder, to request: STUNMessage, link: ClientLink, key: [UInt8]?) {
        if let key { response.appendMessageIntegrity(key: key) }
        if request.fingerprintAttribute != nil { response.appendFingerprint() }
        sendToClient(response.bytes, link: link)
    }

    private func sendToClient(_ bytes: [UInt8], link: ClientLink) {
        switch link {
        case .udp(let listener, let client):
            let sent = bytes.withUnsafeBytes { engine.send(listener, $0, to: client) }
            if !sent { statistics.sendFailures += 1 }
        case .stream(let connection):
            if !engine.appendToStream(connection, count: bytes.count, { $0.append(contentsOf: bytes) }) { statistics.sendFailures += 1 }
        case .channel(let channel):
            appendToChannel(channel, capacity: bytes.count) { $0.writeBytes(bytes) }
        }
    }

    /// Gathers bytes for a TLS client until the round ends.
    private func appendToChannel(_ channel: any Channel, capacity: Int, _ write: (inout ByteBuffer) -> Void) {
        let id = ObjectIdentifier(channel)
        if pendingChannels[id] == nil {
            // A client that does not read is not buffered for without bound.
            guard channel.isWritable else { return statistics.bandwidthDrops += 1 }
            pendingChannels[id] = (channel, [])
        }
        var frame = channel.allocator.buffer(capacity: capacity)
        write(&frame)
        pendingChannels[id]!.frames.append(frame)
    }

    /// Writes each TLS client's gathered frames: one task on its channel's loop per round.
    func flushChannels() {
        guard !pendingChannels.isEmpty else { return }
        for (_, pending) in pendingChannels {
            let (channel, frames) = pending
            channel.eventLoop.execute {
                for frame in frames { channel.write(frame, promise: nil) }
                channel.flush()
            }
        }
        pendingChannels.removeAll(keepingCapacity: true)
    }

    private func takeUnauthenticated(_ ip: IPAddress) -> Bool {
        let now = now()
        if unauthenticated[ip] == nil, unauthenticated.count >= configuration.maxRateLimitedSources {
            // A flood of sources (spoofed, most likely): the tenth idle longest go, not the
            // whole table, so the sources being limited stay limited.
            let oldest = unauthenticated.sorted { $0.value.updatedAt < $1.value.updatedAt }.prefix(max(1, unauthenticated.count / 10))
            for (source, _) in oldest { unauthenticated[source] = nil }
        }
        var allowance = unauthenticated[ip] ?? Allowance(
            perSecond: configuration.unauthenticatedPerSecond, burst: Double(configuration.unauthenticatedBurst), now: now)
        let taken = allowance.take(now: now)
        unauthenticated[ip] = allowance
        return taken
    }

    // MARK: Relay sockets

    /// Binds a relay on `ip` at a random port of the range (an even one when asked), trying a
    /// few before giving up; with `reserveNext`, also holds the next port and returns its token.
    private func openRelay(ip: IPAddress, even: Bool, reserveNext: Bool) -> (socket: Int32, token: UInt64?)? {
        let range = configuration.relayPorts
        for _ in 0..<16 {
            var port = Int.random(in: range, using: &random)
            if even || reserveNext { port &= ~1 }
            if port < range.lowerBound || (reserveNext && port + 1 > range.upperBound) { continue }
            guard let socket = try? bindUDPSocket(TransportAddress(ip: ip, port: UInt16(port))) else { continue }
            guard reserveNext else { return (socket, nil) }
            guard let held = try? bindUDPSocket(TransportAddress(ip: ip, port: UInt16(port + 1))) else {
                close(socket)
                continue
            }
            let token = UInt64.random(in: 1...UInt64.max, using: &random)
            reservations.add(token: token, .init(
                address: TransportAddress(ip: ip, port: UInt16(port + 1)), socket: held,
                expiresAt: now() + PortReservations.lifetimeNanoseconds))
            return (socket, token)
        }
        return nil
    }
}
