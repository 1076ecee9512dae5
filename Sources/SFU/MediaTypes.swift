#if canImport(Glibc)
import Glibc
#endif
import RTP

public enum MediaKind: String, Sendable, Equatable, Codable {
    case audio, video
}

/// A codec as one side negotiated it: the payload type is that side's number.
public struct RTPCodec: Sendable, Equatable {
    public var payloadType: UInt8
    public var name: String
    public var clockRate: UInt32
    public var channels: Int?
    public var fmtp: String

    public init(payloadType: UInt8, name: String, clockRate: UInt32, channels: Int? = nil, fmtp: String = "") {
        self.payloadType = payloadType
        self.name = name
        self.clockRate = clockRate
        self.channels = channels
        self.fmtp = fmtp
    }

    /// Same codec on both sides (payload type aside): name and clock rate, and for H.264 the
    /// packetization mode and profile.
    public func matches(_ other: RTPCodec) -> Bool {
        guard name.lowercased() == other.name.lowercased(), clockRate == other.clockRate else { return false }
        guard name.lowercased() == "h264" else { return true }
        return h264Parameter("packetization-mode") == other.h264Parameter("packetization-mode")
            && h264Parameter("profile-level-id").prefix(4).lowercased() == other.h264Parameter("profile-level-id").prefix(4).lowercased()
    }

    private func h264Parameter(_ name: String) -> Substring {
        for pair in fmtp.split(separator: ";") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2, parts[0].drop(while: { $0 == " " }) == name { return parts[1] }
        }
        return name == "packetization-mode" ? "0" : ""
    }
}

/// Header extension ids one side negotiated (0 when not negotiated).
public struct RTPExtensionIDs: Sendable, Equatable {
    public var mid: UInt8 = 0
    public var audioLevel: UInt8 = 0
    public var absSendTime: UInt8 = 0
    public var transportCC: UInt8 = 0
    public var absCaptureTime: UInt8 = 0
    /// Simulcast: which layer (rid) a packet belongs to, and which an RTX packet repairs.
    public var rid: UInt8 = 0
    public var repairedRID: UInt8 = 0

    public init(
        mid: UInt8 = 0, audioLevel: UInt8 = 0, absSendTime: UInt8 = 0, transportCC: UInt8 = 0, absCaptureTime: UInt8 = 0, rid: UInt8 = 0,
        repairedRID: UInt8 = 0
    ) {
        self.rid = rid
        self.repairedRID = repairedRID
        self.absCaptureTime = absCaptureTime
        self.mid = mid
        self.audioLevel = audioLevel
        self.absSendTime = absSendTime
        self.transportCC = transportCC
    }

    /// Publisher ids → subscriber ids for the extensions an SFU forwards unchanged. mid, rid and
    /// repaired rid name the publisher's streams (the subscriber knows its SSRCs from the SDP);
    /// abs-send-time and transport-cc are hop-by-hop, written fresh by the down-track.
    public func forwardingMap(to subscriber: RTPExtensionIDs) -> ExtensionIDMap {
        var map = ExtensionIDMap()
        if audioLevel != 0, subscriber.audioLevel != 0 { map[audioLevel] = subscriber.audioLevel }
        if absCaptureTime != 0, subscriber.absCaptureTime != 0 { map[absCaptureTime] = subscriber.absCaptureTime }
        return map
    }
}

/// Tunables of the forwarding core, from `rtc.*`.
public struct SFUConfiguration: Sendable {
    public var maxBitrate: UInt64
    public var pliIntervalNanoseconds: UInt64
    public var packetHistory: Int
    public var speakersIntervalNanoseconds: UInt64
    public var consentTimeoutNanoseconds: UInt64
    public var reportIntervalNanoseconds: UInt64 = 1_000_000_000
    public var nackRetryNanoseconds: Int64 = 30_000_000
    /// How often publishers get transport-wide feedback (Chromium's receivers send it every 50-100 ms).
    public var uplinkFeedbackIntervalNanoseconds: UInt64 = 50_000_000
    /// How often each subscriber's layers are chosen again from its estimate.
    public var allocationIntervalNanoseconds: UInt64 = 200_000_000
    /// A layer no subscriber needed for this long is turned off at the publisher (dynacast).
    public var layerIdleNanoseconds: UInt64 = 3_000_000_000
    /// The first estimate of a subscriber's downlink, before its feedback says more.
    public var initialSubscriberBitrate = 1_000_000
    public var minSubscriberBitrate = 100_000
    public var maxSubscriberBitrate = 10_000_000
    /// Wall clock for sender reports (NTP time), injected for tests.
    public var wallClockNanoseconds: @Sendable () -> Int64

    public init(
        maxBitrate: UInt64 = 2_500_000, pliIntervalNanoseconds: UInt64 = 500_000_000, packetHistory: Int = 512,
        speakersIntervalNanoseconds: UInt64 = 300_000_000, consentTimeoutNanoseconds: UInt64 = 30_000_000_000,
        wallClockNanoseconds: @escaping @Sendable () -> Int64 = SFUConfiguration.systemWallClock
    ) {
        self.maxBitrate = maxBitrate
        self.pliIntervalNanoseconds = pliIntervalNanoseconds
        self.packetHistory = packetHistory
        self.speakersIntervalNanoseconds = speakersIntervalNanoseconds
        self.consentTimeoutNanoseconds = consentTimeoutNanoseconds
        self.wallClockNanoseconds = wallClockNanoseconds
    }

    @Sendable public static func systemWallClock() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
    }
}
