"""Server-side recording (ISSUE 5): an aiortc publisher's tone and video recorded per track,
checked with opusinfo, ffprobe and a decode of the Ogg file."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import numpy

from rtc_peer import Participant, wait_for
from test_media_aiortc import run

OPUSINFO = shutil.which("opusinfo") or "/usr/bin/opusinfo"
FFPROBE = shutil.which("ffprobe") or "/usr/bin/ffprobe"
FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"


def probe(path: Path) -> dict:
    output = subprocess.run(
        [FFPROBE, "-v", "error", "-show_entries", "format=duration,format_name:stream=codec_name,codec_type", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=30)
    assert output.returncode == 0, output.stderr
    return json.loads(output.stdout)


def decode_mono(path: Path) -> numpy.ndarray:
    raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", "48000", "-"],
                         capture_output=True, timeout=60).stdout
    return numpy.frombuffer(raw, dtype=numpy.int16).astype(numpy.float64)


def dominant_frequency(samples: numpy.ndarray) -> float:
    window = samples * numpy.hanning(len(samples))
    spectrum = numpy.abs(numpy.fft.rfft(window))
    return float(numpy.fft.rfftfreq(len(samples), 1 / 48_000)[numpy.argmax(spectrum)])


def test_tracks_recording_of_a_tone_and_a_video(server):
    async def scenario():
        alice = Participant(server.rtc_url(server.token("alice", "rec")), "alice")
        bot = Participant(server.rtc_url(server.token("bot", "rec", record=True, publish=False, hidden=True)), "bot")
        await alice.connect()
        await bot.connect()
        try:
            await alice.publish(tone=440.0, video=True)
            await wait_for(lambda: len(bot.tracks_from(alice.sid, "audio")) == 1, 15, what="media flowing")
            started = await bot.request({"type": "recording.start", "mode": "tracks"})
            assert started["type"] == "recording" and started["recording"]["state"] == "active", started
            await asyncio.sleep(5)
            stopped = await bot.request({"type": "recording.stop", "recording": started["recording"]["id"]})
            return stopped["recording"]
        finally:
            await alice.close()
            await bot.close()

    recording = run(scenario(), timeout=60)
    assert recording["state"] == "stopped" and recording["mode"] == "tracks", recording
    files = {f["kind"]: f for f in recording["files"]}
    assert set(files) == {"audio", "video"}, recording
    directory = server.data_dir / "data" / "recordings" / "rec" / recording["id"]
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["id"] == recording["id"] and len(manifest["files"]) == 2

    audio = directory / files["audio"]["name"]
    assert files["audio"]["format"] == "ogg/opus" and files["audio"]["bytes"] == audio.stat().st_size
    check = subprocess.run([OPUSINFO, str(audio)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0 and "WARNING" not in check.stdout + check.stderr, check.stdout + check.stderr
    info = probe(audio)
    assert info["streams"][0]["codec_name"] == "opus"
    assert abs(float(info["format"]["duration"]) - 5.0) <= 0.3, info
    samples = decode_mono(audio)
    assert len(samples) >= 4 * 48_000
    assert abs(dominant_frequency(samples[48_000:3 * 48_000]) - 440) <= 10

    video = directory / files["video"]["name"]
    assert files["video"]["format"] == "webm/vp8"
    info = probe(video)
    assert info["streams"][0]["codec_name"] == "vp8" and "webm" in info["format"]["format_name"], info
    assert abs(float(info["format"]["duration"]) - 5.0) <= 0.3, info
    frames = subprocess.run([FFPROBE, "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                             "stream=nb_read_frames", "-of", "csv=p=0", str(video)], capture_output=True, text=True, timeout=60)
    assert int(frames.stdout.strip() or 0) >= 40, frames.stdout + frames.stderr

    listed = server.http("GET", "/metrics")
    assert listed.status == 200
