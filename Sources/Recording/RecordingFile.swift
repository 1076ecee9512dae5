import Dispatch
import Foundation

/// A recording's file, written on its own serial queue so the media loop never waits on a disk.
/// Appends go out as they come (the recorder hands over about a second at a time, so a crash
/// loses at most that); `finish` applies the patches (a header's sizes and duration), syncs and
/// closes.
public final class RecordingFile: @unchecked Sendable {
    public let path: String
    private let queue: DispatchQueue
    private var descriptor: Int32 = -1
    /// Touched only on `queue`.
    private var written: Int64 = 0
    private var failure: String?

    public init(path: String, queue: DispatchQueue) {
        self.path = path
        self.queue = queue
        queue.async { [self] in
            descriptor = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0o644)
            if descriptor < 0 { failure = "open \(path): \(String(cString: strerror(errno)))" }
        }
    }

    public func append(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        queue.async { [self] in
            guard descriptor >= 0 else { return }
            var offset = 0
            while offset < bytes.count {
                let result = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress! + offset, bytes.count - offset) }
                if result < 0 {
                    if errno == EINTR { continue }
                    failure = "write \(path): \(String(cString: strerror(errno)))"
                    return
                }
                offset += result
            }
            written += Int64(bytes.count)
        }
    }

    /// Writes the last bytes and the patches, syncs and closes; `completion` gets the file's size
    /// or what went wrong.
    public func finish(tail: [UInt8], patches: [(offset: Int, bytes: [UInt8])], completion: @escaping @Sendable (Result<Int64, RecordingFileError>) -> Void) {
        append(tail)
        queue.async { [self] in
            if descriptor >= 0 {
                for patch in patches {
                    _ = patch.bytes.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, off_t(patch.offset)) }
                }
                fsync(descriptor)
                close(descriptor)
                descriptor = -1
            }
            if let failure { completion(.failure(RecordingFileError(message: failure))) } else { completion(.success(written)) }
        }
    }

    /// Bytes handed over so far (on the caller's side, for progress).
    public func size() -> Int64 { queue.sync { written } }
}

public struct RecordingFileError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
