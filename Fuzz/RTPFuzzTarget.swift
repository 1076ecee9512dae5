import RTP

/// libFuzzer entry: RTP header and extensions, in-place rewriting, RTCP compounds and every
/// feedback decoder (see `RTPFuzz.run`).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRTP(_ data: UnsafePointer<UInt8>, _ count: Int) -> Int32 {
    RTPFuzz.run(UnsafeRawBufferPointer(start: data, count: count))
    return 0
}
