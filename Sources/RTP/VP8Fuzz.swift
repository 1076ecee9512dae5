/// One fuzz iteration over the VP8 descriptor parser, the VP8 munger and the sequence rewriter's
/// skips; a libFuzzer target calls it with raw bytes. Nothing here may trap on any input, and the
/// checks below trap on purpose when a promise is broken.
public enum VP8Fuzz {
    public static func run(_ data: UnsafeRawBufferPointer) {
        _ = try? VP8PayloadDescriptor(data)
        runTrace(data)
    }

    /// Reads the input as a packet trace and forwards it the way a down-track does. Each record:
    /// a control byte (bits 0-1: maximum temporal layer, 3 meaning all; bit 2: switch source
    /// first; bit 3: padding-only, skipped without the munger; bits 4-7: signed sequence step),
    /// a length byte, then that many payload bytes (fewer at the end of the input).
    static func runTrace(_ data: UnsafeRawBufferPointer) {
        var munger = VP8Munger()
        var rewriter = SequenceRewriter(clockRate: 90000, outgoingSSRC: 1)
        var ssrc: UInt32 = 10
        var sequenceNumber: UInt16 = 0xFFF0
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 1)
        defer { copy.deallocate() }
        var position = 0
        while position + 2 <= data.count {
            let control = data[position]
            let length = min(Int(data[position + 1]), data.count - position - 2)
            let payload = UnsafeMutableRawBufferPointer(rebasing: copy[0..<length])
            payload.copyMemory(from: UnsafeRawBufferPointer(rebasing: data[(position + 2)..<(position + 2 + length)]))
            position += 2 + length

            let maxTemporalLayer: UInt8 = control & 0x03 == 3 ? .max : control & 0x03
            sequenceNumber &+= UInt16(bitPattern: Int16(Int8(bitPattern: control) >> 4))
            if control & 0x04 != 0 {
                munger.switchSource()
                rewriter.resync()
                ssrc &+= 1
            }
            guard control & 0x08 == 0, let descriptor = try? VP8PayloadDescriptor(UnsafeRawBufferPointer(payload)) else {
                rewriter.skip(ssrc: ssrc, sequenceNumber: sequenceNumber)
                continue
            }
            switch munger.process(descriptor: descriptor, payload: payload, maxTemporalLayer: maxTemporalLayer) {
            case .forward:
                checkRewrite(of: descriptor, in: UnsafeRawBufferPointer(payload))
                guard let output = rewriter.rewrite(ssrc: ssrc, sequenceNumber: sequenceNumber, timestamp: 0, arrivalNanoseconds: 0) else {
                    continue
                }
                guard rewriter.incomingSequence(forOutgoing: output.sequenceNumber) == sequenceNumber else {
                    fatalError("the NACK map does not lead back to a packet just forwarded")
                }
            case .drop:
                rewriter.skip(ssrc: ssrc, sequenceNumber: sequenceNumber)
            }
        }
    }

    /// Rewriting changes values only: the descriptor keeps its layout and every other field.
    static func checkRewrite(of original: VP8PayloadDescriptor, in payload: UnsafeRawBufferPointer) {
        guard let again = try? VP8PayloadDescriptor(payload) else { fatalError("a rewritten VP8 descriptor no longer parses") }
        var expected = original
        expected.pictureID = again.pictureID
        expected.tl0PictureIndex = again.tl0PictureIndex
        expected.keyIndex = again.keyIndex
        guard again == expected, (original.pictureID == nil) == (again.pictureID == nil),
            (original.tl0PictureIndex == nil) == (again.tl0PictureIndex == nil), (original.keyIndex == nil) == (again.keyIndex == nil)
        else { fatalError("rewriting changed the VP8 descriptor's layout or fields it must keep") }
    }
}
