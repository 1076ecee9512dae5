import CParleyOpus

/// libopus, wrapped here and nowhere else: a decoder per mixed track and the mix's encoder.
/// 48 kHz stereo, float samples interleaved.
public final class OpusDecoder {
    private let decoder: OpaquePointer
    public static let channels = 2

    public init() throws(OpusError) {
        var error: Int32 = 0
        guard let made = opus_decoder_create(48_000, Int32(Self.channels), &error), error == OPUS_OK else { throw OpusError(code: error) }
        decoder = made
    }

    deinit { opus_decoder_destroy(decoder) }

    /// Decodes one packet into `samples` (appended); returns samples per channel, 0 when invalid.
    @discardableResult
    public func decode(_ packet: [UInt8], into samples: inout [Float]) -> Int {
        var pcm = [Float](repeating: 0, count: 5760 * Self.channels)
        let count = packet.withUnsafeBufferPointer { bytes in
            pcm.withUnsafeMutableBufferPointer { out in
                opus_decode_float(decoder, bytes.baseAddress, Int32(bytes.count), out.baseAddress!, 5760, 0)
            }
        }
        guard count > 0 else { return 0 }
        samples += pcm[0..<Int(count) * Self.channels]
        return Int(count)
    }

    /// Packet loss concealment for `frames` samples per channel (a multiple of 120).
    public func conceal(_ frames: Int, into samples: inout [Float]) {
        var pcm = [Float](repeating: 0, count: frames * Self.channels)
        let count = pcm.withUnsafeMutableBufferPointer { out in opus_decode_float(decoder, nil, 0, out.baseAddress!, Int32(frames), 0) }
        samples += count > 0 ? pcm[0..<Int(count) * Self.channels] : pcm[...]
    }
}

public final class OpusEncoder {
    private let encoder: OpaquePointer
    public static let frameSamples = 960

    public init() throws(OpusError) {
        var error: Int32 = 0
        guard let made = opus_encoder_create(48_000, Int32(OpusDecoder.channels), OPUS_APPLICATION_AUDIO, &error), error == OPUS_OK else {
            throw OpusError(code: error)
        }
        encoder = made
    }

    deinit { opus_encoder_destroy(encoder) }

    /// Encodes one 20 ms stereo frame (1,920 interleaved samples).
    public func encode(_ frame: ArraySlice<Float>) -> [UInt8] {
        precondition(frame.count == Self.frameSamples * OpusDecoder.channels, "an Opus frame here is 20 ms of stereo")
        var packet = [UInt8](repeating: 0, count: 1500)
        let length = frame.withUnsafeBufferPointer { pcm in
            packet.withUnsafeMutableBufferPointer { out in
                opus_encode_float(encoder, pcm.baseAddress!, Int32(Self.frameSamples), out.baseAddress!, Int32(out.count))
            }
        }
        return length > 0 ? Array(packet[0..<Int(length)]) : [0xF8]
    }
}

public struct OpusError: Error, Sendable, CustomStringConvertible {
    public let code: Int32
    public var description: String { String(cString: opus_strerror(code)) }
}
