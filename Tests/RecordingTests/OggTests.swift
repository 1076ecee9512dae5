import Foundation
import Testing
@testable import Recording

@Suite struct OggTests {
    /// The CRC of a page as libogg computes it (polynomial 0x04C11DB7, unreflected).
    @Test func crcMatchesTheOggPolynomial() {
        #expect(OggCRC.checksum(Array("123456789".utf8)) == 0x89A1_897F)
        #expect(OggCRC.checksum([]) == 0)
    }

    @Test func pagesRoundTripAndLacePacketsOf255Bytes() throws {
        var pager = OggStreamPager(serial: 0x1234)
        var pages = pager.append([UInt8](repeating: 1, count: 255), granulePosition: 960)
        pages += pager.append([UInt8](repeating: 2, count: 10), granulePosition: 1920)
        let last = pager.flush(endOfStream: true)
        pages.append(try #require(last))
        #expect(pages.count == 1)
        let page = pages[0]
        #expect(page.segments == [255, 0, 10])
        #expect(page.granulePosition == 1920)
        #expect(page.flags == [.beginningOfStream, .endOfStream])
        let bytes = page.bytes
        let parsed = try #require(OggPage.parse(bytes[...]))
        #expect(parsed.page == page)
        #expect(parsed.length == bytes.count)
        #expect(page.packetLengths == [255, 10])
        var corrupted = bytes
        corrupted[30] ^= 1
        #expect(OggPage.parse(corrupted[...]) == nil)
    }

    @Test func aLongPacketContinuesOnTheNextPage() throws {
        var pager = OggStreamPager(serial: 1)
        let pages = pager.append([UInt8](repeating: 7, count: 255 * 255 + 100), granulePosition: 42)
        #expect(pages.count == 1)
        #expect(pages[0].granulePosition == -1)  // no packet ends on the first page
        let flushed = pager.flush()
        let last = try #require(flushed)
        #expect(last.flags.contains(.continued))
        #expect(last.granulePosition == 42)
        #expect(last.segments == [100])
    }

    @Test func opusDurationsComeFromTheTOC() {
        #expect(opusPacketSamples([0xF8, 0xFF, 0xFE]) == 960)  // CELT FB 20 ms, one frame
        #expect(opusPacketSamples([0xFC, 1, 2]) == 960)  // stereo, one frame
        #expect(opusPacketSamples([0xFD, 1, 2]) == 1920)  // code 1: two 20 ms frames
        #expect(opusPacketSamples([0x78, 1]) == 960)  // SILK WB 20 ms
        #expect(opusPacketSamples([0x0B, 0x03]) == 3 * 960)  // SILK NB 20 ms, code 3, three frames
        #expect(opusPacketSamples([0x1B, 0x02]) == 2 * 2880)  // two 60 ms frames
        #expect(opusPacketSamples([0x0B, 0x00]) == nil)  // code 3 with no frames
        #expect(opusPacketSamples([0x1B, 0x03]) == nil)  // more than 120 ms
        #expect(opusPacketSamples([UInt8]()) == nil)
    }

    @Test func oggOpusHeadersFollowRFC7845() throws {
        let head = OggOpusHeaders.head(channels: 2, preSkip: 312)
        #expect(head.count == 19)
        #expect(Array(head[0..<8]) == Array("OpusHead".utf8))
        #expect(head[8] == 1 && head[9] == 2 && head[10] == 0x38 && head[11] == 0x01)
        var writer = OggOpusWriter(serial: 9)
        let headers = writer.headerPages()
        #expect(headers.count == 2)
        #expect(headers[0].flags == .beginningOfStream && headers[0].granulePosition == 0)
        #expect(headers[1].granulePosition == 0 && headers[1].sequence == 1)
        _ = writer.append([0xF8, 0xFF, 0xFE])
        _ = writer.append([0xF8, 0xFF, 0xFE])
        let finished = writer.finish()
        let page = try #require(finished)
        #expect(page.granulePosition == Int64(312 + 1920))
        #expect(page.flags == .endOfStream)
        #expect(writer.samplesWritten == 1920)
    }
}

@Suite struct JitterBufferTests {
    @Test func reordersAndReleasesInOrder() {
        var buffer = JitterBuffer<Int>(maxWaitNanoseconds: 100)
        for sequence: UInt16 in [10, 12, 11, 13] { buffer.insert(sequence: sequence, timestamp: 0, packet: Int(sequence), arrival: 0) }
        let out = buffer.pop(now: 0).compactMap { if case .packet(let entry) = $0 { entry.packet } else { nil } }
        #expect(out == [10, 11, 12, 13])
    }

    @Test func aGapIsWaitedOnThenGivenUp() {
        var buffer = JitterBuffer<Int>(maxWaitNanoseconds: 100)
        buffer.insert(sequence: 1, timestamp: 0, packet: 1, arrival: 0)
        buffer.insert(sequence: 4, timestamp: 0, packet: 4, arrival: 10)
        #expect(buffer.pop(now: 50).count == 1)  // 1 released, 2 and 3 awaited
        #expect(buffer.pop(now: 109).isEmpty)
        let out = buffer.pop(now: 110)
        #expect(out.count == 2)
        if case .lost(let count) = out[0] { #expect(count == 2) } else { Issue.record("expected a loss first") }
        #expect(buffer.lostTotal == 2)
        // A late packet is dropped; a duplicate too.
        buffer.insert(sequence: 2, timestamp: 0, packet: 2, arrival: 120)
        #expect(buffer.late == 1)
    }

    @Test func sequenceNumbersWrap() {
        var buffer = JitterBuffer<Int>(maxWaitNanoseconds: 100)
        for sequence: UInt16 in [65534, 0, 65535, 1] { buffer.insert(sequence: sequence, timestamp: 0, packet: Int(sequence), arrival: 0) }
        let out = buffer.pop(now: 0).compactMap { if case .packet(let entry) = $0 { entry.packet } else { nil } }
        #expect(out == [65534, 65535, 0, 1])
    }
}

@Suite struct MatroskaTests {
    @Test func variableLengthSizes() {
        #expect(EBML.size(1) == [0x81])
        #expect(EBML.size(126) == [0xFE])
        #expect(EBML.size(127) == [0x40, 0x7F])  // all ones in one byte means unknown
        #expect(EBML.size(5, width: 8) == [0x01, 0, 0, 0, 0, 0, 0, 5])
    }

    /// A VP8 stream written, finished and read back by ffprobe: codec, frame count and duration.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/ffprobe")))
    func ffprobeReadsTheWebM() throws {
        var writer = MatroskaWriter(codec: .vp8)
        // A 16x16 VP8 keyframe header with an empty partition is enough for a demuxer.
        let keyframe: [UInt8] = [0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 16, 0, 16, 0] + [UInt8](repeating: 0, count: 20)
        let interframe: [UInt8] = [0x11, 0x02, 0x00] + [UInt8](repeating: 0, count: 20)
        var file = writer.header(width: 16, height: 16)
        for index in 0..<60 {
            file += writer.append(frame: index % 30 == 0 ? keyframe : interframe, timestamp: Int64(index * 100), keyframe: index % 30 == 0)
        }
        let (tail, patches) = writer.finish(durationMs: 6000)
        file += tail
        for patch in patches { file.replaceSubrange(patch.offset..<patch.offset + patch.bytes.count, with: patch.bytes) }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("parley-\(UUID().uuidString).webm")
        try Data(file).write(to: path)
        defer { try? FileManager.default.removeItem(at: path) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/ffprobe")
        process.arguments = ["-v", "error", "-show_entries", "format=duration,format_name:stream=codec_name,width,height", "-of", "default=nw=1", path.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        process.waitUntilExit()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(output.contains("codec_name=vp8"), "\(output)")
        #expect(output.contains("width=16"), "\(output)")
        #expect(output.contains("format_name=matroska,webm"), "\(output)")
        let duration = output.split(separator: "\n").first { $0.hasPrefix("duration=") }.flatMap { Double($0.dropFirst(9)) }
        #expect(abs((duration ?? 0) - 6.0) < 0.2, "\(output)")
    }
}
