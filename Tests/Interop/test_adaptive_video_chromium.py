"""Issue 15's browser scenario: adaptive video through the built-in web client, with each browser
in its own network namespace (netns.py) and the server on the host.

A Chromium publisher sends a 960x540 fake camera at 20 fps as three simulcast layers (q, h, f)
plus audio. Three receive-only Chromium subscribers:
- A, on a clean link, must get the top layer (frameWidth >= 900) at >= 16 fps;
- B, whose download is held to 400 kbit/s, must get a lower layer (frameWidth <= 480) at >= 10
  fps with under 1.5 s of freezes and under 3 % concealed audio over the 12 s before the limit is
  lifted, and be back on the top layer within 18 s of the lift;
- C, losing 5 % of the UDP that arrives, must keep >= 15 fps, under 2 s of freezes in 50 s and
  under 8 % concealed audio.
Then the publisher's uplink is held to 600 kbit/s: every subscriber's video must keep moving.

A per-second timeline of what each subscriber receives is printed (run with -s to see it live;
pytest shows it on failure), then every threshold is checked and all failures reported at once.

    .venv/bin/pytest -s Tests/Interop/test_adaptive_video_chromium.py --parley .build/debug/parley
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import netns
from test_web_client_chromium import CHROMEDRIVER, CHROMIUM, wait_until

DRIVER_PORT = 9515  # each namespace has its own ports

# The scenario's clock, in seconds from the moment every subscriber has video (t = 0).
B_LIMIT_KBIT = 400
B_WINDOW = (8.0, 20.0)  # B is measured here; the limit is lifted at its end
B_RECOVERY = 18.0  # after the lift, B must reach the top layer within this
C_LOSS_PERCENT = 5
ABC_WINDOW = (0.0, 50.0)  # A and C are measured here; C's loss is on throughout
A_SETTLED = 10.0  # A's top layer is checked from here (the publisher's estimate ramps up first)
UPLINK_KBIT = 600
UPLINK_WINDOW = (52.0, 67.0)  # the publisher's uplink is held over this (set at its start - 2 s)
MOVING_SLICE = 3.0  # every subscriber decodes frames in each slice of the uplink window
END = UPLINK_WINDOW[1] + 1.0


class NsChromium:
    """Chromium driven by a chromedriver that runs inside namespace `ns`, reached over the veth."""

    def __init__(self, ns: netns.Namespace, origin: str, log_dir: Path, name: str, publish: bool):
        from selenium import webdriver

        self.ns, self.name = ns, name
        log = open(log_dir / f"chromedriver-{name}.log", "wb")
        ns.popen([CHROMEDRIVER, f"--port={DRIVER_PORT}", f"--allowed-ips={ns.host_ip}"], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        netns.wait_port(ns.ns_ip, DRIVER_PORT)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        flags = [
            "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
            # The page comes from a veth address, not localhost: let it capture and use WebRTC.
            f"--unsafely-treat-insecure-origin-as-secure={origin}",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream=fps=20",
            "--disable-features=WebRtcHideLocalIpsWithMdns", "--autoplay-policy=no-user-gesture-required",
            "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows", "--window-size=1280,1000",
        ]
        for flag in flags:
            options.add_argument(flag)
        self.driver = webdriver.Remote(command_executor=f"http://{ns.ns_ip}:{DRIVER_PORT}", options=options)
        self.driver.set_script_timeout(10)
        self.driver.set_page_load_timeout(20)
        self.publish = publish

    def join(self, url: str, room: str, query: str = "") -> None:
        from selenium.webdriver.common.by import By

        self.driver.get(url + ("/?" if self.publish else "/?publish=0&") + query)
        self.driver.find_element(By.ID, "room").clear()
        self.driver.find_element(By.ID, "room").send_keys(room)
        self.driver.find_element(By.ID, "name").send_keys(self.name)
        self.driver.find_element(By.CSS_SELECTOR, "#join button").click()

    def stats(self) -> dict:
        script = "const done = arguments[0]; window.parley.stats().then(done, (e) => done({error: String(e)}));"
        try:
            return self.driver.execute_async_script(script) or {}
        except Exception as err:  # a slow page: a gap in the timeline, not a crash
            return {"error": str(err).splitlines()[0]}

    def quit(self) -> None:
        try:
            self.driver.quit()
        except Exception:
            pass


def main_video(stats: dict) -> dict | None:
    """The received video with the most bytes (each subscriber gets one camera here)."""
    videos = stats.get("video") or []
    return max(videos, key=lambda v: v.get("bytesReceived", 0)) if videos else None


def main_audio(stats: dict) -> dict | None:
    audios = stats.get("audio") or []
    return max(audios, key=lambda a: a.get("bytesReceived", 0)) if audios else None


class Timeline:
    """One subscriber's samples: (t, video, audio), t on the scenario's clock."""

    def __init__(self, name: str):
        self.name = name
        self.samples: list[tuple[float, dict | None, dict | None]] = []

    def add(self, t: float, stats: dict) -> None:
        self.samples.append((t, main_video(stats), main_audio(stats)))

    def between(self, start: float, end: float) -> list[tuple[float, dict, dict | None]]:
        return [s for s in self.samples if start <= s[0] <= end and s[1]]

    def window(self, start: float, end: float) -> dict:
        """Frame rate, freezes and concealment over [start, end] from the counters' deltas."""
        inside = self.between(start, end)
        if len(inside) < 2:
            return {"samples": len(inside), "fps": 0.0, "freezes": None, "concealed": None, "widths": []}
        (t0, v0, a0), (t1, v1, a1) = inside[0], inside[-1]
        fps = (v1["framesDecoded"] - v0["framesDecoded"]) / (t1 - t0)
        freezes = v1["totalFreezesDuration"] - v0["totalFreezesDuration"]
        concealed = None
        if a0 and a1 and a1["totalSamplesReceived"] > a0["totalSamplesReceived"]:
            concealed = (a1["concealedSamples"] - a0["concealedSamples"]) / (a1["totalSamplesReceived"] - a0["totalSamplesReceived"])
        return {"samples": len(inside), "span": t1 - t0, "fps": fps, "freezes": freezes, "concealed": concealed,
                "widths": [v["frameWidth"] for _, v, _ in inside]}

    def row(self, index: int) -> str:
        """`WxH fps frz conc%` for sample `index`, rates from the previous sample."""
        t, v, a = self.samples[index]
        if not v:
            return f"{self.name}: -"
        prev = next((s for s in reversed(self.samples[:index]) if s[1]), None)
        fps = frz = conc = None
        if prev:
            dt = t - prev[0]
            fps = (v["framesDecoded"] - prev[1]["framesDecoded"]) / dt if dt > 0 else None
            frz = v["totalFreezesDuration"] - prev[1]["totalFreezesDuration"]
            if a and prev[2] and a["totalSamplesReceived"] > prev[2]["totalSamplesReceived"]:
                conc = (a["concealedSamples"] - prev[2]["concealedSamples"]) / (a["totalSamplesReceived"] - prev[2]["totalSamplesReceived"])
        fmt = lambda x, f: "  -" if x is None else format(x, f)  # noqa: E731
        return (f"{self.name}: {v['frameWidth']:>4}x{v['frameHeight']:<4}{fmt(fps, '5.1f')}fps "
                f"frz{fmt(frz, '4.2f')}s conc{fmt(None if conc is None else conc * 100, '5.1f')}%"
                + (" PAUSED" if v.get("paused") else ""))


def sent_row(stats: dict) -> str:
    layers = [s for s in stats.get("sent") or [] if s.get("kind") == "video"]
    parts = []
    for s in sorted(layers, key=lambda s: s.get("rid") or ""):
        if not s.get("active", True) or not s.get("frameWidth"):
            parts.append(f"{s.get('rid') or '-'}:off")
        else:
            limit = s.get("qualityLimitationReason")
            parts.append(f"{s.get('rid') or '-'}:{s['frameWidth']}@{s['framesPerSecond']:.0f}"
                         + ("" if limit in (None, "none") else f"({limit})"))
    return "P sends " + (" ".join(parts) or "-")


def smoothness(who: str, window: dict, min_fps: float, max_freezes: float, max_concealed: float) -> list[str]:
    """What `window` (Timeline.window) misses of a frame rate, freeze and concealment budget."""
    missed = []
    if window["fps"] < min_fps:
        missed.append(f"{who}: {window['fps']:.1f} fps < {min_fps}")
    if window["freezes"] is None or window["freezes"] >= max_freezes:
        missed.append(f"{who}: freezes {window['freezes']} s >= {max_freezes} s")
    if window["concealed"] is None or window["concealed"] >= max_concealed:
        missed.append(f"{who}: concealed audio {window['concealed']} >= {max_concealed:.0%}")
    return missed


def test_simulcast_layers_follow_each_subscribers_link(netns_pool, server_factory):
    ns_p, ns_a, ns_b, ns_c = (netns_pool.create() for _ in range(4))
    # The server listens on the publisher's host-side veth address; every namespace routes
    # 10.77.0.0/16 through its own veth, so each browser's traffic crosses its own shaped link.
    server = server_factory({"log.level": "warning"}, host=ns_p.host_ip)
    log_dir = Path(tempfile.mkdtemp(prefix="parley-adaptive-"))
    browsers: dict[str, NsChromium] = {}
    timelines = {name: Timeline(name) for name in "ABC"}
    publisher_rows: list[str] = []
    failures: list[str] = []
    c_dropped: list[int] = []
    try:
        browsers["P"] = NsChromium(ns_p, server.url, log_dir, "P", publish=True)
        browsers["P"].join(server.url, "adaptive")
        wait_until(lambda: any(s.get("bytesSent", 0) > 0 for s in browsers["P"].stats().get("sent") or []
                               if s.get("kind") == "video"), 30, "the publisher sending video")
        for name, ns in (("A", ns_a), ("B", ns_b), ("C", ns_c)):
            browsers[name] = NsChromium(ns, server.url, log_dir, name, publish=False)
            browsers[name].join(server.url, "adaptive")
        for name in "ABC":
            wait_until(lambda n=name: (main_video(browsers[n].stats()) or {}).get("framesDecoded", 0) > 20,
                       40, f"subscriber {name} decoding video")

        # The scenario, sampled once a second: actions happen at their time on its clock.
        actions = [
            (0.0, "B download 400 kbit/s, C 5 % UDP loss", lambda: (ns_b.shape("down", B_LIMIT_KBIT), ns_c.udp_loss(C_LOSS_PERCENT))),
            (B_WINDOW[1], "B limit lifted", lambda: ns_b.shape("down", None)),
            (ABC_WINDOW[1], "C loss lifted", lambda: (c_dropped.append(ns_c.udp_dropped()), ns_c.udp_loss(0))),
            (UPLINK_WINDOW[0] - 2.0, "P upload 600 kbit/s", lambda: ns_p.shape("up", UPLINK_KBIT)),
            (UPLINK_WINDOW[1], "P upload lifted", lambda: ns_p.shape("up", None)),
        ]
        start = time.monotonic()
        print(f"\n{ns_p!r} {ns_a!r} {ns_b!r} {ns_c!r}\ntimeline (per second: frame size, decoded fps, freeze s, concealed audio %)")
        tick = 0
        while True:
            now = time.monotonic() - start
            while actions and actions[0][0] <= now:
                _, what, act = actions.pop(0)
                act()
                print(f"t={now:5.1f}  >>> {what}")
            for name in "ABC":
                timelines[name].add(time.monotonic() - start, browsers[name].stats())
            publisher_rows.append(sent_row(browsers["P"].stats()))
            print(f"t={now:5.1f}  " + " | ".join(timelines[n].row(-1) for n in "ABC") + " | " + publisher_rows[-1], flush=True)
            if now >= END:
                break
            tick += 1
            time.sleep(max(0.0, start + tick - time.monotonic()))

        # -- the thresholds ------------------------------------------------------------------
        a = timelines["A"].window(A_SETTLED, ABC_WINDOW[1])
        top = sum(1 for w in a["widths"] if w >= 900)
        print(f"A {A_SETTLED:.0f}-{ABC_WINDOW[1]:.0f}s: {a['fps']:.1f} fps, top layer in {top}/{len(a['widths'])} samples, "
              f"freezes {a['freezes']}s")
        if not a["widths"] or top < 0.9 * len(a["widths"]):
            failures.append(f"A: not on the top layer (frameWidth >= 900 in {top} of {len(a['widths'])} samples; widths {sorted(set(a['widths']))})")
        if a["fps"] < 16:
            failures.append(f"A: {a['fps']:.1f} fps < 16")

        b = timelines["B"].window(*B_WINDOW)
        print(f"B {B_WINDOW[0]:.0f}-{B_WINDOW[1]:.0f}s at {B_LIMIT_KBIT} kbit/s: {b['fps']:.1f} fps, widths {sorted(set(b['widths']))}, "
              f"freezes {b['freezes']}s, concealed {b['concealed']}")
        if not b["widths"] or max(b["widths"]) > 480:
            failures.append(f"B (limited): frameWidth above 480 ({sorted(set(b['widths']))})")
        failures += smoothness("B (limited)", b, min_fps=10, max_freezes=1.5, max_concealed=0.03)
        recovered = next((t for t, v, _ in timelines["B"].between(B_WINDOW[1], B_WINDOW[1] + B_RECOVERY) if v["frameWidth"] >= 900), None)
        print(f"B back on the top layer: {'never' if recovered is None else f'{recovered - B_WINDOW[1]:.1f}s after the lift'}")
        if recovered is None:
            failures.append(f"B: not back on the top layer within {B_RECOVERY:.0f} s of the lift")

        c = timelines["C"].window(*ABC_WINDOW)
        print(f"C {ABC_WINDOW[0]:.0f}-{ABC_WINDOW[1]:.0f}s at {C_LOSS_PERCENT} % loss: {c['fps']:.1f} fps, freezes {c['freezes']}s, "
              f"concealed {c['concealed']}, nft dropped {c_dropped} packets")
        failures += smoothness("C (lossy)", c, min_fps=15, max_freezes=2.0, max_concealed=0.08)

        for name in "ABC":
            slices = []
            t = UPLINK_WINDOW[0]
            while t + MOVING_SLICE <= UPLINK_WINDOW[1] + 0.01:
                w = timelines[name].window(t, t + MOVING_SLICE)
                slices.append(w["fps"] * w.get("span", 0.0))
                t += MOVING_SLICE
            print(f"{name} frames decoded per {MOVING_SLICE:.0f} s while P's uplink is at {UPLINK_KBIT} kbit/s: {[round(n) for n in slices]}")
            if not slices or min(slices) <= 0:
                failures.append(f"{name}: video stopped while the publisher's uplink was held to {UPLINK_KBIT} kbit/s ({slices})")
    finally:
        for browser in browsers.values():
            browser.quit()
        print(f"chromedriver logs in {log_dir}; server log tail:\n{server.log_tail(15)}")
    if failures:
        pytest.fail("adaptive video thresholds missed:\n  " + "\n  ".join(failures), pytrace=False)


PAUSE_LIMIT_KBIT = 64  # over the audio, far under the one layer: B's video pauses
RESUME_WITHIN = 15.0


def test_video_paused_for_a_narrow_link_comes_back_when_the_link_frees(netns_pool, server_factory):
    """A subscriber whose every video track paused receives audio alone, which cannot show that
    its link freed up: the server must probe it (padding on the paused track's RTX stream) or the
    video never comes back. B's download is held under the lowest layer until its video pauses,
    then lifted: B must decode video again, and the probe bytes must show on /metrics. P sends one
    540p layer (no simulcast, so no small layer that the estimate's floor would still carry). While B's
    link is narrow its browser answers slowly (its driver is reached over that link), so the
    pause is read from the server."""
    from test_media_aiortc import metric

    ns_p, ns_b = netns_pool.create(), netns_pool.create()
    server = server_factory({"log.level": "warning"}, host=ns_p.host_ip)
    log_dir = Path(tempfile.mkdtemp(prefix="parley-resume-"))
    browsers: dict[str, NsChromium] = {}
    start = time.monotonic()

    def video_subscriptions() -> list[dict]:
        people = server.admin("GET", "/v1/rooms/resume/participants").json()
        people = people.get("participants", people) if isinstance(people, dict) else people
        b = next(p for p in people if p.get("name") == "B")
        media = server.admin("GET", f"/v1/rooms/resume/participants/{b['identity']}").json()
        videos = [s for s in media.get("subscriptions", []) if s.get("kind") == "video"]
        estimate = (media.get("downlink") or {}).get("estimate")
        print(f"t={time.monotonic() - start:5.1f}  B's estimate {estimate}, video "
              + ", ".join(f"layer {s['layer']}{' paused' if s['paused'] else ''}" for s in videos), flush=True)
        return videos

    try:
        browsers["P"] = NsChromium(ns_p, server.url, log_dir, "P", publish=True)
        browsers["P"].join(server.url, "resume", query="simulcast=0&camera=540p")
        browsers["B"] = NsChromium(ns_b, server.url, log_dir, "B", publish=False)
        browsers["B"].join(server.url, "resume")
        wait_until(lambda: (main_video(browsers["B"].stats()) or {}).get("framesDecoded", 0) > 20, 40, "B decoding video")

        ns_b.shape("down", PAUSE_LIMIT_KBIT)
        print(f"t={time.monotonic() - start:5.1f}  >>> B download {PAUSE_LIMIT_KBIT} kbit/s")
        wait_until(lambda: (v := video_subscriptions()) and all(s["paused"] for s in v), 40, "B's video paused for bandwidth")
        probed_before = metric(server, "parley_media_probe_bytes_total")
        # Paused, it stays paused while the link is narrow (over more than the longest wait between probes).
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            assert all(s["paused"] for s in video_subscriptions()), "B's video resumed on a link narrower than its lowest layer"
            time.sleep(1)

        # Only padding can probe B now (no video of it is forwarded to copy): what is sent to it
        # while paused is that.
        probed = metric(server, "parley_media_probe_bytes_total") - probed_before
        print(f"{probed:.0f} probe bytes sent while B's video was paused")
        assert probed > 0, "no probe bytes were sent to the paused subscriber"
        ns_b.shape("down", None)
        lifted = time.monotonic()
        print(f"t={lifted - start:5.1f}  >>> B limit lifted")
        wait_until(lambda: not any(s["paused"] for s in video_subscriptions()), RESUME_WITHIN,
                   f"B's video resumed within {RESUME_WITHIN:.0f} s of the lift")
        resumed = time.monotonic() - lifted
        def decoded() -> int:
            video_subscriptions()
            v = main_video(browsers["B"].stats()) or {}
            print(f"         B decoded {v.get('framesDecoded')} frames, {v.get('frameWidth')}x{v.get('frameHeight')}", flush=True)
            return v.get("framesDecoded", 0)

        frames = decoded()
        wait_until(lambda: decoded() > frames + 40, 15, "B decoding the resumed video")
        print(f"B's video back {resumed:.1f} s after the lift")
    finally:
        for browser in browsers.values():
            browser.quit()
        print(f"chromedriver logs in {log_dir}; server log tail:\n{server.log_tail(15)}")
