"""`parley loadtest` smoke run (ISSUE 6): 2 rooms x 2 publishers x 3 subscribers for 10 s against a
real server: no failed join, loss under 1 %, every subscriber hears its publishers' tones, delay
figures present in the JSON."""

from __future__ import annotations

import json
import subprocess


def test_loadtest_smoke_run(server, tmp_path):
    out = tmp_path / "report.json"
    result = subprocess.run(
        [server.binary, "loadtest", "--url", server.ws_base, "--rooms", "2", "--publishers", "2", "--subscribers", "3",
         "--duration", "10s", "--ramp", "20/s", "--chat-rate", "2", "--json", str(out), "--slo-loss", "1%",
         "--slo-latency-p99", "200ms"],
        capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["joinsOK"] == 10 and report["joinsFailed"] == 0, report
    assert report["lossPercent"] < 1.0, report
    assert report["tracksExpected"] == 12 and report["tracksReceived"] == 12, report
    assert report["tonesDetected"] == 12, report
    delay = report["mediaDelayMs"]
    assert delay["count"] > 1000 and 0 <= delay["p50"] <= delay["p99"] < 200, delay
    assert report["joinMs"]["count"] == 10 and report["chatDelayMs"]["count"] > 20
    assert report["server"]["parley_media_forwarded_packets_total"] >= report["packetsReceived"] * 0.99
    assert "joined 10/10" in result.stderr and "media delay" in result.stdout


def test_loadtest_exits_non_zero_when_an_slo_is_missed(server, tmp_path):
    result = subprocess.run(
        [server.binary, "loadtest", "--url", server.ws_base, "--publishers", "1", "--subscribers", "1", "--duration", "4s",
         "--slo-latency-p99", "0ms"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "SLO missed: delay p99" in result.stdout, result.stdout + result.stderr[-1000:]


def test_synthetic_video_is_real_vp8(server, tmp_path):
    """--video publishers send real VP8 that the SFU forwards and the recorder writes as a WebM:
    ffmpeg decodes every frame without a warning to the camera's picture, mid-gray with a 16x16
    square (luma 180) that moves one macroblock per frame."""
    import time

    import numpy

    from test_recording import FFMPEG, probe, recording_dir

    out = tmp_path / "video.json"
    load = subprocess.Popen(
        [server.binary, "loadtest", "--url", server.ws_base, "--publishers", "1", "--subscribers", "1", "--duration", "9s",
         "--video", "--json", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    token = server.token("ops", "load-0", record=True, join=False)
    started = server.http("POST", "/v1/rooms/load-0/recordings", token=token, body={"mode": "tracks"})
    assert started.status == 201, started
    time.sleep(4)
    stopped = server.http("POST", f"/v1/recordings/{started.json()['id']}/stop", token=token).json()
    stdout, stderr = load.communicate(timeout=60)
    assert load.returncode == 0, stdout + stderr[-1000:]
    report = json.loads(out.read_text())
    assert report["videoTracksReceived"] == 1 and report["videoBitrateKbpsPerTrack"] > 200, report
    assert report["lossPercent"] < 1.0 and report["tonesDetected"] == 1, report
    video = next(f for f in stopped["files"] if f["kind"] == "video")
    path = recording_dir(server, "load-0", stopped["id"]) / video["name"]
    assert probe(path)["streams"][0]["codec_name"] == "vp8"
    counted = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0", "-show_entries",
                              "stream=nb_read_packets", "-of", "csv=p=0", str(path)], capture_output=True, text=True, timeout=60)
    packets = int(counted.stdout.strip())
    assert packets >= 40, counted.stdout + counted.stderr

    # yuv420p as decoded: a conversion to gray would rescale the luma range.
    decoded = subprocess.run([FFMPEG, "-nostdin", "-v", "warning", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"],
                             capture_output=True, timeout=60)
    assert decoded.returncode == 0 and not decoded.stderr, decoded.stderr.decode()[-2000:]
    frames = numpy.frombuffer(decoded.stdout, dtype=numpy.uint8).reshape(-1, 320 * 240 * 3 // 2)[:, :320 * 240].reshape(-1, 240, 320)
    assert len(frames) == packets, (len(frames), packets)
    squares = []
    for index, frame in enumerate(frames):
        ys, xs = numpy.nonzero(frame != 128)
        assert len(ys) == 256 and (frame[ys, xs] == 180).all(), f"frame {index}: {len(ys)} pixels off the gray"
        assert ys.min() % 16 == 0 and xs.min() % 16 == 0 and numpy.ptp(ys) == 15 and numpy.ptp(xs) == 15, f"frame {index}"
        squares.append((int(ys.min()) // 16, int(xs.min()) // 16))
    assert all(before != after for before, after in zip(squares, squares[1:])), squares


def test_simulcast_subscribers_get_the_layer_of_their_quality(server, tmp_path):
    """--simulcast publishers send three VP8 layers (320x180, 640x360, 1280x720) with RTX and
    transport-cc; subscribers asking --quality low get the smallest, high the largest, and the
    report says which (text and JSON). The top layer the recorder takes is real 1280x720 VP8."""
    import time

    from test_recording import FFMPEG, recording_dir

    widths = {}
    for quality, width in (("low", 320), ("high", 1280)):
        out = tmp_path / f"{quality}.json"
        room = "load"
        load = subprocess.Popen(
            [server.binary, "loadtest", "--url", server.ws_base, "--publishers", "1", "--subscribers", "2", "--duration", "7s",
             "--simulcast", "--quality", quality, "--json", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stopped = None
        if quality == "high":
            time.sleep(3)
            token = server.token("ops", f"{room}-0", record=True, join=False)
            started = server.http("POST", f"/v1/rooms/{room}-0/recordings", token=token, body={"mode": "tracks"})
            assert started.status == 201, started
            time.sleep(2.5)
            stopped = server.http("POST", f"/v1/recordings/{started.json()['id']}/stop", token=token).json()
        stdout, stderr = load.communicate(timeout=60)
        assert load.returncode == 0, stdout + stderr[-1000:]
        report = json.loads(out.read_text())
        assert report["joinsFailed"] == 0 and report["videoTracksReceived"] == 2, json.dumps(report)
        assert report["videoWidths"] == {str(width): 2}, report["videoWidths"]
        assert [r["frameWidth"] for r in report["videoReceptions"]] == [width, width], report["videoReceptions"]
        assert all(r["frameHeight"] == width * 9 // 16 for r in report["videoReceptions"]), report["videoReceptions"]
        assert report["publisherTransportFeedback"] > 50, report
        assert report["lossPercent"] < 1.0 and report["tonesDetected"] == 2, report
        assert "video layers received (width: tracks)" in stdout and f"{width}: 2" in stdout, stdout
        widths[quality] = [r["bitrateKbps"] for r in report["videoReceptions"]]
        if stopped:
            video = next(f for f in stopped["files"] if f["kind"] == "video")
            path = recording_dir(server, f"{room}-0", stopped["id"]) / video["name"]
            size = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
                                   "-of", "csv=p=0", str(path)], capture_output=True, text=True, timeout=30)
            assert size.stdout.strip() == "1280,720", size.stdout + size.stderr
            decoded = subprocess.run([FFMPEG, "-nostdin", "-v", "warning", "-i", str(path), "-f", "null", "-"],
                                     capture_output=True, timeout=60)
            assert decoded.returncode == 0 and not decoded.stderr, decoded.stderr.decode()[-2000:]
    # The low layer is a fraction of the top's bitrate (150k against 1.5M).
    assert max(widths["low"]) * 3 < min(widths["high"]), widths


def test_the_swift_sdk_sends_and_receives_media_over_ipv6(server_factory, tmp_path):
    """The server's only media candidate is ::1: the Swift SDK's participants (the load tester's)
    connect, publish and hear each other's tones over IPv6 from their dual-stack socket. Their
    signaling goes to 127.0.0.1 on the same dual-stack listener (the WebSocket library's URLs do
    not take [IPv6] literals)."""
    server = server_factory({"log.level": "warning", "rtc.nodeIPs": "::1"}, host="::")
    out = tmp_path / "report.json"
    result = subprocess.run(
        [server.binary, "loadtest", "--url", f"ws://127.0.0.1:{server.port}", "--rooms", "1", "--publishers", "2",
         "--subscribers", "1", "--duration", "6s", "--json", str(out), "--slo-loss", "1%"],
        capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["joinsOK"] == 3 and report["tonesDetected"] == report["tracksExpected"] == 2, report
    assert report["lossPercent"] < 1.0, report
