import Foundation
@testable import ParleyTools
import Testing

/// The synthetic camera's VP8: the bool encoder against an RFC 6386 section 7.3 decoder, whole
/// frames against ffmpeg's own VP8 decoder and libvpx, and frame sizes against the bitrate.
@Suite struct SyntheticVP8Tests {
    static let ffmpeg = "/usr/bin/ffmpeg"
    static let ffprobe = "/usr/bin/ffprobe"

    @Test func boolEncoderRoundTripsThroughTheSpecDecoder() {
        var random = SplitMix64(seed: 7)
        // Skewed probabilities with bits against them make long runs of 0xFF and carries through them.
        let writes: [(bit: Bool, probability: UInt8)] = (0..<20_000).map { index in
            let probability = UInt8(truncatingIfNeeded: index % 3 == 0 ? 255 : index % 3 == 1 ? 1 : Int(random.next() % 255) + 1)
            return (random.next() % 4 == 0, probability)
        }
        var encoder = VP8BoolEncoder()
        for write in writes { encoder.write(write.bit, probability: write.probability) }
        encoder.writeLiteral(0x5A5, bits: 12)
        var decoder = SpecBoolDecoder(encoder.finish())
        let read = writes.map { decoder.read(probability: $0.probability) }
        #expect(read == writes.map(\.bit))
        #expect(decoder.readLiteral(bits: 12) == 0x5A5)
    }

    /// 30 frames (keyframes first and at frame 20) in an IVF file: ffmpeg's decoder and libvpx both
    /// decode every one without a word at warning level, at the written size, to exactly the gray
    /// picture with the colored square where the camera says it drew it (40 x 24 has no room for it).
    /// Decoders do not notice a desynchronized bitstream, so the pixels are what proves it right.
    @Test(
        .enabled(
            if: FileManager.default.isExecutableFile(atPath: "/usr/bin/ffmpeg") && FileManager.default.isExecutableFile(atPath: "/usr/bin/ffprobe"),
            "needs ffmpeg and ffprobe in /usr/bin"),
        arguments: zip([320, 200, 40], [240, 120, 24]))
    func framesDecodeToTheMovingSquare(width: Int, height: Int) throws {
        var camera = SyntheticVP8Camera(width: width, height: height, bitrate: 300_000, fps: 15)
        var frames: [[UInt8]] = []
        var squares: [(row: Int, column: Int)?] = []
        for index in 0..<30 {
            let frame = camera.nextFrame(keyframe: index == 20)
            #expect(frame.isKeyframe == (index == 0 || index == 20))
            #expect(frame.bytes[0] & 1 == (frame.isKeyframe ? 0 : 1))
            frames.append(frame.bytes)
            squares.append(camera.squareMacroblock)
        }
        if width >= 64 && height >= 64 {
            #expect(Set(squares.compactMap { $0.map { $0.row * 1000 + $0.column } }).count == 30, "the square moves every frame")
        } else {
            #expect(squares.allSatisfy { $0 == nil })
        }

        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("parley-vp8-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let ivf = directory.appendingPathComponent("camera.ivf")
        try Data(Self.ivf(frames: frames, width: width, height: height, fps: 15)).write(to: ivf)

        let probe = try Self.run(Self.ffprobe, [
            "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=codec_name,width,height,nb_read_frames",
            "-of", "json", ivf.path,
        ], in: directory)
        #expect(probe.status == 0 && probe.stderr.isEmpty, "\(probe.stderr)")
        let streams = try #require(try JSONSerialization.jsonObject(with: probe.stdout) as? [String: Any])["streams"] as? [[String: Any]]
        let stream = try #require(streams?.first)
        #expect(stream["codec_name"] as? String == "vp8")
        #expect(stream["width"] as? Int == width && stream["height"] as? Int == height, "\(stream)")
        #expect(stream["nb_read_frames"] as? String == "30", "\(stream)")

        for decoder in ["vp8", "libvpx"] {
            let null = try Self.run(Self.ffmpeg, ["-v", "warning", "-c:v", decoder, "-i", ivf.path, "-f", "null", "-"], in: directory)
            #expect(null.status == 0 && null.stderr.isEmpty, "\(decoder): \(null.stderr)")

            let raw = directory.appendingPathComponent("\(decoder).yuv")
            let decoded = try Self.run(
                Self.ffmpeg, ["-v", "warning", "-c:v", decoder, "-i", ivf.path, "-f", "rawvideo", "-pix_fmt", "yuv420p", raw.path], in: directory)
            #expect(decoded.status == 0 && decoded.stderr.isEmpty, "\(decoder): \(decoded.stderr)")
            let pixels = [UInt8](try Data(contentsOf: raw))
            let chromaWidth = (width + 1) / 2
            let chromaHeight = (height + 1) / 2
            let frameBytes = width * height + 2 * chromaWidth * chromaHeight
            #expect(pixels.count == 30 * frameBytes, "\(decoder): \(pixels.count) bytes")
            guard pixels.count == 30 * frameBytes else { continue }
            for (index, square) in squares.enumerated() {
                let frame = pixels[(index * frameBytes)..<((index + 1) * frameBytes)]
                let wrong = Self.wrongPixels(frame, width: width, height: height, square: square)
                #expect(wrong.isEmpty, "\(decoder) frame \(index), square at \(String(describing: square)): \(wrong.prefix(5))")
            }
        }
    }

    @Test(arguments: [100_000, 500_000, 2_000_000])
    func frameSizesTrackTheBitrate(bitrate: Int) {
        let fps = 15
        var camera = SyntheticVP8Camera(bitrate: bitrate, fps: fps)
        var bytes = 0
        for index in 0..<(fps * 10) {
            let frame = camera.nextFrame(keyframe: false)
            let share = bitrate / 8 / fps
            #expect(frame.bytes.count == (index == 0 ? 4 * share : share), "frame \(index)")
            bytes += frame.bytes.count
        }
        // Ten seconds with one keyframe (four shares) come within 3 % of the bitrate.
        let measured = Double(bytes * 8) / 10
        #expect(abs(measured / Double(bitrate) - 1) < 0.03, "\(measured) bit/s for \(bitrate)")
    }

    /// Below the smallest frame the bitstream needs, frames keep their full size rather than being cut.
    @Test func framesAreNeverCutBelowTheirBitstream() {
        var camera = SyntheticVP8Camera(width: 1280, height: 720, bitrate: 8_000, fps: 30)
        let keyframe = camera.nextFrame(keyframe: false)
        let interframe = camera.nextFrame(keyframe: false)
        #expect(keyframe.bytes.count > camera.targetSize(keyframe: true))
        let firstPartition = (Int(interframe.bytes[0]) | Int(interframe.bytes[1]) << 8 | Int(interframe.bytes[2]) << 16) >> 5
        #expect(interframe.bytes.count >= 3 + firstPartition)
    }

    // MARK: Helpers

    /// Pixels of one decoded yuv420p frame that are neither the square's color inside its
    /// macroblock nor the background's outside it, as (plane, x, y, value).
    static func wrongPixels(_ frame: ArraySlice<UInt8>, width: Int, height: Int, square: (row: Int, column: Int)?) -> [(String, Int, Int, UInt8)] {
        var wrong: [(String, Int, Int, UInt8)] = []
        let chromaWidth = (width + 1) / 2
        let chromaHeight = (height + 1) / 2
        let planes: [(String, Int, Int, Int, Int, KeyPath<SyntheticVP8Camera.Color, UInt8>)] = [
            ("Y", 0, width, height, 16, \.y),
            ("U", width * height, chromaWidth, chromaHeight, 8, \.u),
            ("V", width * height + chromaWidth * chromaHeight, chromaWidth, chromaHeight, 8, \.v),
        ]
        for (name, offset, planeWidth, planeHeight, macroblockSize, component) in planes {
            for y in 0..<planeHeight {
                for x in 0..<planeWidth {
                    let inside = square.map { y / macroblockSize == $0.row && x / macroblockSize == $0.column } ?? false
                    let expected = (inside ? SyntheticVP8Camera.squareColor : SyntheticVP8Camera.background)[keyPath: component]
                    let value = frame[frame.startIndex + offset + y * planeWidth + x]
                    if value != expected { wrong.append((name, x, y, value)) }
                }
            }
        }
        return wrong
    }

    /// An IVF file: a 32-byte "DKIF" header, then each frame behind a 12-byte size and timestamp.
    static func ivf(frames: [[UInt8]], width: Int, height: Int, fps: Int) -> [UInt8] {
        func le(_ value: Int, _ bytes: Int) -> [UInt8] { (0..<bytes).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
        var file = Array("DKIF".utf8) + le(0, 2) + le(32, 2) + Array("VP80".utf8) + le(width, 2) + le(height, 2)
        file += le(fps, 4) + le(1, 4) + le(frames.count, 4) + le(0, 4)
        for (index, frame) in frames.enumerated() { file += le(frame.count, 4) + le(index, 8) + frame }
        return file
    }

    struct Run {
        var status: Int32
        var stdout: Data
        var stderr: String
    }

    /// Runs a tool with its output in files, so a chatty one cannot fill a pipe and stall.
    static func run(_ executable: String, _ arguments: [String], in directory: URL) throws -> Run {
        let stdoutURL = directory.appendingPathComponent("stdout-\(UUID().uuidString)")
        let stderrURL = directory.appendingPathComponent("stderr-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: stdoutURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrURL.path, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: stdoutURL)
        process.standardError = try FileHandle(forWritingTo: stderrURL)
        try process.run()
        process.waitUntilExit()
        return Run(
            status: process.terminationStatus, stdout: try Data(contentsOf: stdoutURL),
            stderr: String(decoding: try Data(contentsOf: stderrURL), as: UTF8.self))
    }
}

/// The bool decoder of RFC 6386 section 7.3, written from the spec for these tests.
private struct SpecBoolDecoder {
    private let input: [UInt8]
    private var position = 2
    private var value: UInt32
    private var range: UInt32 = 255
    private var bitCount = 0

    init(_ input: [UInt8]) {
        self.input = input
        value = UInt32(input.count > 0 ? input[0] : 0) << 8 | UInt32(input.count > 1 ? input[1] : 0)
    }

    mutating func read(probability: UInt8) -> Bool {
        let split = 1 + (((range - 1) * UInt32(probability)) >> 8)
        let bigSplit = split << 8
        let bit: Bool
        if value >= bigSplit {
            bit = true
            range -= split
            value -= bigSplit
        } else {
            bit = false
            range = split
        }
        while range < 128 {
            value <<= 1
            range <<= 1
            bitCount += 1
            if bitCount == 8 {
                bitCount = 0
                if position < input.count { value |= UInt32(input[position]) }
                position += 1
            }
        }
        return bit
    }

    mutating func readLiteral(bits: Int) -> Int {
        (0..<bits).reduce(0) { value, _ in value << 1 | (read(probability: 128) ? 1 : 0) }
    }
}

/// A seeded generator, so a failing run repeats.
private struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }
}
