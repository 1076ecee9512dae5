"""Webhook delivery under load: participants join and leave many rooms as fast as signaling takes
them while a local receiver (LiveKit's own WebhookReceiver verifying every signature) counts what
arrives. Prints events per second delivered and the delay from each event to its delivery (the
receiver's clock against the event's `createdAt`, and the server's histogram).

    .venv/bin/python Benchmarks/webhook_load.py --parley .build/release/parley [--rooms 50 --participants 10]
"""
import argparse, asyncio, json, re, shutil, sys, tempfile, threading, time
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


try:
    started = time.time()
    asyncio.run(asyncio.wait_for(asyncio.gather(*(churn(r) for r in range(args.rooms))), 300))
    # Per room: room_started, a join and a leave per participant, room_finished (after 1 s empty).
    expected = args.rooms * (2 + 2 * args.participants)
    deadline = time.time() + 120
    while len(arrivals) < expected and time.time() < deadline:
        time.sleep(0.1)
    finished = max(t for t, _ in arrivals)
    delivered = len(arrivals)
    metrics = server.http("GET", "/metrics").text
    buckets = [(float(m.group(1)), float(m.group(2))) for m in
               re.finditer(r'parley_webhook_delivery_delay_seconds_bucket\{le="([0-9.e+-]+)"\} (\S+)', metrics)]
    count = float(re.search(r"parley_webhook_delivery_delay_seconds_count (\S+)", metrics).group(1))
    p99 = next((le for le, c in sorted(buckets) if c >= 0.99 * count), float("inf"))
    p50 = next((le for le, c in sorted(buckets) if c >= 0.5 * count), float("inf"))
    # Events are spread over the churn; the rate is over the span from the first to the last delivery.
    first = min(t for t, _ in arrivals)
    print(f"{args.rooms} rooms x {args.participants} participants joining and leaving: {delivered} of {expected} events "
          f"delivered, {len(refused)} refused by the receiver")
    print(f"delivery rate {delivered / max(0.001, finished - first):.0f} events/s over {finished - first:.1f} s "
          f"(churn took {finished - started:.1f} s in all)")
    print(f"delay event -> delivery (server histogram buckets): p50 <= {p50 * 1000:.0f} ms, p99 <= {p99 * 1000:.0f} ms")
finally:
    server.stop()
    receiver.shutdown()
    shutil.rmtree(folder, ignore_errors=True)
