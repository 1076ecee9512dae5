"""Server-side recording (ISSUE 5): an aiortc publisher's tone and video recorded per track,
checked with opusinfo, ffprobe and a decode of the Ogg file."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy
import pytest

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


def video_frames(path: Path) -> int:
    """Frames ffprobe decodes from the file's first video stream."""
    counted = subprocess.run([FFPROBE, "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                              "stream=nb_read_frames", "-of", "csv=p=0", str(path)], capture_output=True, text=True, timeout=60)
    return int(counted.stdout.strip() or 0)


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
    assert video_frames(video) >= 40

    listed = server.http("GET", "/metrics")
    assert listed.status == 200


async def publish_and_record(server, room: str, seconds: float, *, via_rest: bool = False) -> tuple[dict, Participant]:
    """Alice publishes a tone and video; recording starts once media flows. Returns the started
    recording and alice (still connected; the caller closes her)."""
    alice = Participant(server.rtc_url(server.token("alice", room)), "alice")
    await alice.connect()
    await alice.publish(tone=440.0, video=True)
    await asyncio.sleep(1.0)
    if via_rest:
        token = server.token("ops", room, record=True, join=False, publish=False, subscribe=False, chat=False)
        started = server.http("POST", f"/v1/rooms/{room}/recordings", token=token, body={"mode": "tracks"})
        assert started.status == 201, started
        recording = started.json()
    else:
        bot = Participant(server.rtc_url(server.token("bot", room, record=True, hidden=True)), "bot")
        await bot.connect()
        recording = (await bot.request({"type": "recording.start"}))["recording"]
    await asyncio.sleep(seconds)
    return recording, alice


def recording_dir(server, room: str, recording_id: str) -> Path:
    return server.data_dir / "data" / "recordings" / room / recording_id


def test_rest_api_starts_lists_stops_and_downloads_with_ranges(server):
    room = "restrec"
    token = server.token("ops", room, record=True, join=False, publish=False, subscribe=False, chat=False)

    async def scenario():
        recording, alice = await publish_and_record(server, room, 3, via_rest=True)
        try:
            assert server.http("POST", f"/v1/rooms/{room}/recordings", token=token, body={"mode": "tracks"}).status == 409
            listed = server.http("GET", f"/v1/recordings?room={room}", token=token).json()["recordings"]
            assert [r["id"] for r in listed] == [recording["id"]] and listed[0]["state"] == "active"
            stopped = server.http("POST", f"/v1/recordings/{recording['id']}/stop", token=token)
            assert stopped.status == 200, stopped
            return stopped.json()
        finally:
            await alice.close()

    recording = run(scenario(), timeout=60)
    assert recording["state"] == "stopped" and len(recording["files"]) == 2
    got = server.http("GET", f"/v1/recordings/{recording['id']}", token=token).json()
    assert got == recording
    audio = next(f for f in recording["files"] if f["kind"] == "audio")
    url = f"/v1/recordings/{recording['id']}/files/{audio['name']}"
    whole = server.http("GET", url, token=token)
    assert whole.status == 200 and whole.headers["Content-Type"] == "audio/ogg" and len(whole.body) == audio["bytes"]
    assert whole.body[:4] == b"OggS"
    part = server.http("GET", url, token=token, headers={"Range": "bytes=4-99"})
    assert part.status == 206 and part.body == whole.body[4:100], part
    assert part.headers["Content-Range"] == f"bytes 4-99/{audio['bytes']}"
    tail = server.http("GET", url, token=token, headers={"Range": "bytes=-10"})
    assert tail.status == 206 and tail.body == whole.body[-10:]
    assert server.http("GET", url, token=token, headers={"Range": f"bytes={audio['bytes'] + 5}-"}).status == 416
    # No way out of the recording's folder, no access without the grant or from another room.
    for bad in ["..%2F..%2F..%2Fparley.sqlite", "%2E%2E", "manifest.json"]:
        assert server.http("GET", f"/v1/recordings/{recording['id']}/files/{bad}", token=token).status == 404, bad
    assert server.http("GET", url).status == 401
    assert server.http("GET", url, token=server.token("eve", room)).status == 403
    other = server.token("ops", "elsewhere", record=True, join=False)
    assert server.http("GET", url, token=other).status == 403
    assert server.http("GET", "/v1/recordings/RC_missing", token=token).status == 404


def test_sigterm_finalizes_every_file(server):
    async def scenario():
        recording, alice = await publish_and_record(server, "termrec", 3)
        server.stop()  # SIGTERM while alice is still publishing
        await alice.close()
        return recording

    recording = run(scenario(), timeout=60)
    directory = recording_dir(server, "termrec", recording["id"])
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["state"] == "stopped" and len(manifest["files"]) == 2
    for entry in manifest["files"]:
        path = directory / entry["name"]
        info = probe(path)
        assert abs(float(info["format"]["duration"]) - 3.0) <= 0.5, (entry, info)
        if entry["kind"] == "audio":
            check = subprocess.run([OPUSINFO, str(path)], capture_output=True, text=True, timeout=30)
            assert check.returncode == 0 and "WARNING" not in check.stdout + check.stderr, check.stdout


def test_sigkill_leaves_files_readable_up_to_the_kill(server):
    async def scenario():
        recording, alice = await publish_and_record(server, "killrec", 4)
        server.kill()
        await alice.close()
        return recording

    recording = run(scenario(), timeout=60)
    directory = recording_dir(server, "killrec", recording["id"])
    names = sorted(p.name for p in directory.iterdir())
    audio = directory / next(n for n in names if n.endswith(".ogg"))
    video = directory / next(n for n in names if n.endswith(".webm"))
    # Pages and clusters are flushed every second: at most about that is lost.
    assert 2.5 <= float(probe(audio)["format"]["duration"]) <= 4.5
    decoded = decode_mono(audio)
    assert len(decoded) >= int(2.5 * 48_000)
    assert abs(dominant_frequency(decoded[24_000:2 * 48_000]) - 440) <= 10
    assert probe(video)["streams"][0]["codec_name"] == "vp8"
    assert video_frames(video) >= 30
    # After a restart the interrupted recording is marked as such, its files listed (in the API
    # and in a manifest written now) and downloadable.
    server.start()
    token = server.token("ops", "killrec", record=True, join=False)
    got = server.http("GET", f"/v1/recordings/{recording['id']}", token=token).json()
    assert got["state"] == "interrupted" and "finalized" in got["error"], got
    assert sorted(f["name"] for f in got["files"]) == names, got
    assert got["bytes"] == sum((directory / n).stat().st_size for n in names), got
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["state"] == "interrupted" and manifest["id"] == recording["id"], manifest
    download = server.http("GET", f"/v1/recordings/{recording['id']}/files/{audio.name}", token=token)
    assert download.status == 200 and len(download.body) == audio.stat().st_size


def tone_level(samples: numpy.ndarray, frequency: float) -> float:
    """The spectrum's magnitude at `frequency` relative to its strongest bin."""
    window = samples * numpy.hanning(len(samples))
    spectrum = numpy.abs(numpy.fft.rfft(window))
    bins = numpy.fft.rfftfreq(len(samples), 1 / 48_000)
    near = (bins > frequency - 8) & (bins < frequency + 8)
    return float(spectrum[near].max() / spectrum.max())


def test_mix_holds_both_tones_with_the_late_one_starting_late(server):
    room = "mixrec"

    async def scenario():
        bot = Participant(server.rtc_url(server.token("bot", room, record=True, hidden=True)), "bot")
        await bot.connect()
        alice = Participant(server.rtc_url(server.token("alice", room)), "alice")
        await alice.connect()
        await alice.publish(tone=440.0, video=False)
        await asyncio.sleep(0.5)
        recording = (await bot.request({"type": "recording.start", "mode": "both"}))["recording"]
        await asyncio.sleep(2.0)
        carol = Participant(server.rtc_url(server.token("carol", room)), "carol")
        await carol.connect()
        await carol.publish(tone=660.0, video=False)
        await asyncio.sleep(3.5)
        stopped = (await bot.request({"type": "recording.stop", "recording": recording["id"]}))["recording"]
        for participant in (alice, carol, bot):
            await participant.close()
        return stopped

    recording = run(scenario(), timeout=60)
    mixed = next(f for f in recording["files"] if f["name"] == "mix.ogg")
    assert mixed.get("track") is None and mixed["format"] == "ogg/opus"
    assert len([f for f in recording["files"] if f.get("track")]) == 2  # "both": the tracks too
    path = recording_dir(server, room, recording["id"]) / "mix.ogg"
    check = subprocess.run([OPUSINFO, str(path)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0 and "WARNING" not in check.stdout + check.stderr, check.stdout + check.stderr
    assert abs(float(probe(path)["format"]["duration"]) - 5.5) <= 0.5
    samples = decode_mono(path)
    early, late = samples[int(0.3 * 48_000):int(1.6 * 48_000)], samples[int(3.3 * 48_000):int(5.0 * 48_000)]
    assert tone_level(early, 440) > 0.5 and tone_level(early, 660) < 0.05, (tone_level(early, 440), tone_level(early, 660))
    assert tone_level(late, 440) > 0.3 and tone_level(late, 660) > 0.3, (tone_level(late, 440), tone_level(late, 660))
    # The late tone begins about 2 s in (carol's join and ICE take a moment more).
    onset = next(t / 10 for t in range(5, 55) if tone_level(samples[int(t / 10 * 48_000):int((t / 10 + 0.2) * 48_000)], 660) > 0.3)
    assert 1.9 <= onset <= 3.0, onset
    # No clipping: two tones at 0.3 each sum below full scale.
    assert numpy.abs(samples).max() < 32_000
    late_track = [f for f in recording["files"] if f.get("track") and f["offsetMs"] > 1500]
    assert len(late_track) == 1 and 1900 <= late_track[0]["offsetMs"] <= 3000, recording["files"]


def test_lost_packets_keep_the_duration_and_granules(server, monkeypatch):
    """Every 8th audio packet alice sends is dropped before the wire (a test hook in aiortc)."""
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    original = RTCDtlsTransport._send_rtp
    counter = {"audio": 0, "dropped": 0}
    # aiortc numbers Opus 96 in its offers (the publisher's payload type, before Parley rewrites).
    opus_payload_type = 96

    async def lossy(self, data: bytes) -> None:
        if len(data) > 12 and data[1] & 0x7F == opus_payload_type:
            counter["audio"] += 1
            if counter["audio"] % 8 == 0:
                counter["dropped"] += 1
                return
        await original(self, data)

    monkeypatch.setattr(RTCDtlsTransport, "_send_rtp", lossy)

    async def scenario():
        recording, alice = await publish_and_record(server, "lossrec", 5)
        bot = Participant(server.rtc_url(server.token("bot2", "lossrec", record=True, hidden=True)), "bot2")
        await bot.connect()
        stopped = (await bot.request({"type": "recording.stop", "recording": recording["id"]}))["recording"]
        await alice.close()
        await bot.close()
        return stopped

    recording = run(scenario(), timeout=60)
    assert counter["dropped"] >= 25, counter
    audio = recording_dir(server, "lossrec", recording["id"]) / next(f["name"] for f in recording["files"] if f["kind"] == "audio")
    check = subprocess.run([OPUSINFO, str(audio)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0 and "WARNING" not in check.stdout + check.stderr, check.stdout + check.stderr
    assert abs(float(probe(audio)["format"]["duration"]) - 5.0) <= 0.3
    # Granule positions rise page after page and end at the duration (pre-skip 312).
    data = audio.read_bytes()
    granules, offset = [], 0
    while offset < len(data):
        assert data[offset:offset + 4] == b"OggS"
        granules.append(int.from_bytes(data[offset + 6:offset + 14], "little", signed=True))
        segments = data[offset + 26]
        offset += 27 + segments + sum(data[offset + 27:offset + 27 + segments])
    audio_granules = [g for g in granules[2:] if g >= 0]
    assert audio_granules == sorted(audio_granules)
    assert abs((audio_granules[-1] - 312) / 48_000 - 5.0) <= 0.3
    assert abs(dominant_frequency(decode_mono(audio)[48_000:3 * 48_000]) - 440) <= 10


def test_auto_record_starts_with_the_first_participant(server):
    room = "autorec"
    created = server.admin("POST", "/v1/rooms", body={"name": room, "autoRecord": "tracks"})
    assert created.status == 201 and created.json()["autoRecord"] == "tracks", created

    async def scenario():
        alice = Participant(server.rtc_url(server.token("alice", room)), "alice")
        await alice.connect()
        await alice.publish(tone=440.0, video=False)
        await asyncio.sleep(3)
        await alice.close()

    run(scenario(), timeout=60)
    token = server.token("ops", room, record=True, join=False)
    listed = server.http("GET", f"/v1/recordings?room={room}", token=token).json()["recordings"]
    assert len(listed) == 1 and listed[0]["state"] == "active", listed
    assert server.admin("DELETE", f"/v1/rooms/{room}").status == 204  # closing the room finalizes it
    got = server.http("GET", f"/v1/recordings/{listed[0]['id']}", token=token).json()
    assert got["state"] == "stopped" and len(got["files"]) == 1 and got["files"][0]["durationMs"] >= 2000, got


def test_h264_is_recorded_as_matroska(server):
    async def scenario():
        alice = Participant(server.rtc_url(server.token("alice", "h264rec")), "alice")
        bot = Participant(server.rtc_url(server.token("bot", "h264rec", record=True, hidden=True)), "bot")
        await alice.connect()
        await bot.connect()
        await alice.publish(tone=None, video=True, video_codec="H264")
        await asyncio.sleep(1)
        recording = (await bot.request({"type": "recording.start", "mode": "tracks"}))["recording"]
        await asyncio.sleep(4)
        stopped = (await bot.request({"type": "recording.stop", "recording": recording["id"]}))["recording"]
        await alice.close()
        await bot.close()
        return stopped

    recording = run(scenario(), timeout=60)
    video = recording["files"][0]
    assert video["format"] == "matroska/h264" and video["name"].endswith(".mkv"), recording
    path = recording_dir(server, "h264rec", recording["id"]) / video["name"]
    info = probe(path)
    assert info["streams"][0]["codec_name"] == "h264" and "matroska" in info["format"]["format_name"], info
    assert abs(float(info["format"]["duration"]) - 4.0) <= 0.3, info
    assert video_frames(path) >= 30


def test_the_recording_bot_records_what_the_server_records(server, tmp_path):
    """`parley record` joins as a hidden participant; its files and the server's decode to the same tone."""
    import signal
    import time

    room = "botrec"
    out = tmp_path / "bot"
    bot = None

    async def scenario():
        nonlocal bot
        recording, alice = await publish_and_record(server, room, 0, via_rest=True)
        bot = subprocess.Popen(
            [server.binary, "record", "--url", server.ws_base, "--room", room, "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        await asyncio.sleep(6)
        bot.send_signal(signal.SIGINT)
        token = server.token("ops", room, record=True, join=False)
        stopped = server.http("POST", f"/v1/recordings/{recording['id']}/stop", token=token).json()
        await alice.close()
        return stopped

    recording = run(scenario(), timeout=90)
    stdout, stderr = bot.communicate(timeout=20)
    assert bot.returncode == 0, stdout + stderr
    assert "recording ended" in stdout and "recording 2 track(s)" in stderr, stdout + stderr
    manifest = json.loads((out / "manifest.json").read_text())
    kinds = {f["kind"]: f for f in manifest["files"]}
    assert set(kinds) == {"audio", "video"}, manifest
    bot_audio, bot_video = out / kinds["audio"]["name"], out / kinds["video"]["name"]
    check = subprocess.run([OPUSINFO, str(bot_audio)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0 and "WARNING" not in check.stdout + check.stderr, check.stdout
    assert float(probe(bot_audio)["format"]["duration"]) >= 4.0
    assert probe(bot_video)["streams"][0]["codec_name"] == "vp8"
    server_audio = recording_dir(server, room, recording["id"]) / next(f["name"] for f in recording["files"] if f["kind"] == "audio")
    bot_tone = dominant_frequency(decode_mono(bot_audio)[48_000:3 * 48_000])
    server_tone = dominant_frequency(decode_mono(server_audio)[48_000:3 * 48_000])
    assert abs(bot_tone - 440) <= 10 and abs(server_tone - 440) <= 10, (bot_tone, server_tone)
    # The bot stayed hidden: nobody was told it joined.
    assert server.http("GET", "/metrics").status == 200


@pytest.mark.parley_set({"turn.credentialTTL": "3s"})
def test_a_relayed_recording_bot_moves_to_fresh_turn_credentials(server, tmp_path):
    """`parley record --relay` asks for new TURN credentials (`ice.servers`) before its own expire
    and moves its relay to them, without a reconnection and without a gap in the recording."""
    import signal

    from test_media_aiortc import metric

    room = "botrelay"
    out = tmp_path / "bot"
    bot = None

    async def scenario():
        nonlocal bot
        alice = Participant(server.rtc_url(server.token("alice", room)), "alice")
        await alice.connect()
        await alice.publish(tone=523.0, video=False)
        bot = subprocess.Popen(
            [server.binary, "record", "--url", server.ws_base, "--room", room, "--out", str(out), "--relay"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        await asyncio.sleep(9)
        bot.send_signal(signal.SIGINT)
        await alice.close()

    run(scenario(), timeout=90)
    stdout, stderr = bot.communicate(timeout=20)
    assert bot.returncode == 0, stdout + stderr
    # The first allocation and a renewal every 2.4 s (four fifths of 3 s).
    assert metric(server, "parley_turn_allocations_created_total") >= 3, stderr
    assert metric(server, "parley_turn_auth_failures_total") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    audio = out / next(f["name"] for f in manifest["files"] if f["kind"] == "audio")
    check = subprocess.run([OPUSINFO, str(audio)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0 and "WARNING" not in check.stdout + check.stderr, check.stdout
    samples = decode_mono(audio)
    assert len(samples) >= 7 * 48_000, len(samples)
    # The tone is there in every half second (a renewal pauses the media for a moment only).
    for start in range(0, len(samples) - 24_000, 24_000):
        window = samples[start:start + 24_000]
        assert abs(dominant_frequency(window) - 523) <= 10, start / 48_000



def test_a_one_gigabyte_file_downloads_in_bounded_memory_with_ranges(server):
    """Downloads stream from disk: a 1 GiB file (sparse, beside an active recording's tracks) is
    served whole and by range while the server's resident memory grows by far less than its size."""
    import threading
    import urllib.request

    room = "bigfile"
    token = server.token("ops", room, record=True, join=False, publish=False, subscribe=False, chat=False)
    size = 1 << 30

    def rss_mb() -> float:
        for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    async def scenario():
        recording, alice = await publish_and_record(server, room, 1, via_rest=True)
        try:
            big = recording_dir(server, room, recording["id"]) / "big.ogg"
            with open(big, "wb") as f:
                f.truncate(size)
            url = f"{server.url}/v1/recordings/{recording['id']}/files/big.ogg"
            before = rss_mb()
            peak = [before]
            done = threading.Event()

            def sample():
                while not done.is_set():
                    peak[0] = max(peak[0], rss_mb())
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample)
            sampler.start()

            def download(headers):
                request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}", **headers})
                total = 0
                with urllib.request.urlopen(request, timeout=60) as response:
                    status, length = response.status, response.headers["Content-Length"]
                    while chunk := response.read(1 << 20):
                        total += len(chunk)
                return status, length, total

            try:
                whole = await asyncio.to_thread(download, {})
                ranged = await asyncio.to_thread(download, {"Range": f"bytes={size - 1000}-"})
            finally:
                done.set()
                sampler.join()
            assert whole == (200, str(size), size), whole
            assert ranged == (206, "1000", 1000), ranged
            assert peak[0] - before < 100, f"resident memory grew {peak[0] - before:.0f} MB serving 1024 MB"
            big.unlink()
            server.http("POST", f"/v1/recordings/{recording['id']}/stop", token=token)
        finally:
            await alice.close()

    run(scenario(), timeout=120)


def assert_playable(directory: Path, files: list[dict]) -> None:
    """Every file of a recording that stopped by itself opens and decodes to its end."""
    assert files, "no files"
    for entry in files:
        path = directory / entry["name"]
        info = probe(path)
        assert float(info["format"]["duration"]) > 0.5, (entry, info)
        if entry["kind"] == "audio":
            check = subprocess.run([OPUSINFO, str(path)], capture_output=True, text=True, timeout=30)
            assert check.returncode == 0 and "WARNING" not in check.stdout + check.stderr, check.stdout
        else:
            assert video_frames(path) > 5, entry


def wait_stopped(server, recording_id: str, token: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = server.http("GET", f"/v1/recordings/{recording_id}", token=token).json()
        if got["state"] != "active":
            return got
        time.sleep(0.25)
    raise AssertionError(f"recording {recording_id} still active after {timeout}s")


def test_a_recording_stops_cleanly_at_its_longest_and_at_its_rooms_quota(server_factory):
    server = server_factory({"log.level": "warning", "recording.maxDuration": "3s"})
    room = "shortrec"
    token = server.token("ops", room, record=True, join=False, publish=False, subscribe=False, chat=False)

    async def record_until_stopped(server, room, token):
        recording, alice = await publish_and_record(server, room, 0.5, via_rest=True)
        try:
            return await asyncio.to_thread(wait_stopped, server, recording["id"], token, 20)
        finally:
            await alice.close()

    stopped = run(record_until_stopped(server, room, token), timeout=60)
    assert stopped["state"] == "stopped" and stopped["stopReason"] == "max_duration", stopped
    assert 2500 <= stopped["durationMs"] <= 6000, stopped
    assert_playable(recording_dir(server, room, stopped["id"]), stopped["files"])
    assert "parley_recordings_stopped_by_limit_total 1" in server.http("GET", "/metrics").text

    quota = server_factory({"log.level": "warning", "recording.roomQuota": "120000"})
    room = "fullroom"
    token = quota.token("ops", room, record=True, join=False, publish=False, subscribe=False, chat=False)
    stopped = run(record_until_stopped(quota, room, token), timeout=60)
    assert stopped["state"] == "stopped" and stopped["stopReason"] == "room_quota", stopped
    assert_playable(recording_dir(quota, room, stopped["id"]), stopped["files"])

    async def start_again():
        alice = Participant(quota.rtc_url(quota.token("alice", room)), "alice")
        await alice.connect()
        try:
            return quota.http("POST", f"/v1/rooms/{room}/recordings", token=token, body={"mode": "tracks"})
        finally:
            await alice.close()

    refused = run(start_again(), timeout=30)
    assert refused.status == 507 and refused.json()["error"]["code"] == "insufficient_storage", refused.text
    assert "recording.roomQuota" in refused.json()["error"]["message"]


def test_a_recording_stops_cleanly_before_the_disk_is_full(server_factory, tmp_path):
    """Recordings on a small tmpfs: the running one stops while recording.minFreeDisk is still
    free, with playable files, state stopped and the reason; a new one is refused."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        free = shutil.disk_usage(mount).free
        server = server_factory({"log.level": "warning", "recording.dir": str(mount), "recording.minFreeDisk": str(free - 250_000)})
        room = "diskrec"
        token = server.token("ops", room, record=True, join=False, publish=False, subscribe=False, chat=False)

        async def scenario():
            recording, alice = await publish_and_record(server, room, 0.5, via_rest=True)
            try:
                stopped = await asyncio.to_thread(wait_stopped, server, recording["id"], token, 60)
                refused = server.http("POST", f"/v1/rooms/{room}/recordings", token=token, body={"mode": "tracks"})
                return stopped, refused
            finally:
                await alice.close()

        stopped, refused = run(scenario(), timeout=90)
        assert stopped["state"] == "stopped" and stopped["stopReason"] == "disk_full", stopped
        assert shutil.disk_usage(mount).free > free - 2_000_000, "stopped well before the disk filled"
        assert_playable(mount / room / stopped["id"], stopped["files"])
        assert refused.status == 507 and "nearly full" in refused.json()["error"]["message"], refused.text
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
