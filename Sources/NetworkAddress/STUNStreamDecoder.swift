import NIOCore
import STUN

/// Splits a TCP byte stream into STUN messages and padded ChannelData frames (RFC 8656 §12.5):
/// the TURN server's TCP listener and the client's relay over TCP read through it.
public struct STUNStreamDecoder: ByteToMessageDecoder {
    public typealias InboundOut = ByteBuffer
    public struct InvalidFrame: Error {}

    public init() {}

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let frame = buffer.withUnsafeReadableBytes { STUNFraming.nextFrame($0) }
        switch frame {
        case .needMore:
            return .needMoreData
        case .invalid:
            throw InvalidFrame()
        case .complete(let length):
            guard let slice = buffer.readSlice(length: length) else { return .needMoreData }
            context.fireChannelRead(wrapInboundOut(slice))
            return .continue
        }
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try decode(context: context, buffer: &buffer)
    }
}
