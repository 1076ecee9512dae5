#!/usr/bin/env python3
"""Chat load test for Parley: many rooms, every member receives every message exactly once.

Starts its own server (--parley PATH) on a free 127.0.0.1 port with a temporary database, or uses a
running one (--url http://host:port). Opens rooms x per-room signaling connections with a bounded
concurrent ramp, then in every room the members take turns sending chat messages at --rate
messages per second. Each text carries its send time (time.perf_counter_ns, this process), so every
receiver records the delivery latency; senders record the chat.ack latency.

Exits 0 only if every join succeeded, every message was acked and reached every other member of
its room exactly once, and the p99 delivery latency is under --max-p99-ms (default 50).

    .venv/bin/python Benchmarks/chat_load.py --parley .build/release/parley
    .venv/bin/python Benchmarks/chat_load.py --url http://127.0.0.1:7880 --rooms 10 --duration 5

Needs the `websockets` package (Tests/Interop/requirements.txt).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

try:
    import websockets
except ImportError:  # pragma: no cover
    sys.exit("chat_load.py needs the websockets package: pip install -r Tests/Interop/requirements.txt")


# ---------------------------------------------------------------------------------------------
# Tokens and the server process


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint_token(key: str, secret: str, identity: str, room: str, ttl: int = 3600) -> str:
    now = int(time.time())
    claims = {
        "iss": key,
        "sub": identity,
        "nbf": now - 10,
        "exp": now + ttl,
        "name": identity,
        "metadata": "",
        "grants": {
            "room": room,
            "join": True,
            "publish": False,
            "subscribe": True,
            "chat": True,
            "admin": False,
            "record": False,
            "hidden": False,
        },
    }
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64url(sig)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


class OwnServer:
    def __init__(self, binary: str, extra_sets: list[str]):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="parley-load-")
        self.port = free_port()
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        args = [
            binary, "serve", "--dev", "--host", "127.0.0.1", "--port", str(self.port),
            "--set", f"store.path={os.path.join(self.dir, 'parley.sqlite')}",
            "--set", "log.level=warning",
        ]
        for s in extra_sets:
            args += ["--set", s]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 15
        while not http_ok(self.url + "/readyz"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit(f"parley did not become ready; see {self.log.name}")
            time.sleep(0.05)

    def usage(self) -> tuple[float, float, float]:
        """(cpu seconds, rss MiB, peak rss MiB) from /proc."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)
        rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20  # field 24
        peak = 0.0
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) / 1024
        return cpu, rss, peak

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                print("warning: parley did not exit within 10 s of SIGTERM; killing it", file=sys.stderr)
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        print(f"warning: RLIMIT_NOFILE hard limit {hard} is below the {needed} needed", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Load


def pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


@dataclass
class Member:
    room: int
    index: int
    identity: str
    ws: object = None
    reader: asyncio.Task | None = None
    seen: set = field(default_factory=set)
    closed_early: str | None = None


@dataclass
class Stats:
    joins_ok: int = 0
    joins_failed: int = 0
    join_errors: dict = field(default_factory=dict)
    join_ms: list = field(default_factory=list)
    sent: int = 0
    send_failed: int = 0
    acked: int = 0
    ack_errors: dict = field(default_factory=dict)
    ack_ms: list = field(default_factory=list)
    expected: int = 0
    received: int = 0
    duplicated: int = 0
    unexpected: int = 0
    delivery_ms: list = field(default_factory=list)
    dropped: int = 0


class Load:
    def __init__(self, args, ws_base: str):
        self.args = args
        self.ws_base = ws_base
        self.run_id = uuid.uuid4().hex[:6]
        self.stats = Stats()
        self.rooms: list[list[Member]] = [
            [Member(r, i, f"u{r:03d}-{i:02d}") for i in range(args.per_room)] for r in range(args.rooms)
        ]
        self.pending: dict[str, int] = {}  # request id -> send time (ns)
        self.expected_by_msg: dict[str, int] = {}  # clientMsgId -> receivers expected
        self.received_by_msg: dict[str, int] = {}
        self.outstanding = 0  # deliveries still expected
        self.all_delivered = asyncio.Event()
        self.pad = "x" * max(0, args.size)

    def room_name(self, r: int) -> str:
        return f"load-{self.run_id}-{r:03d}"

    # -- connections ---------------------------------------------------------------------------

    async def join(self, m: Member, sem: asyncio.Semaphore) -> None:
        token = mint_token(self.args.key, self.args.secret, m.identity, self.room_name(m.room))
        async with sem:
            t0 = time.perf_counter_ns()
            try:
                ws = await websockets.connect(
                    f"{self.ws_base}/v1/rtc?token={token}",
                    open_timeout=10, close_timeout=3, ping_interval=None, compression=None, max_queue=None,
                )
            except Exception as err:  # noqa: BLE001 - any failure is a failed join
                self.join_failed(m, type(err).__name__)
                return
            try:
                first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            except Exception as err:  # noqa: BLE001
                self.join_failed(m, type(err).__name__)
                ws.transport.abort()
                return
            if first.get("type") != "joined":
                self.join_failed(m, f"{first.get('type')}:{first.get('code')}")
                ws.transport.abort()
                return
            self.stats.join_ms.append((time.perf_counter_ns() - t0) / 1e6)
            self.stats.joins_ok += 1
            m.ws = ws
            m.reader = asyncio.create_task(self.read(m))

    def join_failed(self, m: Member, why: str) -> None:
        self.stats.joins_failed += 1
        self.stats.join_errors[why] = self.stats.join_errors.get(why, 0) + 1

    async def read(self, m: Member) -> None:
        st = self.stats
        try:
            async for raw in m.ws:
                now = time.perf_counter_ns()
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "chat":
                    msg = frame["message"]
                    cid = msg.get("clientMsgId", "")
                    if (
                        cid not in self.expected_by_msg
                        or not cid.startswith(f"r{m.room:03d}-")
                        or msg.get("from", {}).get("identity") == m.identity
                    ):
                        st.unexpected += 1
                        continue
                    if cid in m.seen:
                        st.duplicated += 1
                        continue
                    m.seen.add(cid)
                    st.received += 1
                    text = msg["text"]
                    sent_ns = int(text[text.index("t=") + 2 : text.index(";")])
                    st.delivery_ms.append((now - sent_ns) / 1e6)
                    self.outstanding -= 1
                    if self.outstanding == 0 and self.sending_done:
                        self.all_delivered.set()
                elif kind == "chat.ack":
                    sent_ns = self.pending.pop(frame.get("re"), None)
                    if sent_ns is not None:
                        st.acked += 1
                        st.ack_ms.append((now - sent_ns) / 1e6)
                elif kind == "error":
                    if self.pending.pop(frame.get("re"), None) is not None:
                        code = frame.get("code", "?")
                        st.ack_errors[code] = st.ack_errors.get(code, 0) + 1
                        self.unsend(frame["re"])
        except websockets.ConnectionClosed as err:
            if not self.closing:
                m.closed_early = f"closed {err.rcvd.code if err.rcvd else '?'}"
        except Exception as err:  # noqa: BLE001
            m.closed_early = repr(err)
        if m.closed_early and not self.closing:
            self.stats.dropped += 1

    def unsend(self, rid: str) -> None:
        """A refused message is not expected anywhere."""
        cid = rid.split("/", 1)[1]
        n = self.expected_by_msg.pop(cid, 0)
        self.outstanding -= n
        self.stats.expected -= n

    # -- sending -------------------------------------------------------------------------------

    async def room_sender(self, r: int, t_start: float, t_end: float) -> None:
        members = [m for m in self.rooms[r] if m.ws is not None]
        if not members:
            return
        interval = 1.0 / self.args.rate
        t = t_start + random.random() * interval  # spread rooms over the interval
        k = 0
        loop = asyncio.get_running_loop()
        while t < t_end:
            delay = t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sender = members[k % len(members)]
            receivers = sum(1 for m in members if m is not sender and m.ws is not None and not m.closed_early)
            cid = f"r{r:03d}-{k:06d}"
            rid = f"{sender.identity}/{cid}"
            self.expected_by_msg[cid] = receivers
            self.stats.expected += receivers
            self.outstanding += receivers
            ns = time.perf_counter_ns()
            self.pending[rid] = ns
            payload = json.dumps(
                {"type": "chat.send", "id": rid, "clientMsgId": cid, "text": f"t={ns};{self.pad}"}
            )
            try:
                await sender.ws.send(payload)
                self.stats.sent += 1
            except Exception:  # noqa: BLE001
                self.stats.send_failed += 1
                self.pending.pop(rid, None)
                self.unsend(rid)
            k += 1
            t += interval

    # -- run -----------------------------------------------------------------------------------

    async def run(self, usage=None) -> dict:
        args = self.args
        self.closing = False
        self.sending_done = False
        members = [m for room in self.rooms for m in room]
        sem = asyncio.Semaphore(args.ramp_concurrency)
        t0 = time.monotonic()
        await asyncio.gather(*(self.join(m, sem) for m in members))
        ramp_s = time.monotonic() - t0
        print(f"ramp: {self.stats.joins_ok}/{len(members)} joined in {ramp_s:.2f} s", flush=True)
        await asyncio.sleep(args.settle)  # let participant.joined fan-out finish
        before = usage() if usage else None

        loop = asyncio.get_running_loop()
        t_start = loop.time() + 0.1
        t_end = t_start + args.duration
        await asyncio.gather(*(self.room_sender(r, t_start, t_end) for r in range(args.rooms)))
        self.sending_done = True
        if self.outstanding <= 0:
            self.all_delivered.set()
        try:
            await asyncio.wait_for(self.all_delivered.wait(), args.drain)
        except asyncio.TimeoutError:
            pass
        # Acks may trail the last delivery slightly.
        deadline = time.monotonic() + 2
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        after = usage() if usage else None

        self.closing = True
        close_sem = asyncio.Semaphore(200)

        async def close(m: Member):
            if m.ws is None:
                return
            async with close_sem:
                try:
                    await asyncio.wait_for(m.ws.close(), 5)
                except Exception:  # noqa: BLE001
                    m.ws.transport.abort()
            if m.reader:
                m.reader.cancel()

        await asyncio.gather(*(close(m) for m in members), return_exceptions=True)
        return {"ramp_s": ramp_s, "usage_before": before, "usage_after": after}


def summarize(args, load: Load, info: dict, server_usage_start) -> int:
    st = load.stats
    missing = st.expected - st.received
    unacked = len(load.pending)
    ack = sorted(st.ack_ms)
    dl = sorted(st.delivery_ms)
    join = sorted(st.join_ms)

    def line(name, values):
        if not values:
            return f"{name:<18} (none)"
        return (
            f"{name:<18} p50 {pct(values, 50):8.2f}  p95 {pct(values, 95):8.2f}  "
            f"p99 {pct(values, 99):8.2f}  max {values[-1]:8.2f}  ms  (n={len(values)})"
        )

    print()
    print("=== Parley chat load ===")
    print(
        f"rooms {args.rooms} x {args.per_room} participants, {args.rate:g} msg/s per room, "
        f"{args.duration:g} s, text {args.size + 22} B"
    )
    print(f"joins              ok {st.joins_ok}  failed {st.joins_failed}"
          + (f"  {st.join_errors}" if st.join_errors else "") + f"  (ramp {info['ramp_s']:.2f} s)")
    print(line("join latency", join))
    print(f"messages           sent {st.sent}  acked {st.acked}  refused {sum(st.ack_errors.values())}"
          + (f" {st.ack_errors}" if st.ack_errors else "") + f"  unacked {unacked}  send failures {st.send_failed}")
    print(f"deliveries         expected {st.expected}  received {st.received}  duplicated {st.duplicated}  "
          f"missing {missing}  unexpected {st.unexpected}")
    if st.dropped:
        print(f"connections dropped during the run: {st.dropped}")
    print(line("ack latency", ack))
    print(line("delivery latency", dl))
    if info.get("usage_after"):
        cpu0, _, _ = server_usage_start
        cpu_b, rss_b, _ = info["usage_before"]
        cpu_a, rss_a, peak = info["usage_after"]
        run_s = args.duration
        print(
            f"server             RSS {rss_a:.1f} MiB (after ramp {rss_b:.1f}, peak {peak:.1f}); "
            f"CPU {cpu_a - cpu0:.2f} s total, {cpu_a - cpu_b:.2f} s during the send phase "
            f"({100 * (cpu_a - cpu_b) / run_s:.0f}% of one core)"
        )

    failures = []
    if st.joins_failed:
        failures.append(f"{st.joins_failed} joins failed")
    if st.ack_errors or unacked or st.send_failed:
        failures.append("not every message was accepted and acked")
    if missing:
        failures.append(f"{missing} deliveries missing")
    if st.duplicated:
        failures.append(f"{st.duplicated} duplicate deliveries")
    if st.unexpected:
        failures.append(f"{st.unexpected} unexpected deliveries")
    if st.dropped:
        failures.append(f"{st.dropped} connections dropped")
    if not dl or pct(dl, 99) >= args.max_p99_ms:
        failures.append(f"p99 delivery latency {pct(dl, 99):.2f} ms is not under {args.max_p99_ms:g} ms")
    if st.sent == 0:
        failures.append("nothing was sent")
    print("RESULT: " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    return 0 if not failures else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = ap.add_mutually_exclusive_group(required=True)
    target.add_argument("--parley", metavar="PATH", help="start this parley binary on a free port with a temp DB")
    target.add_argument("--url", help="use a running server, e.g. http://127.0.0.1:7880")
    ap.add_argument("--rooms", type=int, default=100)
    ap.add_argument("--per-room", type=int, default=10)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of sending")
    ap.add_argument("--rate", type=float, default=2.0, help="messages per second per room")
    ap.add_argument("--size", type=int, default=64, help="padding bytes added to each text")
    ap.add_argument("--ramp-concurrency", type=int, default=50, help="joins in flight at once")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds to wait between ramp and sending")
    ap.add_argument("--drain", type=float, default=10.0, help="seconds to wait for the last deliveries")
    ap.add_argument("--max-p99-ms", type=float, default=50.0)
    ap.add_argument("--key", default="devkey")
    ap.add_argument("--secret", default="secret")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra server option when starting with --parley (repeatable)")
    args = ap.parse_args()
    if args.rate <= 0 or args.rooms <= 0 or args.per_room < 2:
        ap.error("need --rate > 0, --rooms > 0 and --per-room >= 2")

    raise_nofile(args.rooms * args.per_room * 2 + 512)  # also inherited by a server we start
    server = None
    if args.parley:
        server = OwnServer(args.parley, args.set)
        base = server.url
        print(f"started {args.parley} (pid {server.proc.pid}) on {base}", flush=True)
    else:
        base = args.url.rstrip("/")
        if not http_ok(base + "/readyz", timeout=5):
            print(f"{base}/readyz is not 200", file=sys.stderr)
            return 2
    ws_base = "ws" + base[4:] if base.startswith("http") else base
    try:
        usage_start = server.usage() if server else None
        load = Load(args, ws_base)
        info = asyncio.run(load.run(server.usage if server else None))
        return summarize(args, load, info, usage_start)
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
