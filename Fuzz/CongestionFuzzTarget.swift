import Congestion

/// libFuzzer entry: transport-wide congestion-control feedback (see `TWCCFuzz.run`).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTWCC(_ data: UnsafePointer<UInt8>, _ count: Int) -> Int32 {
    TWCCFuzz.run(UnsafeRawBufferPointer(start: data, count: count))
    return 0
}
