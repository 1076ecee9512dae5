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
