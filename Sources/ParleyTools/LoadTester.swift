import Auth
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Opus
import ParleyClient
import ParleyProtocol
import RTP

/// `parley loadtest`: synthetic participants with real media. In each room, publishers send a
/// libopus tone (a distinct frequency each) stamped with abs-capture-time; subscribers receive
/// every publisher through the SFU and measure loss, jitter and one-way delay per track, and
/// check at the end that each publisher's tone is there.
public final class LoadTester: @unchecked Sendable {
    public struct Options: Sendable {
        public var url: String
        /// Other nodes of a cluster: participants go round `url` and these, so each room's
        /// participants are spread over every node (the rooms' own nodes relay the rest).
        public var alternateURLs: [String] = []
        public var apiKey: String
        public var apiSecret: String
        public var rooms = 1
        public var publishers = 1
        public var subscribers = 1
        public var duration: Duration = .seconds(60)
        /// Participants started per second.
        public var rampPerSecond = 10.0
        /// Chat messages per second per room (sent by its first publisher).
        public var chatRate = 0.0
        /// Publishers also send synthetic VP8 video at this bitrate; 0 means audio only.
        public var videoBitrate = 0
        /// With video: three simulcast layers (`simulcastLayers`) with RTX and transport-cc
        /// instead of one stream at `videoBitrate`.
        public var simulcast = false
        /// The simulcast layers' sizes and bitrates, lowest first.
        public var simulcastLayers = SimulcastLayerPlan.standard
        /// The quality subscribers ask for of every video track (nil: the server's choice).
        public var quality: VideoQuality?
        public var roomPrefix = "load"
        /// `parley`, or `janus` (its VideoRoom over the WebSocket API at `url`, e.g. ws://127.0.0.1:8188).
        public var target = "parley"
        /// `.relay` sends Parley participants' media through the TURN server `joined` names.
        public var iceTransportPolicy = ICETransportPolicy.all

        public init(url: String, apiKey: String, apiSecret: String) {
            self.url = url
            self.apiKey = apiKey
            self.apiSecret = apiSecret
        }
    }

    /// What one subscriber measured of one publisher's track beyond the SDK's per-track
    /// statistics (loss, jitter, bitrate come from those): one-way delay and the latest payloads.
    final class TrackStats: @unchecked Sendable {
        let subscriber: SubscriberConnection
        let ssrc: UInt32
        let publisherSid: String
        let kind: String
        var delaysMs: [Double] = []
        var lastPayloads: [[UInt8]] = []

        init(subscriber: SubscriberConnection, ssrc: UInt32, publisherSid: String, kind: String) {
            self.subscriber = subscriber
            self.ssrc = ssrc
            self.publisherSid = publisherSid
            self.kind = kind
        }

        /// Delay from abs-capture-time, or else from the payload's send time (`sentAt`).
        func record(_ header: RTPHeader, packet: UnsafeRawBufferPointer, captureID: UInt8, sentAt: (UnsafeRawBufferPointer) -> Int64?) {
            let payload = UnsafeRawBufferPointer(rebasing: packet[header.payloadRange])
            var sent: Int64?
            if let range = header.extensionElement(id: captureID, in: packet), range.count >= 8 {
                var raw: UInt64 = 0
                for index in range.prefix(8) { raw = raw << 8 | UInt64(packet[index]) }
                sent = NTPTimestamp(rawValue: raw).unixNanoseconds
            } else if kind == "audio" {
                sent = sentAt(payload)
            }
            if let sent {
                let delay = Double(Int64(Date().timeIntervalSince1970 * 1e9) - sent) / 1e6
                if delay > -50, delay < 60_000 { delaysMs.append(max(0, delay)) }
            }
            guard kind == "audio" else { return }
            lastPayloads.append(Array(payload))
            if lastPayloads.count > 100 { lastPayloads.removeFirst(lastPayloads.count - 100) }
        }
    }

    public struct Report: Codable, Sendable {
        public struct Percentiles: Codable, Sendable {
            public var p50: Double
            public var p95: Double
            public var p99: Double
            public var count: Int
        }

        public var rooms: Int
        public var publishers: Int
        public var subscribers: Int
        public var durationSeconds: Double
        public var joinsOK: Int
        public var joinsFailed: Int
        public var joinMs: Percentiles
        public var mediaDelayMs: Percentiles
        public var packetsReceived: Int
        public var packetsLost: Int
        public var lossPercent: Double
        public var jitterMs: Double
        public var bitrateKbpsPerTrack: Double
        public var tracksReceived: Int
        public var tracksExpected: Int
        public var tonesDetected: Int
        public var videoTracksReceived: Int
        public var videoBitrateKbpsPerTrack: Double
        public var chatDelayMs: Percentiles
        /// Video tracks received, by the width of the latest keyframe each subscriber got of
        /// them (the simulcast layer the server chose): width → tracks; "none" before a keyframe.
        public var videoWidths: [String: Int]
        /// Each subscriber's video tracks: which layer it got.
        public var videoReceptions: [VideoReception]
        /// What publishers' transports heard back: transport-wide feedback packets and NACKs
        /// answered (on RTX when negotiated), summed over publishers.
        public var publisherTransportFeedback: Int
        public var publisherRetransmissions: Int
        /// Summed over every node given.
        public var server: [String: Double]
        /// Joins by the node that took the connection's URL → the node that held the room.
        public var joinsByNode: [String: Int]
        public var errors: [String]
    }

    /// One subscriber's reception of one video track.
    public struct VideoReception: Codable, Sendable {
        public var subscriber: String
        public var publisher: String
        public var track: String
        public var frameWidth: Int?
        public var frameHeight: Int?
        /// Keyframes received by width (more than one width: the layer changed).
        public var keyframesByWidth: [String: Int]
        public var bitrateKbps: Double
    }

    let options: Options
    private let group: MultiThreadedEventLoopGroup
    private let logger: Logger
    private let joinTimes = NIOLockedValueBox<[Double]>([])
    private let joinsByNode = NIOLockedValueBox<[String: Int]>([:])
    private let chatDelays = NIOLockedValueBox<[Double]>([])
    private let failures = NIOLockedValueBox<[String]>([])
    private let tracks = NIOLockedValueBox<[TrackStats]>([])
    private let subscribers = NIOLockedValueBox<[SubscriberConnection]>([])
    /// Each subscriber connection's identity, for the report.
    private let subscriberIdentities = NIOLockedValueBox<[ObjectIdentifier: String]>([:])
    private let publishers = NIOLockedValueBox<[PublisherConnection]>([])
    /// Publisher participant sid → its tone's frequency.
    private let frequencies = NIOLockedValueBox<[String: Double]>([:])
    /// Janus: each room's publisher feed ids, as publishers join (subscribers wait for all).
    private let janusFeeds = NIOLockedValueBox<[String: [UInt64]]>([:])
    private let janusRooms = NIOLockedValueBox<[String: UInt64]>([:])
    /// Send times of audio payloads by content, for delay through servers that do not forward
    /// abs-capture-time (Janus): two generations, the older dropped every 5 s.
    private let sentPayloads = NIOLockedValueBox((current: [Int: Int64](), previous: [Int: Int64](), rotatedAt: Int64(0)))

    static func payloadKey(_ payload: some Collection<UInt8>) -> Int {
        var hasher = Hasher()
        hasher.combine(payload.count)
        for byte in payload.prefix(48) { hasher.combine(byte) }
        return hasher.finalize()
    }

    func noteSent(_ payload: ArraySlice<UInt8>) {
        let now = Int64(Date().timeIntervalSince1970 * 1e9)
        let key = Self.payloadKey(payload)
        sentPayloads.withLockedValue { table in
            if now - table.rotatedAt > 5_000_000_000 {
                table.previous = table.current
                table.current.removeAll(keepingCapacity: true)
                table.rotatedAt = now
            }
            table.current[key] = now
        }
    }

    func sentTime(of payload: UnsafeRawBufferPointer) -> Int64? {
        let key = Self.payloadKey(payload)
        return sentPayloads.withLockedValue { $0.current[key] ?? $0.previous[key] }
    }

    public init(options: Options, logger: Logger = Logger(label: "parley.loadtest")) {
        self.options = options
        self.logger = logger
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, System.coreCount))
    }

    /// Runs the whole test; `progress` gets a line about once a second.
    public func run(progress: @escaping @Sendable (String) -> Void) async throws -> Report {
        let issuer = await TokenIssuer(apiKey: options.apiKey, secret: options.apiSecret)
        let started = ContinuousClock.now
        let end = started + options.duration
        // `node`: which of the URLs a participant connects to. Each room's first participant (who
        // places it) goes to the next node, and the rest go round all of them.
        var plan: [(room: String, index: Int, publishes: Bool, node: Int)] = []
        let nodes = 1 + options.alternateURLs.count
        for room in 0..<options.rooms {
            for index in 0..<options.publishers { plan.append(("\(options.roomPrefix)-\(room)", index, true, (room + index) % nodes)) }
            for index in 0..<options.subscribers {
                plan.append(("\(options.roomPrefix)-\(room)", index, false, (room + options.publishers + index) % nodes))
            }
        }
        let total = plan.count
        let joined = NIOLockedValueBox(0)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { [self] in
                while ContinuousClock.now < end {
                    try await Task.sleep(for: .seconds(1))
                    let (ok, failed) = (joined.withLockedValue { $0 }, failures.withLockedValue { $0.count })
                    let received = await receivedStatistics().values.flatMap { $0 }
                    let delays = tracks.withLockedValue { $0.flatMap { $0.delaysMs.suffix(50) } }
                    progress(String(
                        format: "joined %d/%d, failed %d, packets %d, loss %.2f%%, delay p50 %.1f ms",
                        ok, total, failed, received.reduce(0) { $0 + $1.packetsReceived }, Self.lossPercent(received),
                        Self.percentile(delays, 0.5)))
                }
            }
            for (number, entry) in plan.enumerated() {
                let startAt = started + .milliseconds(Int(Double(number) / max(0.1, options.rampPerSecond) * 1000))
                tasks.addTask { [self] in
                    try await Task.sleep(until: startAt, clock: .continuous)
                    do {
                        if options.target == "janus" {
                            try await janusParticipant(room: entry.room, index: entry.index, publishes: entry.publishes, until: end) {
                                joined.withLockedValue { $0 += 1 }
                            }
                        } else {
                            let urls = [options.url] + options.alternateURLs
                            try await participant(
                                room: entry.room, index: entry.index, publishes: entry.publishes, url: urls[entry.node], issuer: issuer,
                                until: end
                            ) {
                                joined.withLockedValue { $0 += 1 }
                            }
                        }
                    } catch {
                        failures.withLockedValue { $0.append("\(entry.room) \(entry.publishes ? "publisher" : "subscriber") \(entry.index): \(error)") }
                    }
                }
            }
            try await tasks.waitForAll()
        }
        let report = await makeReport(elapsed: ContinuousClock.now - started)
        try await group.shutdownGracefully()
        return report
    }

    /// Every subscriber's per-track statistics, read on its loop.
    private func receivedStatistics() async -> [ObjectIdentifier: [ReceivedTrackStatistics]] {
        var all: [ObjectIdentifier: [ReceivedTrackStatistics]] = [:]
        for subscriber in subscribers.withLockedValue({ $0 }) {
            all[ObjectIdentifier(subscriber)] = (try? await subscriber.loop.submit { subscriber.statistics() }.get()) ?? []
        }
        return all
    }

    static func lossPercent(_ statistics: [ReceivedTrackStatistics]) -> Double {
        let lost = statistics.reduce(0) { $0 + max(0, $1.packetsLost) }
        let expected = statistics.reduce(0) { $0 + $1.packetsExpected }
        return expected > 0 ? 100 * Double(lost) / Double(expected) : 0
    }

    /// One synthetic participant from join to the end of the test.
    private func participant(
        room: String, index: Int, publishes: Bool, url: String, issuer: TokenIssuer, until end: ContinuousClock.Instant,
        onJoined: @escaping @Sendable () -> Void
    ) async throws {
        let identity = "\(publishes ? "pub" : "sub")-\(index)-\(UUID().uuidString.prefix(6))"
        var grants = Grants(room: room)
        for name in publishes ? ["join", "publish", "chat"] : ["join", "subscribe", "chat"] { _ = grants.enable(name) }
        let token = try await issuer.mint(identity: identity, grants: grants, ttl: 3600)
        let joinStarted = ContinuousClock.now
        let signaling = try await SignalingClient.connect(url: url, token: token, logger: logger)
        let first = try await signaling.next(timeout: .seconds(15))
        guard first.type == "joined" else { throw SignalingClientError.connectFailed(String(first.text.prefix(200))) }
        let joinedMessage = try first.decode(Joined.self)
        joinsByNode.withLockedValue { $0[joinedMessage.server.node, default: 0] += 1 }
        joinTimes.withLockedValue { $0.append(Self.milliseconds(ContinuousClock.now - joinStarted)) }
        onJoined()
        let loop = group.next()
        if publishes {
            let frequency = 300.0 + 110.0 * Double(index)
            frequencies.withLockedValue { $0[joinedMessage.participant.sid] = frequency }
            let publisher = try await loop.submit { try PublisherConnection(loop: loop) }.get()
            publishers.withLockedValue { $0.append(publisher) }
            try await publisher.start(iceServers: joinedMessage.iceServers, policy: options.iceTransportPolicy)
            let video = options.videoBitrate > 0
            let simulcast = options.simulcast
            let offer = try await loop.submit { publisher.makeOffer(video: video, simulcast: simulcast) }.get()
            let answer = try await signaling.request(SessionDescription(target: .publisher, sdp: offer), timeout: .seconds(15))
                .decode(AnswerMessage.self)
            try await loop.submit {
                try publisher.apply(answer: answer.sdp)
                try publisher.startSyntheticMedia(
                    frequency: frequency, videoBitrate: video ? self.options.videoBitrate : nil, layers: self.options.simulcastLayers)
            }.get()
            var nextChat = ContinuousClock.now
            while ContinuousClock.now < end {
                if options.chatRate > 0, index == 0, ContinuousClock.now >= nextChat {
                    nextChat += .milliseconds(Int(1000 / options.chatRate))
                    let sentAt = Int64(Date().timeIntervalSince1970 * 1000)
                    try? await signaling.send(ChatSend(text: "lt:\(sentAt)", clientMsgId: UUID().uuidString))
                }
                // Dynacast: the layers no subscriber needs pause until they are asked for again.
                if let frame = try? await signaling.next(timeout: .milliseconds(100)), frame.type == PublisherLayers.type,
                    let layers = try? frame.decode(PublisherLayers.self)
                {
                    try await loop.submit { publisher.setActiveLayers(layers.active) }.get()
                }
            }
            await publisher.close()
        } else {
            let subscriber = try await loop.submit { try SubscriberConnection(loop: loop) }.get()
            try await subscriber.start(iceServers: joinedMessage.iceServers, policy: options.iceTransportPolicy)
            subscriberIdentities.withLockedValue { $0[ObjectIdentifier(subscriber)] = identity }
            try await loop.submit { [self] in installStatistics(on: subscriber) }.get()
            var askedQuality: Set<String> = []
            while ContinuousClock.now < end {
                guard let frame = try? await signaling.next(timeout: .milliseconds(200)) else { continue }
                if let offer = frame.subscriberOffer {
                    let (answer, videoTracks) = try await loop.submit {
                        (try subscriber.answer(offer: offer.sdp), subscriber.tracksBySSRC.values.filter { $0.kind == "video" }.map(\.trackSid))
                    }.get()
                    try await signaling.sendRaw(SignalCodec().encode(AnswerMessage(target: .subscriber, sdp: answer), re: offer.id))
                    // Each new video track once: the quality holds for it from then on.
                    let fresh = Set(videoTracks).subtracting(askedQuality)
                    if let quality = options.quality, !fresh.isEmpty {
                        askedQuality.formUnion(fresh)
                        try await signaling.send(SubscribeRequest(tracks: fresh.sorted(), subscribe: true, quality: quality))
                    }
                } else if frame.type == "chat", let chat = try? frame.decode(ChatEvent.self), chat.message.text.hasPrefix("lt:"),
                    let sent = Int64(chat.message.text.dropFirst(3))
                {
                    chatDelays.withLockedValue { $0.append(Double(Int64(Date().timeIntervalSince1970 * 1000) - sent)) }
                }
            }
            await subscriber.close()
        }
        // Leaving (rather than dropping) frees the session at once: a room the next run joins holds no ghosts.
        try? await signaling.send(Leave())
        await signaling.close()
    }

    /// The same participant against Janus's VideoRoom: a publisher joins and configures with our
    /// offer; a subscriber joins with every publisher feed of its room and answers Janus's offer.
    private func janusParticipant(
        room: String, index: Int, publishes: Bool, until end: ContinuousClock.Instant, onJoined: @escaping @Sendable () -> Void
    ) async throws {
        let janus = try await JanusClient.connect(url: options.url)
        defer { Task { await janus.close() } }
        let roomNumber = janusRooms.withLockedValue { rooms -> UInt64 in
            if let existing = rooms[room] { return existing }
            let made = UInt64(10_000 + rooms.count)
            rooms[room] = made
            return made
        }
        let handle = try await janus.attach()
        _ = try? await janus.request(handle: handle, [
            "request": "create", "room": roomNumber, "publishers": options.publishers + 1, "audiocodec": "opus", "videocodec": "vp8",
            "bitrate": max(options.videoBitrate, 128_000),
        ])
        let joinStarted = ContinuousClock.now
        let loop = group.next()
        if publishes {
            let joined = try await janus.request(handle: handle, ["request": "join", "ptype": "publisher", "room": roomNumber, "display": "pub-\(index)"])
            guard let feed = (JanusClient.plugin(joined)["id"] as? NSNumber)?.uint64Value else {
                throw JanusClient.JanusError(description: "join: \(joined)")
            }
            joinTimes.withLockedValue { $0.append(Self.milliseconds(ContinuousClock.now - joinStarted)) }
            onJoined()
            let frequency = 300.0 + 110.0 * Double(index)
            frequencies.withLockedValue { $0["\(feed)"] = frequency }
            let publisher = try await loop.submit { try PublisherConnection(loop: loop) }.get()
            try await publisher.start()
            let video = options.videoBitrate > 0
            let offer = try await loop.submit { publisher.makeOffer(video: video) }.get()
            let configured = try await janus.request(
                handle: handle, ["request": "configure", "audio": true, "video": video], jsep: ["type": "offer", "sdp": offer])
            guard let answer = (configured["jsep"] as? [String: Any])?["sdp"] as? String else {
                throw JanusClient.JanusError(description: "configure: \(configured)")
            }
            try await janus.trickleCompleted(handle: handle)
            try await loop.submit {
                try publisher.apply(answer: answer)
                let media = try publisher.startSyntheticMedia(frequency: frequency, videoBitrate: video ? self.options.videoBitrate : nil)
                media.tone.onSent = { [weak self] payload in self?.noteSent(payload) }
            }.get()
            // Janus offers a feed to subscribers once its PeerConnection is up (and media flows).
            while ContinuousClock.now < end, try await !loop.submit({ publisher.isConnected }).get() {
                try await Task.sleep(for: .milliseconds(20))
            }
            try await Task.sleep(for: .milliseconds(300))
            janusFeeds.withLockedValue { $0[room, default: []].append(feed) }
            try await Task.sleep(until: end, clock: .continuous)
            await publisher.close()
        } else {
            // Every publisher of the room first (they join at the front of the ramp).
            var feeds: [UInt64] = []
            while ContinuousClock.now < end {
                feeds = janusFeeds.withLockedValue { $0[room] ?? [] }
                if feeds.count >= options.publishers { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            let attached = try await janus.request(handle: handle, [
                "request": "join", "ptype": "subscriber", "room": roomNumber, "streams": feeds.map { ["feed": $0] },
            ])
            guard let offer = (attached["jsep"] as? [String: Any])?["sdp"] as? String else {
                throw JanusClient.JanusError(description: "subscribe: \(attached)")
            }
            joinTimes.withLockedValue { $0.append(Self.milliseconds(ContinuousClock.now - joinStarted)) }
            onJoined()
            var feedOfMid: [String: String] = [:]
            for stream in (JanusClient.plugin(attached)["streams"] as? [[String: Any]]) ?? [] {
                if let mid = stream["mid"] as? String, let feed = (stream["feed_id"] as? NSNumber)?.uint64Value { feedOfMid[mid] = "\(feed)" }
            }
            let subscriber = try await loop.submit { try SubscriberConnection(loop: loop) }.get()
            try await subscriber.start()
            let mids = feedOfMid
            let answer = try await loop.submit { [self] () -> String in
                subscriber.trackForMid = { mid in mids[mid].map { ($0, "\($0)-\(mid)") } }
                installStatistics(on: subscriber)
                return try subscriber.answer(offer: offer)
            }.get()
            _ = try await janus.request(handle: handle, ["request": "start"], jsep: ["type": "answer", "sdp": answer])
            try await janus.trickleCompleted(handle: handle)
            try await Task.sleep(until: end, clock: .continuous)
            await subscriber.close()
        }
    }

    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    /// Delay and payloads of everything a subscriber receives (its connection keeps the rest). On its loop.
    private func installStatistics(on subscriber: SubscriberConnection) {
        subscribers.withLockedValue { $0.append(subscriber) }
        var bySSRC: [UInt32: TrackStats] = [:]
        subscriber.onRTP = { [self] packet, header, track, _ in
            let stats: TrackStats
            if let existing = bySSRC[header.ssrc] {
                stats = existing
            } else {
                stats = TrackStats(subscriber: subscriber, ssrc: header.ssrc, publisherSid: track.participantSid, kind: track.kind)
                bySSRC[header.ssrc] = stats
                tracks.withLockedValue { $0.append(stats) }
            }
            tracks.withLockedValue { _ in stats.record(header, packet: packet, captureID: 4) { self.sentTime(of: $0) } }
        }
    }

    private func makeReport(elapsed: Duration) async -> Report {
        let bySubscriber = await receivedStatistics()
        let received = bySubscriber.values.flatMap { $0 }
        func statistics(of track: TrackStats) -> ReceivedTrackStatistics? {
            bySubscriber[ObjectIdentifier(track.subscriber)]?.first { $0.ssrc == track.ssrc }
        }
        let everything = tracks.withLockedValue { $0 }
        let all = everything.filter { $0.kind == "audio" }
        let videoBitrates = everything.filter { $0.kind == "video" }.compactMap(statistics(of:)).map { $0.averageBitrate / 1000 }
        let frequencies = self.frequencies.withLockedValue { $0 }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        var detected = 0
        for stats in all {
            let payloads = tracks.withLockedValue { _ in stats.lastPayloads }
            guard let frequency = frequencies[stats.publisherSid] else { continue }
            if ToneDetector.strength(ToneDetector.monoSamples(ofOpus: payloads), frequency: frequency) > 0.5 { detected += 1 }
        }
        let audio = all.compactMap(statistics(of:))
        let delays = all.flatMap { stats in tracks.withLockedValue { _ in stats.delaysMs } }
        let joins = joinTimes.withLockedValue { $0 }
        let errors = failures.withLockedValue { $0 }
        let identities = subscriberIdentities.withLockedValue { $0 }
        let receptions = everything.filter { $0.kind == "video" }.compactMap { track -> VideoReception? in
            guard let received = statistics(of: track) else { return nil }
            return VideoReception(
                subscriber: identities[ObjectIdentifier(track.subscriber)] ?? "", publisher: track.publisherSid, track: received.trackSid,
                frameWidth: received.frameWidth, frameHeight: received.frameHeight,
                keyframesByWidth: Dictionary(uniqueKeysWithValues: received.keyframesByWidth.map { (String($0.key), $0.value) }),
                bitrateKbps: received.averageBitrate / 1000)
        }.sorted { ($0.subscriber, $0.track) < ($1.subscriber, $1.track) }
        var widths: [String: Int] = [:]
        for reception in receptions { widths[reception.frameWidth.map(String.init) ?? "none", default: 0] += 1 }
        var sent: [SentTrackStatistics] = []
        for publisher in publishers.withLockedValue({ $0 }) {
            sent += (try? await publisher.loop.submit { publisher.statistics() }.get()) ?? []
        }
        return Report(
            rooms: options.rooms, publishers: options.publishers, subscribers: options.subscribers, durationSeconds: seconds,
            joinsOK: joins.count, joinsFailed: errors.count, joinMs: Self.percentiles(joins), mediaDelayMs: Self.percentiles(delays),
            packetsReceived: received.reduce(0) { $0 + $1.packetsReceived }, packetsLost: received.reduce(0) { $0 + max(0, $1.packetsLost) },
            lossPercent: Self.lossPercent(received),
            jitterMs: audio.isEmpty ? 0 : audio.reduce(0) { $0 + $1.jitterMilliseconds } / Double(audio.count),
            bitrateKbpsPerTrack: audio.isEmpty ? 0 : audio.reduce(0) { $0 + $1.averageBitrate / 1000 } / Double(audio.count),
            tracksReceived: all.count, tracksExpected: options.rooms * options.publishers * options.subscribers, tonesDetected: detected,
            videoTracksReceived: everything.count - all.count,
            videoBitrateKbpsPerTrack: videoBitrates.isEmpty ? 0 : videoBitrates.reduce(0, +) / Double(videoBitrates.count),
            chatDelayMs: Self.percentiles(chatDelays.withLockedValue { $0 }), videoWidths: widths, videoReceptions: receptions,
            // Feedback is per transport: counted once per publisher (its audio source).
            publisherTransportFeedback: sent.filter { $0.kind == "audio" }.reduce(0) { $0 + $1.transportFeedbackReceived },
            publisherRetransmissions: sent.reduce(0) { $0 + $1.retransmissions }, server: options.target == "janus" ? [:] : await serverFigures(),
            joinsByNode: joinsByNode.withLockedValue { $0 },
            errors: errors)
    }

    /// Figures from the servers' /metrics (when reachable without a token), summed over nodes.
    private func serverFigures() async -> [String: Double] {
        var figures: [String: Double] = [:]
        for node in [options.url] + options.alternateURLs {
            await addFigures(of: node, to: &figures)
        }
        return figures
    }

    private func addFigures(of node: String, to figures: inout [String: Double]) async {
        let base = node.replacingOccurrences(of: "ws://", with: "http://").replacingOccurrences(of: "wss://", with: "https://")
        guard let url = URL(string: base.replacingOccurrences(of: "/v1/rtc", with: "") + "/metrics"),
            let (data, _) = try? await URLSession.shared.data(from: url)
        else { return }
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            guard parts.count == 2, let value = Double(parts[1]) else { continue }
            let name = String(parts[0].split(separator: "{").first ?? "")
            if ["parley_media_forwarded_packets_total", "parley_media_srtp_failures_total", "parley_media_dropped_total",
                "parley_media_nacks_total", "parley_participants", "parley_media_transports_connected", "parley_media_repairs_total",
                "parley_media_transport_feedback_total", "parley_media_layer_switches_total"].contains(name)
            {
                figures[name, default: 0] += value
            }
        }
    }

    static func percentile(_ values: [Double], _ fraction: Double) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * fraction + 0.5))]
    }

    static func percentiles(_ values: [Double]) -> Report.Percentiles {
        Report.Percentiles(p50: percentile(values, 0.5), p95: percentile(values, 0.95), p99: percentile(values, 0.99), count: values.count)
    }
}

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Goertzel: how much of a mono signal's energy sits at one frequency (near 1 for a pure tone).
public enum ToneDetector {
    /// Decodes consecutive Opus payloads (48 kHz stereo) and keeps the left channel.
    public static func monoSamples(ofOpus payloads: [[UInt8]]) -> [Float] {
        guard let decoder = try? OpusDecoder() else { return [] }
        var pcm: [Float] = []
        for payload in payloads { decoder.decode(payload, into: &pcm) }
        return stride(from: 0, to: max(0, pcm.count - 1), by: 2).map { pcm[$0] }
    }

    public static func strength(_ samples: [Float], frequency: Double, sampleRate: Double = 48_000) -> Double {
        guard !samples.isEmpty else { return 0 }
        let coefficient = 2 * cos(2 * Double.pi * frequency / sampleRate)
        var (previous, beforePrevious) = (0.0, 0.0)
        for sample in samples {
            let current = Double(sample) + coefficient * previous - beforePrevious
            beforePrevious = previous
            previous = current
        }
        let power = previous * previous + beforePrevious * beforePrevious - coefficient * previous * beforePrevious
        let energy = samples.reduce(0.0) { $0 + Double($1) * Double($1) }
        return energy > 0 ? power / (energy * Double(samples.count) / 2) : 0
    }
}
