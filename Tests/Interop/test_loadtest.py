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
    """--video publishers send VP8 that the SFU forwards and the recorder writes as a WebM ffprobe reads."""
    import time

    from test_recording import probe, recording_dir

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
    # The frames are VP8-shaped (frame tags, keyframe headers, RFC 7741 descriptors) with filler
    # partitions: counted as packets, not decoded into pictures.
    counted = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0", "-show_entries",
                              "stream=nb_read_packets", "-of", "csv=p=0", str(path)], capture_output=True, text=True, timeout=60)
    assert int(counted.stdout.strip()) >= 40, counted.stdout + counted.stderr
