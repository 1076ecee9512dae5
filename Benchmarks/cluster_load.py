"""One node against three: the same `parley loadtest` (rooms of publishers and subscribers with
real media) on a single node, then on a cluster of three nodes on one throwaway PostgreSQL with
every room's participants spread over the three (`--url` three times: the room's node serves
them, the other two relay their signaling). Prints join time p50/p99 and forwarded packets per
CPU-second of the server processes (all nodes together) for both.

    .venv/bin/python Benchmarks/cluster_load.py --parley .build/release/parley [--rooms 6 --publishers 2 --subscribers 4 --duration 30s]
"""
import argparse, json, os, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Tests" / "Interop"))
import postgres as pg
from conftest import ParleyServer

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--parley", default=str(REPO / ".build/release/parley"))
parser.add_argument("--rooms", type=int, default=6)
parser.add_argument("--publishers", type=int, default=2)
parser.add_argument("--subscribers", type=int, default=4)
parser.add_argument("--duration", default="30s")
parser.add_argument("--ramp", default="20/s")
parser.add_argument("--node-workers", type=int, default=0,
                    help="rtc.workers of each of the three nodes (0: the default, one per core); the single node keeps the default")
args = parser.parse_args()
args.parley = str(Path(args.parley).resolve())
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def run(nodes: list[ParleyServer], label: str) -> dict:
    before = [cpu_seconds(n.pid) for n in nodes]
    out = Path(tempfile.mkstemp(prefix="parley-cluster-load-", suffix=".json")[1])
    command = [args.parley, "loadtest", "--rooms", str(args.rooms), "--publishers", str(args.publishers),
               "--subscribers", str(args.subscribers), "--duration", args.duration, "--ramp", args.ramp,
               "--json", str(out)]
    for node in nodes:
        command += ["--url", node.ws_base]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    cpu = sum(cpu_seconds(n.pid) - b for n, b in zip(nodes, before))
    if done.returncode not in (0, 2):
        raise SystemExit(f"loadtest failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-2000:]}")
    report = json.loads(out.read_text())
    out.unlink()
    forwarded = report["server"].get("parley_media_forwarded_packets_total", 0)
    return {"label": label, "joins": report["joinsOK"], "failed": report["joinsFailed"], "join_p50": report["joinMs"]["p50"],
            "join_p99": report["joinMs"]["p99"], "loss": report["lossPercent"], "delay_p99": report["mediaDelayMs"]["p99"],
            "tones": f'{report["tonesDetected"]}/{report["tracksExpected"]}', "forwarded": forwarded, "cpu": cpu,
            "per_cpu_second": forwarded / cpu if cpu else 0, "by_node": report.get("joinsByNode", {}), "elapsed": elapsed}


folders: list[str] = []
servers: list[ParleyServer] = []
db = pg.ThrowawayPostgres().start()
try:
    common = {"cluster.leaseDuration": "2s", "cluster.renewInterval": "400ms", "log.level": "error", "node.drainTimeout": "1s"}

    def node(name: str) -> ParleyServer:
        folders.append(tempfile.mkdtemp(prefix="parley-cluster-load-"))
        sets = {"database.url": db.create_database() if name == "solo" else shared, "server.nodeName": name, **common}
        if name != "solo" and args.node_workers:
            sets["rtc.workers"] = str(args.node_workers)
        server = ParleyServer(args.parley, Path(folders[-1]), sets).start()
        servers.append(server)
        return server

    shared = db.create_database()
    solo = node("solo")
    results = [run([solo], "one")]
    solo.stop(signal.SIGINT)  # a plain stop
    trio = [node(f"node-{i}") for i in range(3)]
    time.sleep(1.5)  # each node sees the others
    results.append(run(trio, "three"))
    print(f"{args.rooms} rooms x ({args.publishers} publishers + {args.subscribers} subscribers), {args.duration} each")
    print(f"{'':8}{'joins':>8}{'join p50':>10}{'join p99':>10}{'loss %':>8}{'delay p99':>11}{'tones':>8}"
          f"{'forwarded':>11}{'CPU s':>8}{'pkts/CPU-s':>12}")
    for r in results:
        print(f"{r['label']:8}{r['joins']:>8}{r['join_p50']:>9.1f} {r['join_p99']:>9.1f} {r['loss']:>7.2f} {r['delay_p99']:>10.1f} "
              f"{r['tones']:>8}{r['forwarded']:>11.0f}{r['cpu']:>8.1f}{r['per_cpu_second']:>12.0f}")
    print("rooms' nodes (joins):", results[1]["by_node"])
finally:
    for server in servers:
        try:
            server.stop(signal.SIGINT)
        except Exception:
            server.kill()
    db.close()
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
