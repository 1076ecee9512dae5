import SDP

/// libFuzzer entry: SDP parse, serialize and re-parse, and answering (see `SDPFuzz.run`).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSDP(_ data: UnsafePointer<UInt8>, _ count: Int) -> Int32 {
    SDPFuzz.run(UnsafeRawBufferPointer(start: data, count: count))
    return 0
}
