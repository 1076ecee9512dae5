"""Self-test of netns.py: a tbf really holds a namespace's link to its rate (both directions, a
rate changed at run time, then lifted), nftables drops about the asked share of arriving UDP,
and nothing is left behind: not by a closed pool, nor by a dead run (the sweep)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import netns

PAYLOAD = 1000
# tbf counts the Ethernet frame: payload + UDP 8 + IPv4 20 + Ethernet 14.
WIRE = PAYLOAD + 42

RECEIVER = r"""
import json, socket, sys, time
host, port, idle = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind((host, port))
print("ready", flush=True)
s.settimeout(10.0)
arrivals = []
try:
    while True:
        data = s.recv(65536)
        arrivals.append((time.monotonic(), len(data)))
        s.settimeout(idle)
except socket.timeout:
    pass
print(json.dumps(arrivals), flush=True)
"""

SENDER = r"""
import socket, sys, time
host, port, kbit, seconds, size = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
interval = size * 8 / (kbit * 1000)
start = time.monotonic(); sent = 0
while time.monotonic() - start < seconds:
    due = start + sent * interval
    delay = due - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    try:
        s.sendto(bytes(size), (host, port)); sent += 1
    except OSError:
        time.sleep(0.001)
print(sent, flush=True)
"""


def transfer(ns: netns.Namespace, direction: str, kbit: float, seconds: float, port: int = 5599) -> dict:
    """Sends UDP at `kbit` for `seconds` across the veth (into the namespace for "down", out of it
    for "up"); returns what was sent and received and the rate at which it arrived."""
    rx_cmd = [sys.executable, "-c", RECEIVER]
    tx_cmd = [sys.executable, "-c", SENDER]
    if direction == "down":
        rx = subprocess.Popen(ns.cmd(rx_cmd + [ns.ns_ip, str(port), "1.0"]), stdout=subprocess.PIPE, text=True)
        tx_args = tx_cmd + [ns.ns_ip, str(port), str(kbit), str(seconds), str(PAYLOAD)]
    else:
        rx = subprocess.Popen(rx_cmd + [ns.host_ip, str(port), "1.0"], stdout=subprocess.PIPE, text=True)
        tx_args = ns.cmd(tx_cmd + [ns.host_ip, str(port), str(kbit), str(seconds), str(PAYLOAD)])
    try:
        assert rx.stdout.readline().strip() == "ready"
        sent = int(subprocess.run(tx_args, capture_output=True, text=True, timeout=seconds + 10, check=True).stdout)
        arrivals = json.loads(rx.communicate(timeout=seconds + 15)[0])
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    received = len(arrivals)
    # The rate over the arrivals after the first half second (the bucket's initial burst is out).
    steady = [t for t, _ in arrivals if t >= arrivals[0][0] + 0.5] if arrivals else []
    rate = (len(steady) - 1) * WIRE * 8 / 1000 / (steady[-1] - steady[0]) if len(steady) > 2 else 0.0
    return {"sent": sent, "received": received, "kbit": rate}


def test_tbf_holds_each_direction_to_its_rate_changes_at_run_time_and_lifts(netns_pool):
    ns = netns_pool.create()
    ns.shape("down", 400)
    down = transfer(ns, "down", 1000, 4)
    print("down 400:", down)
    assert 340 <= down["kbit"] <= 460, down
    assert down["received"] < down["sent"] * 0.7, down  # the excess was dropped, not queued forever

    ns.shape("up", 600)
    up = transfer(ns, "up", 1500, 4)
    print("up 600:", up)
    assert 510 <= up["kbit"] <= 690, up

    ns.shape("down", 1000)  # changed while the link stays up
    faster = transfer(ns, "down", 2000, 3)
    print("down 1000:", faster)
    assert 850 <= faster["kbit"] <= 1150, faster

    ns.lift()
    free = transfer(ns, "down", 3000, 3)
    print("lifted:", free)
    assert free["kbit"] >= 2500 and free["received"] >= free["sent"] * 0.99, free
    assert "tbf" not in ns.describe()


def test_nft_drops_about_five_percent_of_arriving_udp(netns_pool):
    ns = netns_pool.create()
    ns.udp_loss(5)
    result = transfer(ns, "down", 8000, 3)  # 1,000 packets/s, 3,000 packets: 5 % is 150 +- 12
    dropped = ns.udp_dropped()
    loss = 1 - result["received"] / result["sent"]
    print(f"5 % loss rule: {result}, loss {loss:.2%}, nft counted {dropped}")
    assert 0.03 <= loss <= 0.075, result
    assert abs(dropped - (result["sent"] - result["received"])) <= 3
    # Outgoing UDP is not touched.
    up = transfer(ns, "up", 2400, 2)
    assert up["received"] >= up["sent"] * 0.995, up
    ns.udp_loss(0)
    clean = transfer(ns, "down", 2400, 2)
    assert clean["received"] >= clean["sent"] * 0.995, clean


def test_pool_removes_everything_and_sweep_removes_a_dead_runs_leftovers():
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    with netns.NetnsPool() as pool:
        made = [pool.create(), pool.create()]
        names = [ns.name for ns in made]
        assert len({ns.host_ip for ns in made}) == 2
        made[0].shape("down", 400)
        made[1].udp_loss(5)
        made[0].popen(["sleep", "60"])
        assert netns.leftovers(names) == names
        assert made[0].run(["true"]).returncode == 0
    assert netns.leftovers(names) == []

    # A run that died without cleaning up: its namespace, veth and marker carry a dead pid.
    dead = subprocess.Popen(["true"])
    dead.wait()
    other_run = (os.getpid() % 1000 + 500) % 1000
    orphan = netns.Namespace(f"{netns.PREFIX}{other_run:03d}15", other_run * netns.PER_RUN + 15)
    orphan._create()
    (netns.STATE_DIR / orphan.name).write_text(f"{dead.pid} {orphan.host_ip}\n")
    assert netns.leftovers([orphan.name]) == [orphan.name]
    removed = netns.sweep()
    assert orphan.name in removed
    assert netns.leftovers([orphan.name]) == []
