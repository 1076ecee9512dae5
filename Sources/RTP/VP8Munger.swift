/// Per-down-track VP8 rewriting, so the subscriber sees one continuous VP8 stream while the SFU
/// drops temporal layers and switches between simulcast layers behind it. Sequence numbers and
/// timestamps are `SequenceRewriter`'s job; this type handles what is inside the payload
/// descriptor (RFC 7741): picture ID, TL0PICIDX, KEYIDX, and which frames to forward.
///
/// Rules:
/// - A frame is the set of packets sharing a picture ID. Forward/drop is decided once per frame,
///   at its first packet to arrive, and every later packet of it follows that decision.
/// - Temporal filtering: frames above the forwarded temporal layer are dropped. A lower
///   `maxTemporalLayer` takes effect at the next frame; a higher one only at a frame the higher
///   layers can be decoded from: a TID 0 frame or a keyframe (up to the maximum), or a layer-sync
///   (Y) frame (up to its own layer).
/// - Outgoing picture ID = incoming + an offset that shrinks by one for every dropped frame and is
///   re-based at every source switch, so forwarded frames count up by one with no gap; frames lost
///   upstream still leave a gap, so the decoder knows a reference may be missing. The field keeps
///   the sender's width, and is written modulo 128 when that width is 7 bits.
/// - TL0PICIDX and KEYIDX keep the offset they got at the start of the source (temporal
///   filtering never drops TL0 frames or keyframes), re-based at a switch so they continue.
/// - Late packets: a packet of a frame already decided follows that frame (same outgoing picture
///   ID, or dropped); the last `recentFrameCapacity` frames are remembered. A frame whose first
///   packet arrives late (lost upstream, then retransmitted) is forwarded with the offset in force
///   where it falls, if its layer is forwarded. Anything older, or from before the latest switch,
///   is dropped.
/// - After `init` or `switchSource()`, packets are dropped until a keyframe starts the source.
///
/// Without picture IDs (an I bit never set) frames cannot be told apart by ID: the layer limit
/// then changes only at packets that start a frame, packets are filtered by their own TID, and
/// no picture ID is written.
///
/// Fixed-size state, no allocation and no clock: call it for every VP8 packet of the forwarded
/// source, on the copy about to be sent.
public struct VP8Munger: Sendable {
    public enum DropReason: Hashable, Sendable {
        /// The frame is above the forwarded temporal layer (or the packet belongs to a frame
        /// dropped for that reason).
        case temporalLayer
        /// Nothing is decodable until a keyframe starts the source; the SFU should ask for one.
        case waitingForKeyframe
        /// From before the current source started, or too old to place among the recent frames.
        case stale
        /// The descriptor's offsets lie outside the payload it was said to describe.
        case malformed
    }

    public enum Decision: Hashable, Sendable {
        /// Send it: the descriptor fields were rewritten in place.
        case forward
        /// Do not send it; the SFU should let `SequenceRewriter.skip` close the sequence gap.
        case drop(DropReason)
    }

    /// How many recent frames' decisions and offsets are kept for late packets.
    public static let recentFrameCapacity = RecentFrames.capacity

    public private(set) var isWaitingForKeyframe = true
    /// The highest temporal layer now forwarded; moves towards the requested maximum at safe frames.
    public private(set) var forwardedTemporalLayer: UInt8 = 0
    /// The unwrapped picture ID last given to a new forwarded frame (nil before the first);
    /// the field carries it modulo 128 or 32768.
    public private(set) var lastOutgoingPictureID: Int64?

    /// Newest incoming picture ID of the current source, unwrapped.
    private var newestIncomingPictureID: Int64 = 0
    /// The keyframe the current source started at: anything older is from before the switch.
    private var sourceStartPictureID: Int64 = 0
    /// Outgoing minus incoming picture ID for the next new frame.
    private var pictureIDOffset: Int64 = 0
    private var recentFrames = RecentFrames()
    private var tl0PictureIndex = WrappingIndex(mask: 0xFF)
    private var keyIndex = WrappingIndex(mask: 0x1F)

    public init() {}

    /// The next frame comes from another simulcast layer (another picture ID, TL0PICIDX and
    /// KEYIDX space) and must be a keyframe; the outgoing numbering continues from this one's.
    /// Call it together with `SequenceRewriter.resync()`.
    public mutating func switchSource() { isWaitingForKeyframe = true }

    /// Decides whether to send one packet and, if so, rewrites the picture ID, TL0PICIDX and
    /// KEYIDX in `payload` (the RTP payload `descriptor` was parsed from, in the copy being sent).
    /// `maxTemporalLayer` is the highest TID the subscriber should get (`UInt8.max`: all).
    public mutating func process(
        descriptor: VP8PayloadDescriptor, payload: UnsafeMutableRawBufferPointer, maxTemporalLayer: UInt8
    ) -> Decision {
        guard Self.offsetsFit(descriptor, in: payload.count) else { return .drop(.malformed) }
        guard let pictureID = descriptor.pictureID, let width = descriptor.pictureIDWidth else {
            return processWithoutPictureID(descriptor, payload, maxTemporalLayer)
        }
        if isWaitingForKeyframe {
            guard descriptor.isKeyframe else { return .drop(.waitingForKeyframe) }
            let start = startSource(pictureID: pictureID)
            return processNewFrame(start, descriptor, payload, maxTemporalLayer)
        }
        let incoming = unwrap(pictureID, width)
        if incoming > newestIncomingPictureID {
            return processNewFrame(incoming, descriptor, payload, maxTemporalLayer)
        }
        if let frame = recentFrames.frame(incoming) {
            guard frame.isForwarded else { return .drop(.temporalLayer) }
            rewrite(descriptor, payload, outgoingPictureID: incoming + frame.offsetAfter, isNewest: false)
            return .forward
        }
        let isWithinRecentFrames = newestIncomingPictureID - incoming < Int64(RecentFrames.capacity)
        if descriptor.isKeyframe, !isWithinRecentFrames {
            // Too far back to be a late packet of this source: the sender restarted its numbering
            // (or lost so much that 7-bit IDs wrapped), and a keyframe is a clean place to resume.
            let start = startSource(pictureID: pictureID)
            return processNewFrame(start, descriptor, payload, maxTemporalLayer)
        }
        guard incoming >= sourceStartPictureID, isWithinRecentFrames,
            let offset = recentFrames.offset(forUnseen: incoming, notBefore: max(sourceStartPictureID, newestIncomingPictureID - Int64(RecentFrames.capacity)))
        else { return .drop(.stale) }
        return processLateFrame(incoming, offset: offset, descriptor, payload)
    }

    // MARK: - Frames

    private mutating func processNewFrame(
        _ incoming: Int64, _ descriptor: VP8PayloadDescriptor, _ payload: UnsafeMutableRawBufferPointer, _ maxTemporalLayer: UInt8
    ) -> Decision {
        newestIncomingPictureID = incoming
        updateForwardedLayer(at: descriptor, maxTemporalLayer: maxTemporalLayer)
        guard isForwarded(descriptor) else {
            pictureIDOffset -= 1  // the next frame takes this one's outgoing number
            recentFrames.record(incoming, offsetAfter: pictureIDOffset, isForwarded: false)
            return .drop(.temporalLayer)
        }
        recentFrames.record(incoming, offsetAfter: pictureIDOffset, isForwarded: true)
        let outgoing = incoming + pictureIDOffset
        lastOutgoingPictureID = outgoing
        rewrite(descriptor, payload, outgoingPictureID: outgoing, isNewest: true)
        return .forward
    }

    /// A frame older than the newest whose first packet comes only now: its outgoing number was
    /// left free, so it can still go out; dropping it leaves that gap (later frames are out).
    private mutating func processLateFrame(
        _ incoming: Int64, offset: Int64, _ descriptor: VP8PayloadDescriptor, _ payload: UnsafeMutableRawBufferPointer
    ) -> Decision {
        let forward = isForwarded(descriptor)
        recentFrames.record(incoming, offsetAfter: offset, isForwarded: forward)
        guard forward else { return .drop(.temporalLayer) }
        rewrite(descriptor, payload, outgoingPictureID: incoming + offset, isNewest: false)
        return .forward
    }

    private mutating func processWithoutPictureID(
        _ descriptor: VP8PayloadDescriptor, _ payload: UnsafeMutableRawBufferPointer, _ maxTemporalLayer: UInt8
    ) -> Decision {
        if isWaitingForKeyframe {
            guard descriptor.isKeyframe else { return .drop(.waitingForKeyframe) }
            isWaitingForKeyframe = false
            tl0PictureIndex.restart()
            keyIndex.restart()
        }
        if descriptor.isStartOfFrame { updateForwardedLayer(at: descriptor, maxTemporalLayer: maxTemporalLayer) }
        guard isForwarded(descriptor) else { return .drop(.temporalLayer) }
        rewrite(descriptor, payload, outgoingPictureID: nil, isNewest: true)
        return .forward
    }

    /// Re-bases the numbering on a keyframe (the first of a source); returns its unwrapped ID.
    private mutating func startSource(pictureID: UInt16) -> Int64 {
        isWaitingForKeyframe = false
        let start = Int64(pictureID & 0x7FFF)
        sourceStartPictureID = start
        pictureIDOffset = lastOutgoingPictureID.map { $0 + 1 - start } ?? 0
        recentFrames.removeAll()
        tl0PictureIndex.restart()
        keyIndex.restart()
        return start
    }

    // MARK: - Temporal layers

    private mutating func updateForwardedLayer(at descriptor: VP8PayloadDescriptor, maxTemporalLayer: UInt8) {
        let layer = descriptor.temporalLayer ?? 0
        if maxTemporalLayer < forwardedTemporalLayer {
            forwardedTemporalLayer = maxTemporalLayer
        } else if maxTemporalLayer > forwardedTemporalLayer {
            if layer == 0 || descriptor.isKeyframe {
                forwardedTemporalLayer = maxTemporalLayer
            } else if descriptor.temporalLayer != nil, descriptor.isLayerSync, layer > forwardedTemporalLayer, layer <= maxTemporalLayer {
                forwardedTemporalLayer = layer
            }
        }
    }

    /// Keyframes always go: without them nothing after is decodable.
    private func isForwarded(_ descriptor: VP8PayloadDescriptor) -> Bool {
        descriptor.isKeyframe || (descriptor.temporalLayer ?? 0) <= forwardedTemporalLayer
    }

    // MARK: - Rewriting

    private mutating func rewrite(
        _ descriptor: VP8PayloadDescriptor, _ payload: UnsafeMutableRawBufferPointer, outgoingPictureID: Int64?, isNewest: Bool
    ) {
        if let outgoingPictureID, let offset = descriptor.pictureIDOffset {
            switch descriptor.pictureIDWidth {
            case .sevenBits:
                payload[offset] = UInt8(truncatingIfNeeded: outgoingPictureID) & 0x7F
            case .fifteenBits:
                payload[offset] = 0x80 | UInt8(truncatingIfNeeded: outgoingPictureID >> 8) & 0x7F
                payload[offset + 1] = UInt8(truncatingIfNeeded: outgoingPictureID)
            case nil:
                break
            }
        }
        if let offset = descriptor.tl0PictureIndexOffset, let incoming = descriptor.tl0PictureIndex {
            // A TID 0 frame is a new TL0 frame: the first one of a source follows the last sent.
            let startsTL0Frame = (descriptor.temporalLayer ?? 0) == 0
            payload[offset] = tl0PictureIndex.map(incoming, followsLast: startsTL0Frame, isNewest: isNewest)
        }
        if let offset = descriptor.temporalKeyIndexOffset, let incoming = descriptor.keyIndex {
            let outgoing = keyIndex.map(incoming, followsLast: descriptor.isKeyframe, isNewest: isNewest)
            payload[offset] = payload[offset] & 0xE0 | outgoing
        }
    }

    private static func offsetsFit(_ descriptor: VP8PayloadDescriptor, in count: Int) -> Bool {
        let pictureIDBytes = descriptor.pictureIDWidth == .fifteenBits ? 2 : 1
        let fits = { (offset: Int?, size: Int) in offset.map { $0 >= 0 && $0 + size <= count } ?? true }
        return descriptor.length <= count && fits(descriptor.pictureIDOffset, pictureIDBytes)
            && fits(descriptor.tl0PictureIndexOffset, 1) && fits(descriptor.temporalKeyIndexOffset, 1)
    }

    /// Nearest unwrapping of a 7- or 15-bit picture ID to the newest one.
    private func unwrap(_ pictureID: UInt16, _ width: VP8PayloadDescriptor.PictureIDWidth) -> Int64 {
        let modulus = Int64(width.modulus)
        var delta = (Int64(pictureID) - newestIncomingPictureID) & (modulus - 1)
        if delta >= modulus / 2 { delta -= modulus }
        return newestIncomingPictureID + delta
    }
}

/// A small wrapping index of the descriptor (TL0PICIDX, KEYIDX): each source keeps its own
/// spacing; at the start of a source the offset is chosen so the numbering goes on from the last
/// value sent (plus one when the first frame starts a new index).
struct WrappingIndex: Sendable {
    let mask: UInt8
    private var offset: UInt8 = 0
    private var isAnchored = false
    private var lastOutgoing: UInt8?

    init(mask: UInt8) { self.mask = mask }

    mutating func restart() { isAnchored = false }

    mutating func map(_ incoming: UInt8, followsLast: Bool, isNewest: Bool) -> UInt8 {
        if !isAnchored {
            // The first source passes through unchanged.
            offset = lastOutgoing.map { $0 &+ (followsLast ? 1 : 0) &- incoming } ?? 0
            isAnchored = true
        }
        let outgoing = (incoming &+ offset) & mask
        if isNewest { lastOutgoing = outgoing }
        return outgoing
    }
}

/// Decisions for the last `capacity` frames, by unwrapped picture ID, in fixed storage: whether
/// the frame went out and the picture ID offset in force after it.
struct RecentFrames: Sendable {
    static let capacity = 32
    private static let empty = Int64.min
    private var pictureIDs = SIMD32<Int64>(repeating: empty)
    private var offsetsAfter = SIMD32<Int64>(repeating: 0)
    private var forwarded: UInt32 = 0

    mutating func removeAll() {
        pictureIDs = SIMD32(repeating: Self.empty)
        forwarded = 0
    }

    mutating func record(_ pictureID: Int64, offsetAfter: Int64, isForwarded: Bool) {
        let slot = Self.slot(pictureID)
        pictureIDs[slot] = pictureID
        offsetsAfter[slot] = offsetAfter
        if isForwarded { forwarded |= 1 << UInt32(slot) } else { forwarded &= ~(1 << UInt32(slot)) }
    }

    func frame(_ pictureID: Int64) -> (offsetAfter: Int64, isForwarded: Bool)? {
        let slot = Self.slot(pictureID)
        guard pictureIDs[slot] == pictureID else { return nil }
        return (offsetsAfter[slot], forwarded & (1 << UInt32(slot)) != 0)
    }

    /// The offset for a frame never seen: the one in force after the nearest older recorded
    /// frame, searching no further back than `lowerBound`; nil when there is none.
    func offset(forUnseen pictureID: Int64, notBefore lowerBound: Int64) -> Int64? {
        var older = pictureID - 1
        while older >= lowerBound, pictureID - older < Int64(Self.capacity) {
            if let frame = frame(older) { return frame.offsetAfter }
            older -= 1
        }
        return nil
    }

    private static func slot(_ pictureID: Int64) -> Int { Int(pictureID & Int64(capacity - 1)) }
}
