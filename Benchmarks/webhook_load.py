"""Webhook delivery under load, to a local receiver that verifies every signature with LiveKit's
own WebhookReceiver. Latency: participants join and leave many rooms as fast as signaling takes
them while the receiver is up; the server's histogram gives the delay from each event to its
delivery. Throughput: the same churn while the receiver is down leaves a backlog in the outbox;
after a restart of the server with the receiver up, the backlog drains at full speed.

    .venv/bin/python Benchmarks/webhook_load.py --parley .build/release/parley [--rooms 50 --participants 10]
"""
import argparse, asyncio, json, re, shutil, signal, sys, tempfile, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Tests" / "Interop"))
from conftest import API_KEY, API_SECRET, ParleyServer, free_port, mint_token
import websockets
from livekit import api

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--parley", default=str(REPO / ".build/release/parley"))
parser.add_argument("--rooms", type=int, default=50)
parser.add_argument("--participants", type=int, default=10)
args = parser.parse_args()
args.parley = str(Path(args.parley).resolve())

verifier = api.WebhookReceiver(api.TokenVerifier(API_KEY, API_SECRET))
arrivals: list[tuple[float, str]] = []
refused: list[str] = []
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        try:
            event = verifier.receive(body, self.headers.get("Authorization", ""))
            with lock:
                arrivals.append((time.time(), event.event))
        except Exception as err:
            refused.append(str(err))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


port = free_port()
receiver = ThreadingHTTPServer(("127.0.0.1", port), Handler)
threading.Thread(target=receiver.serve_forever, daemon=True).start()
folder = tempfile.mkdtemp(prefix="parley-webhook-bench-")
server = ParleyServer(args.parley, Path(folder), {"webhook.urls": f"http://127.0.0.1:{port}/hook", "room.emptyTimeout": "1s",
                                                  "log.level": "error"}).start()


async def churn(room: int):
    sockets = []
    for n in range(args.participants):
        ws = await websockets.connect(server.rtc_url(mint_token(f"p{n}", f"bench-{room}")))
        assert json.loads(await ws.recv())["type"] == "joined"
        sockets.append(ws)
    for ws in sockets:
        await ws.send(json.dumps({"type": "leave"}))
        await ws.close()


def churn_all():
    async def everyone():
        await asyncio.wait_for(asyncio.gather(*(churn(r) for r in range(args.rooms))), 300)

    asyncio.run(everyone())


def wait_for_arrivals(count: int, timeout: float):
    deadline = time.time() + timeout
    while len(arrivals) < count and time.time() < deadline:
        time.sleep(0.05)


expected = args.rooms * (2 + 2 * args.participants)  # room_started, a join and a leave each, room_finished
try:
    churn_all()
    wait_for_arrivals(expected, 120)
    metrics = server.http("GET", "/metrics").text
    buckets = [(float(m.group(1)), float(m.group(2))) for m in
               re.finditer(r'parley_webhook_delivery_delay_seconds_bucket\{le="([0-9.e+-]+)"\} (\S+)', metrics)]
    count = float(re.search(r"parley_webhook_delivery_delay_seconds_count (\S+)", metrics).group(1))
    p99 = next((le for le, c in sorted(buckets) if c >= 0.99 * count), float("inf"))
    p50 = next((le for le, c in sorted(buckets) if c >= 0.5 * count), float("inf"))
    print(f"latency: {args.rooms} rooms x {args.participants} participants joining and leaving, {len(arrivals)} of {expected} "
          f"events delivered, {len(refused)} refused by the receiver; event -> delivery p50 <= {p50 * 1000:.0f} ms, "
          f"p99 <= {p99 * 1000:.0f} ms (histogram buckets)")

    # Throughput: a backlog made while the receiver is down, drained after a restart.
    receiver.shutdown()
    receiver.server_close()
    arrivals.clear()
    churn_all()
    time.sleep(1.5)  # the last rooms finish (room.emptyTimeout)
    server.stop(signal.SIGINT)
    receiver = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    time.sleep(2.5)  # every retry is due by now (at most two failures each: 1 s, 2 s)
    server.start(server.port)
    wait_for_arrivals(expected, 120)
    times = sorted(t for t, _ in arrivals)
    # Retries fall due over a few seconds (1, 2, 4 s after each failure): the rate that counts is
    # the busiest second of the drain.
    peak = max(sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times))
    print(f"throughput: a backlog of {expected} events drained in {times[-1] - times[0]:.2f} s after the restart "
          f"({len(arrivals)} delivered, {len(refused)} refused); busiest second {peak} events/s")
finally:
    server.stop(signal.SIGINT)
    receiver.shutdown()
    shutil.rmtree(folder, ignore_errors=True)
