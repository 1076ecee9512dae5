import Foundation
import Testing
@testable import Recording

/// A recording bot names files after the sids a server sent it: a hostile server must not be able
/// to write outside the output folder.
@Suite struct FileNameTests {
    @Test func hostileSidsStayInsideTheFolder() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("parley-names-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let session = try RecordingSession(directory: folder + "/inner", mode: "tracks", startedAt: 0, label: "test")
        #expect(session.addTrack(.init(trackSid: "../../escaped", participantSid: "/etc/passwd", kind: "audio", codec: "opus")))
        #expect(session.addTrack(.init(trackSid: "", participantSid: String(repeating: "p", count: 500), kind: "video/../x", codec: "vp8")))
        session.waitUntilWritten()
        let inner = try FileManager.default.contentsOfDirectory(atPath: folder + "/inner")
        let outside = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0 != "inner" }
        #expect(outside.isEmpty, "written outside: \(outside)")
        #expect(inner.count == 2 && inner.allSatisfy { !$0.contains("/") && !$0.hasPrefix(".") && $0.count < 200 }, "\(inner)")
    }

    @Test func safeNamesKeepOrdinarySids() {
        #expect(RecordingSession.safeFileComponent("PA_abc-123") == "PA_abc-123")
        #expect(RecordingSession.safeFileComponent("../x") == "___x")
        #expect(RecordingSession.safeFileComponent("") == "_")
        #expect(RecordingSession.safeFileComponent("é/\u{0}") == "___")
    }
}
