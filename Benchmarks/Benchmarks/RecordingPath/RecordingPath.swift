import Benchmark
import Foundation
import Opus
import Recording

/// Real Opus packets (a 440 Hz tone, 20 ms each) for the recorders and the mixer to chew on.
func tonePackets(count: Int) throws -> [[UInt8]] {
    let encoder = try OpusEncoder()
    var packets: [[UInt8]] = []
    var phase = 0.0
    for _ in 0..<count {
        var frame = [Float](repeating: 0, count: OpusEncoder.frameSamples * 2)
        for index in 0..<OpusEncoder.frameSamples {
            let sample = Float(0.3 * sin(phase))
            frame[2 * index] = sample
            frame[2 * index + 1] = sample
            phase += 2 * Double.pi * 440 / 48_000
        }
        packets.append(encoder.encode(frame[...]))
    }
    return packets
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput], warmupIterations: 1, maxDuration: .seconds(20), maxIterations: 30)

    let tracks = 50
    let packetsPerSecond = 50

    // One second of media for 50 audio tracks, as the media loop sees it: 2,500 packets handed to
    // the recorders, then the once-a-second flush; then the queue's work (files, the mix decoded,
    // summed and encoded) is waited for, so CPU time covers everything. Per track and second of
    // audio: divide by 50.
    for mode in ["tracks", "both"] {
        Benchmark("50 audio tracks, 1 s of media, mode \(mode)") { benchmark in
            let payloads = try tonePackets(count: packetsPerSecond)
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("parley-bench-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: directory) }
            var now: UInt64 = 1_000_000_000
            let session = try RecordingSession(directory: directory, mode: mode, startedAt: now, label: "bench")
            for track in 0..<tracks {
                session.addTrack(.init(trackSid: "TR_\(track)", participantSid: "PA_\(track)", kind: "audio", codec: "opus"))
            }
            var sequence: UInt16 = 0
            var timestamp: UInt32 = 0
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                for packet in 0..<packetsPerSecond {
                    for track in 0..<tracks {
                        session.receive(
                            RecordedPacket(
                                ssrc: UInt32(track + 1), sequence: sequence, timestamp: timestamp, marker: false,
                                payload: payloads[packet], arrival: now),
                            track: "TR_\(track)")
                    }
                    sequence &+= 1
                    timestamp &+= 960
                    now += 20_000_000
                }
                session.flush(now: now)
                session.waitUntilWritten()
            }
            benchmark.stopMeasurement()
        }
    }

    // The media loop's share alone: what recording adds to each forwarded packet.
    Benchmark("hand one packet to a track recorder (media loop side)", configuration: .init(
        metrics: [.wallClock, .mallocCountTotal, .throughput], scalingFactor: .kilo, maxDuration: .seconds(5))
    ) { benchmark in
        let payloads = try tonePackets(count: 1)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("parley-bench-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let session = try RecordingSession(directory: directory, mode: "tracks", startedAt: 0, label: "bench")
        session.addTrack(.init(trackSid: "TR", participantSid: "PA", kind: "audio", codec: "opus"))
        var now: UInt64 = 0
        var sequence: UInt16 = 0
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            session.receive(
                RecordedPacket(ssrc: 1, sequence: sequence, timestamp: UInt32(sequence) &* 960, marker: false, payload: payloads[0], arrival: now),
                track: "TR")
            sequence &+= 1
            now += 20_000_000
        }
        benchmark.stopMeasurement()
        session.flush(now: now)
        session.waitUntilWritten()
    }
}
