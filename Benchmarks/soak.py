#!/usr/bin/env python3
"""A long day for Parley: media load plus churn, with the server's health sampled throughout.

Starts its own server (--parley PATH, dev mode on a free 127.0.0.1 port, a temporary store), then
for --minutes runs:
  - `parley loadtest` (--rooms x --publishers x --subscribers, tones, optionally video, chat);
  - churn in --churn-rooms rooms: a participant joins every --churn-every seconds, sends a chat
    message (its ack kept), stays a few seconds and goes, half of them by a clean `leave`, the
    others by dropping the connection (the server holds them for the resume window);
  - a recording started and stopped in the first churn room every --record-every seconds.
Every --sample seconds it reads the server's resident memory, open descriptors, threads and the
forwarding delay p99 over the interval (from /metrics), and prints a line.

It fails (exit 1) when, after the warm-up (--warmup, default a fifth of the run), resident memory
grows past --rss-growth-mb or descriptors past --fd-growth above their warm-up values, when a
recording does not end `stopped`, or when any acked chat message is missing from the room's
history at the end. It writes the samples as JSON and a picture (resident memory and delay over
time, SVG) beside them (--out, default .build/soak).

    make soak                                  # 30 minutes, release build
    .venv/bin/python Benchmarks/soak.py --parley .build/debug/parley --minutes 2 --sample 5

Needs the `websockets` package (Tests/Interop/requirements.txt).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chat_load import OwnServer, mint_token  # noqa: E402  (the same server and token helpers)

try:
    import websockets
except ImportError:  # pragma: no cover
    sys.exit("soak.py needs the websockets package: pip install -r Tests/Interop/requirements.txt")

API_KEY, API_SECRET = "devkey", "secret"


def admin_token() -> str:
    """A token with the admin and record grants, for the REST API."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"iss": API_KEY, "sub": "soak-admin", "nbf": now - 10, "exp": now + 86_400,
              "grants": {"join": False, "admin": True, "record": True}}
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(API_SECRET.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


def http(method: str, url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


# ---------------------------------------------------------------------------------------------
# What is sampled


def process_health(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = {line.split(":")[0]: line.split(":")[1].strip() for line in status.splitlines() if ":" in line}
    return {
        "rssMB": int(fields["VmRSS"].split()[0]) / 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(fields["Threads"]),
    }


def delay_buckets(metrics_text: str) -> list[tuple[float, int]]:
    buckets = []
    for line in metrics_text.splitlines():
        if line.startswith("parley_media_forwarding_delay_seconds_bucket{le=\""):
            bound = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), int(float(line.rsplit(" ", 1)[1]))))
    return buckets


def p99_between(before: list[tuple[float, int]], after: list[tuple[float, int]]) -> float | None:
    """The p99 forwarding delay (ms) of the packets forwarded between two scrapes."""
    if not before or len(before) != len(after):
        return None
    deltas = [(bound, a - b) for (bound, a), (_, b) in zip(after, before)]
    total = deltas[-1][1]
    if total <= 0:
        return None
    for bound, count in deltas:
        if count >= 0.99 * total:
            return bound * 1000 if bound != float("inf") else None
    return None


# ---------------------------------------------------------------------------------------------
# Churn, chat and recordings


class Churn:
    def __init__(self, ws_base: str, rooms: int, every: float):
        self.ws_base = ws_base
        self.rooms = [f"churn-{i}" for i in range(rooms)]
        self.every = every
        self.acked: dict[str, list[str]] = {room: [] for room in self.rooms}
        self.joins = 0
        self.failures: list[str] = []

    async def visit(self, n: int) -> None:
        room = self.rooms[n % len(self.rooms)]
        identity = f"visitor-{n}"
        url = f"{self.ws_base}/v1/rtc?token={mint_token(API_KEY, API_SECRET, identity, room)}"
        try:
            async with websockets.connect(url, open_timeout=10, close_timeout=2, max_size=2**22) as ws:
                joined = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if joined.get("type") != "joined":
                    self.failures.append(f"{identity}: first frame {joined}")
                    return
                self.joins += 1
                request_id = f"chat-{n}"
                await ws.send(json.dumps({"type": "chat.send", "id": request_id, "clientMsgId": str(uuid.uuid4()),
                                          "text": f"hello from {identity}"}))
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
                    if frame.get("re") == request_id:
                        if frame["type"] == "chat.ack":
                            self.acked[room].append(frame["message"]["id"])
                        else:
                            self.failures.append(f"{identity}: chat refused {frame}")
                        break
                # Stay a while, reading what the room sends.
                stay_until = time.monotonic() + random.uniform(2, 10)
                while time.monotonic() < stay_until:
                    try:
                        await asyncio.wait_for(ws.recv(), max(0.05, stay_until - time.monotonic()))
                    except asyncio.TimeoutError:
                        break
                if n % 2 == 0:
                    await ws.send(json.dumps({"type": "leave"}))
                else:
                    ws.transport.abort()  # dropped: held for the resume window, then gone
        except Exception as error:  # noqa: BLE001  (every failure is reported at the end)
            self.failures.append(f"{identity}: {error!r}")

    async def run(self, until: float) -> None:
        visits = []
        n = 0
        while time.monotonic() < until:
            visits.append(asyncio.create_task(self.visit(n)))
            n += 1
            await asyncio.sleep(self.every)
        await asyncio.gather(*visits)


async def record_now_and_then(base: str, room: str, every: float, until: float, results: list[dict]) -> None:
    token = admin_token()
    while time.monotonic() + every < until:
        await asyncio.sleep(every)
        status, started = await asyncio.to_thread(http, "POST", f"{base}/v1/rooms/{room}/recordings", token, {"mode": "tracks"})
        if status != 201:
            results.append({"error": f"start {status} {started}"})
            continue
        await asyncio.sleep(min(10.0, every / 2))
        status, stopped = await asyncio.to_thread(http, "POST", f"{base}/v1/recordings/{started['id']}/stop", token)
        results.append(stopped if status == 200 else {"error": f"stop {status} {stopped}"})


async def sample(server: OwnServer, every: float, until: float, samples: list[dict], started: float) -> None:
    previous = []
    while True:
        metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(server.url + "/metrics", timeout=10).read().decode())
        buckets = delay_buckets(metrics)
        entry = {"t": round(time.monotonic() - started, 1), **process_health(server.proc.pid), "delayP99Ms": p99_between(previous, buckets)}
        previous = buckets
        samples.append(entry)
        delay = "-" if entry["delayP99Ms"] is None else f"{entry['delayP99Ms']:.2f} ms"
        print(f"[soak] {entry['t']:7.0f} s  rss {entry['rssMB']:7.1f} MiB  fds {entry['fds']:4d}  threads {entry['threads']:3d}  "
              f"delay p99 {delay}", flush=True)
        if time.monotonic() >= until:
            return
        await asyncio.sleep(min(every, max(0.0, until - time.monotonic())))


# ---------------------------------------------------------------------------------------------
# The picture


def svg(samples: list[dict], warmup: float, title: str) -> str:
    width, height, left, right, top, panel, gap = 900, 560, 70, 20, 70, 190, 60
    end = max(s["t"] for s in samples) or 1

    def x(t: float) -> float:
        return left + (width - left - right) * t / end

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{left}" y="22" font-size="15">{title}</text>']
    for index, (key, label, color) in enumerate([("rssMB", "resident memory (MiB)", "#1f6feb"),
                                                 ("delayP99Ms", "forwarding delay p99 (ms)", "#d1242f")]):
        y0 = top + index * (panel + gap)
        values = [s[key] for s in samples if s[key] is not None]
        high = max(values) * 1.15 if values else 1
        high = high or 1

        def y(v: float) -> float:
            return y0 + panel - panel * v / high

        parts.append(f'<rect x="{left}" y="{y0}" width="{width - left - right}" height="{panel}" fill="none" stroke="#999"/>')
        parts.append(f'<text x="{left}" y="{y0 - 6}">{label}</text>')
        for fraction in (0, 0.5, 1):
            value = high * fraction
            text = f"{value:.2f}" if high < 10 else f"{value:.0f}"
            parts.append(f'<text x="{left - 8}" y="{y(value) + 4}" text-anchor="end">{text}</text>')
        parts.append(f'<line x1="{x(warmup)}" y1="{y0}" x2="{x(warmup)}" y2="{y0 + panel}" stroke="#bbb" stroke-dasharray="4 3"/>')
        points = " ".join(f"{x(s['t']):.1f},{y(s[key]):.1f}" for s in samples if s[key] is not None)
        if points:
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
    axis_y = top + 2 * panel + gap + 18
    for fraction in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<text x="{x(end * fraction)}" y="{axis_y}" text-anchor="middle">{end * fraction / 60:.1f} min</text>')
    parts.append(f'<text x="{x(warmup) + 4}" y="{top + 14}" fill="#888">warm-up ends</text>')
    parts.append("</svg>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parley", default=".build/release/parley")
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--sample", type=float, default=10, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before growth is judged (default: a fifth of the run)")
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--subscribers", type=int, default=3)
    parser.add_argument("--video", action="store_true", help="publishers also send synthetic VP8")
    parser.add_argument("--chat-rate", type=float, default=1.0, help="loadtest chat messages per second per room")
    parser.add_argument("--churn-rooms", type=int, default=3)
    parser.add_argument("--churn-every", type=float, default=2.0, help="seconds between churn joins")
    parser.add_argument("--record-every", type=float, default=30.0)
    parser.add_argument("--rss-growth-mb", type=float, default=64.0)
    parser.add_argument("--fd-growth", type=int, default=64)
    parser.add_argument("--out", default=".build/soak")
    args = parser.parse_args()

    seconds = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else seconds / 5
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # The resume window short, so dropped visitors leave within the run.
    server = OwnServer(args.parley, ["signaling.resumeWindow=5s", "room.emptyTimeout=30s", "http.rateLimit.perSecond=0"])
    ws_base = server.url.replace("http", "ws")
    loadtest = subprocess.Popen(
        [args.parley, "loadtest", "--url", ws_base, "--rooms", str(args.rooms), "--publishers", str(args.publishers),
         "--subscribers", str(args.subscribers), "--duration", f"{int(seconds)}s", "--chat-rate", str(args.chat_rate),
         "--ramp", "20/s"] + (["--video"] if args.video else []),
        stdout=open(out / "loadtest.log", "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    samples: list[dict] = []
    recordings: list[dict] = []
    churn = Churn(ws_base, args.churn_rooms, args.churn_every)
    started = time.monotonic()
    until = started + seconds
    print(f"[soak] {args.minutes:g} min: loadtest {args.rooms}x{args.publishers}x{args.subscribers}"
          f"{' with video' if args.video else ''}, churn every {args.churn_every:g} s in {args.churn_rooms} rooms, "
          f"a recording every {args.record_every:g} s; server log {server.log.name}", flush=True)

    async def run_all() -> None:
        await asyncio.gather(
            churn.run(until),
            record_now_and_then(server.url, churn.rooms[0], args.record_every, until, recordings),
            sample(server, args.sample, until, samples, started))

    failures: list[str] = []
    try:
        asyncio.run(run_all())
        try:
            loadtest.wait(timeout=60)
        except subprocess.TimeoutExpired:
            loadtest.kill()
            failures.append("the loadtest did not end")
        if loadtest.returncode not in (0, None):
            failures.append(f"the loadtest exited {loadtest.returncode} (see {out / 'loadtest.log'})")
        # Every acked chat message is in its room's history.
        token = admin_token()
        for room, acked in churn.acked.items():
            seen: set[str] = set()
            after = 0
            while True:
                status, page = http("GET", f"{server.url}/v1/rooms/{room}/messages?limit=500&after={after}", token)
                if status != 200:
                    failures.append(f"history of {room}: HTTP {status} {page}")
                    break
                seen.update(m["id"] for m in page["messages"])
                if not page["messages"] or not page.get("hasMore"):
                    break
                after = page["messages"][-1]["seq"]
            missing = [m for m in acked if m not in seen]
            if missing:
                failures.append(f"{room}: {len(missing)} of {len(acked)} acked messages missing, e.g. {missing[:3]}")
    finally:
        if loadtest.poll() is None:
            loadtest.kill()
        server.stop()

    acked_total = sum(len(v) for v in churn.acked.values())
    failures += [f"churn: {f}" for f in churn.failures[:5]]
    failures += [f"recording: {r}" for r in recordings if r.get("error") or r.get("state") != "stopped"][:5]
    judged = [s for s in samples if s["t"] >= warmup]
    base = next((s for s in samples if s["t"] >= warmup), samples[-1] if samples else None)
    summary = {"minutes": args.minutes, "samples": samples, "warmupSeconds": warmup, "churnJoins": churn.joins,
               "chatAcked": acked_total, "recordings": len(recordings)}
    if base and judged:
        rss_growth = max(s["rssMB"] for s in judged) - base["rssMB"]
        fd_growth = max(s["fds"] for s in judged) - base["fds"]
        delays = [s["delayP99Ms"] for s in samples if s["delayP99Ms"] is not None]
        summary.update({"rssAtWarmupMB": base["rssMB"], "rssGrowthMB": rss_growth, "fdsAtWarmup": base["fds"], "fdGrowth": fd_growth,
                        "maxThreads": max(s["threads"] for s in samples), "worstDelayP99Ms": max(delays) if delays else None})
        if rss_growth > args.rss_growth_mb:
            failures.append(f"resident memory grew {rss_growth:.1f} MiB after the warm-up (bound {args.rss_growth_mb:g})")
        if fd_growth > args.fd_growth:
            failures.append(f"open descriptors grew by {fd_growth} after the warm-up (bound {args.fd_growth})")
    else:
        failures.append("no samples after the warm-up")
    summary["failures"] = failures
    (out / "soak.json").write_text(json.dumps(summary, indent=1))
    if samples:
        (out / "soak.svg").write_text(svg(samples, warmup, f"Parley soak, {args.minutes:g} min: resident memory and forwarding delay"))
    print(f"[soak] {churn.joins} churn joins, {acked_total} acked chat messages all in history: {not any('missing' in f for f in failures)}, "
          f"{len(recordings)} recordings; rss growth {summary.get('rssGrowthMB', 0):.1f} MiB, fd growth {summary.get('fdGrowth', 0)}, "
          f"worst delay p99 {summary.get('worstDelayP99Ms')} ms; {out / 'soak.svg'}")
    for failure in failures:
        print(f"[soak] FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
