import RTP

/// libFuzzer entry: the VP8 payload descriptor, and packet traces through the VP8 munger and the
/// sequence rewriter's skips (see `VP8Fuzz.run`).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVP8(_ data: UnsafePointer<UInt8>, _ count: Int) -> Int32 {
    VP8Fuzz.run(UnsafeRawBufferPointer(start: data, count: count))
    return 0
}
