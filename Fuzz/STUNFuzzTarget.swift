import STUN

/// libFuzzer entry: every STUN entry point on the input (see `STUNFuzz.run`).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSTUN(_ data: UnsafePointer<UInt8>, _ count: Int) -> Int32 {
    STUNFuzz.run(UnsafeRawBufferPointer(start: data, count: count))
    return 0
}
