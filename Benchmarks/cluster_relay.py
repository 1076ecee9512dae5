"""Join and chat latency through a relaying node beside the room's own node: two nodes on a
throwaway PostgreSQL, 60 joins and 100 chat acks each way.

    .venv/bin/python Benchmarks/cluster_relay.py --parley .build/release/parley
"""
import argparse, asyncio, json, shutil, signal, sys, time, tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Tests" / "Interop"))
import postgres as pg
from conftest import ParleyServer, mint_token
import websockets

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--parley", default=str(REPO / ".build/release/parley"))
args = parser.parse_args()
args.parley = str(Path(args.parley).resolve())  # each node runs in its own folder
folders = [tempfile.mkdtemp(prefix="parley-relay-bench-") for _ in range(2)]
db = pg.ThrowawayPostgres().start()
url = db.create_database()
sets = {"database.url": url, "cluster.leaseDuration": "2s", "cluster.renewInterval": "400ms", "log.level": "error"}
a = ParleyServer(args.parley, Path(folders[0]), {**sets, "server.nodeName": "a"}).start()
b = ParleyServer(args.parley, Path(folders[1]), {**sets, "server.nodeName": "b"}).start()
time.sleep(1.5)

async def join(server, ident, room):
    t = time.perf_counter()
    ws = await websockets.connect(server.rtc_url(mint_token(ident, room)))
    j = json.loads(await ws.recv())
    dt = time.perf_counter() - t
    assert j["type"] == "joined", j
    return ws, dt

async def main():
    owner, _ = await join(a, "host", "lat")
    direct, relayed = [], []
    for i in range(60):
        ws, dt = await join(a, f"d{i}", "lat"); direct.append(dt); await ws.close()
        ws, dt = await join(b, f"r{i}", "lat"); relayed.append(dt); await ws.close()
    chat_d, chat_r = [], []
    wa, _ = await join(a, "cd", "lat"); wb, _ = await join(b, "cr", "lat")
    for i in range(100):
        for ws, out in ((wa, chat_d), (wb, chat_r)):
            t = time.perf_counter()
            await ws.send(json.dumps({"type": "chat.send", "id": f"x{i}", "text": "hi"}))
            while True:
                f = json.loads(await ws.recv())
                if f.get("re") == f"x{i}": break
            out.append(time.perf_counter() - t)
    q = lambda xs, p: sorted(xs)[int(p * (len(xs) - 1))] * 1000
    print(f"join direct p50 {q(direct,.5):.1f} p99 {q(direct,.99):.1f} ms; relayed p50 {q(relayed,.5):.1f} p99 {q(relayed,.99):.1f} ms")
    print(f"chat ack direct p50 {q(chat_d,.5):.2f} p99 {q(chat_d,.99):.2f} ms; relayed p50 {q(chat_r,.5):.2f} p99 {q(chat_r,.99):.2f} ms")

try:
    asyncio.run(main())
finally:
    a.stop(signal.SIGINT)  # a plain stop (SIGTERM would drain a onto b)
    b.stop(signal.SIGINT)
    db.close()
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
