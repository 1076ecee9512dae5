"""Network namespaces for the interop tests: a namespace joined to the host by a veth pair, with
its download and upload shaped by tbf and a share of its arriving UDP dropped by nftables.

    with NetnsPool() as pool:
        ns = pool.create()                 # namespace pq<pid%1000><n>, veth pq…h (host) / pq…n (inside)
        ns.popen(["chromedriver", "--port=9515", …])
        ns.shape("down", 400)              # kbit/s, egress of the host-side veth
        ns.shape("up", 600)                # kbit/s, egress of the namespace-side veth
        ns.udp_loss(5)                     # % of UDP arriving in the namespace, dropped at input
        ns.lift()                          # both shapers and the loss off

Addresses: each namespace gets a /30 out of 10.77.0.0/16 (host side .1, namespace side .2), from
an index that starts at (pid % 1000) * 16 and skips any /30 already on the host. The namespace
routes 10.77.0.0/16 through its veth, and nothing else: the host does not forward (and nothing
needs it to), so traffic from a namespace can only reach the host's own addresses.

Names carry the prefix `pq`; a marker file in /run/parley-netns/ records the pid of the run that
made each namespace, and `sweep()` (called by every new pool) removes the namespaces, veths and
markers of runs that are no longer alive. Everything needs root (CAP_NET_ADMIN), `ip`, `tc` and
`nft`; netem is not assumed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

PREFIX = "pq"
STATE_DIR = Path("/run/parley-netns")
SUBNET = ipaddress.ip_network("10.77.0.0/16")
PER_RUN = 16  # namespaces one run may hold at once
NAME_RE = re.compile(rf"^{PREFIX}(\d{{3}})(\d{{2}})$")
LOSS_TABLE = "parley_loss"


class NetnsError(RuntimeError):
    pass


def _run(args: list[str], check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, input=input, timeout=20)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def available() -> str | None:
    """None when namespaces can be made here, else why not (for pytest.skip)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc", "nft"):
        if not shutil.which(tool):
            return f"`{tool}` is not installed (apt-get install iproute2 nftables)"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _host_links() -> list[str]:
    out = _run(["ip", "-o", "link", "show"], check=False).stdout
    return [m.group(1) for m in re.finditer(r"^\d+: ([^:@\s]+)", out, re.M)]


def _host_networks() -> list[ipaddress.IPv4Network]:
    out = _run(["ip", "-4", "-o", "addr", "show"], check=False).stdout
    return [ipaddress.ip_interface(m.group(1)).network for m in re.finditer(r"inet (\S+)", out)]


def _owner(name: str) -> int | None:
    try:
        return int((STATE_DIR / name).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _remove(name: str) -> None:
    """Deletes namespace `name`, its host-side veth and its marker; whatever of them exists."""
    # Processes still inside would keep the namespace's network alive after `ip netns del`.
    pids = _run(["ip", "netns", "pids", name], check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    if name in _namespaces():
        _run(["ip", "netns", "del", name], check=False)
    if name + "h" in _host_links():  # deleting the namespace takes the pair with it; this is in case
        _run(["ip", "link", "del", name + "h"], check=False)
    try:
        (STATE_DIR / name).unlink()
    except FileNotFoundError:
        pass


def sweep() -> list[str]:
    """Removes the leftovers of dead runs: `pq…` namespaces, veths and markers whose owner is gone."""
    removed = []
    candidates = set(_namespaces()) | {link[:-1] for link in _host_links() if link.endswith("h")}
    if STATE_DIR.exists():
        candidates |= {p.name for p in STATE_DIR.iterdir()}
    for name in sorted(candidates):
        if not NAME_RE.match(name):
            continue
        owner = _owner(name)
        if owner is not None and _pid_alive(owner):
            continue
        _remove(name)
        removed.append(name)
    return removed


class Namespace:
    """One namespace with a veth to the host. Use through `NetnsPool.create()`."""

    def __init__(self, name: str, index: int):
        self.name = name
        self.host_if = name + "h"
        self.ns_if = name + "n"
        base = SUBNET.network_address + index * 4
        self.network = ipaddress.ip_network(f"{base}/30")
        self.host_ip = str(base + 1)
        self.ns_ip = str(base + 2)
        self.procs: list[subprocess.Popen] = []
        self.rates: dict[str, int | None] = {"down": None, "up": None}
        self.loss: int = 0

    def __repr__(self) -> str:
        return f"Namespace({self.name}, host {self.host_ip}, inside {self.ns_ip})"

    # -- lifecycle ---------------------------------------------------------------------------

    def _create(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        (STATE_DIR / self.name).write_text(f"{os.getpid()} {self.host_ip}\n")
        steps = [
            ["ip", "netns", "add", self.name],
            ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if],
            ["ip", "link", "set", self.ns_if, "netns", self.name],
            ["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if],
            ["ip", "link", "set", self.host_if, "up"],
        ]
        inside = [
            ["ip", "link", "set", "lo", "up"],
            ["ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if],
            ["ip", "link", "set", self.ns_if, "up"],
            ["ip", "route", "add", str(SUBNET), "via", self.host_ip],
        ]
        try:
            for step in steps:
                _run(step)
            for step in inside:
                _run(self.cmd(step))
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
        self.procs.clear()
        _remove(self.name)

    # -- processes ---------------------------------------------------------------------------

    def cmd(self, args: list[str]) -> list[str]:
        """`args` to run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *args]

    def run(self, args: list[str], check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        return _run(self.cmd(args), check=check, input=input)

    def popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        """Starts `args` inside the namespace in its own process group; `close()` ends it."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(self.cmd(args), start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    # -- shaping -----------------------------------------------------------------------------

    def shape(self, direction: str, kbit: int | None, latency_ms: int = 200) -> None:
        """Holds the namespace's `direction` ("down": what arrives in it, the host-side veth's
        egress; "up": what leaves it, the inside veth's egress) to `kbit` kbit/s with a token
        bucket whose queue holds `latency_ms`; None lifts it. Changing a rate keeps the link up."""
        if direction not in ("down", "up"):
            raise ValueError(f"direction must be 'down' or 'up', not {direction!r}")
        dev = self.host_if if direction == "down" else self.ns_if
        wrap = (lambda a: a) if direction == "down" else self.cmd
        if kbit is None:
            _run(wrap(["tc", "qdisc", "del", "dev", dev, "root"]), check=False)
        else:
            # A bucket of ~20 ms at the rate, but never under two full-size packets.
            burst = max(3200, kbit * 1000 // 8 // 50)
            _run(wrap(["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{kbit}kbit",
                       "burst", str(burst), "latency", f"{latency_ms}ms"]))
        self.rates[direction] = kbit

    def udp_loss(self, percent: int) -> None:
        """Drops `percent` % of the UDP packets arriving in the namespace, at random (0 lifts it;
        100 blocks UDP)."""
        self.run(["nft", "delete", "table", "inet", LOSS_TABLE], check=False)
        if percent > 0:
            # numgen's range is 0-99: all of it is a plain drop.
            match = "" if percent >= 100 else f" numgen random mod 100 < {int(percent)}"
            script = (
                f"table inet {LOSS_TABLE} {{\n"
                "  chain input {\n"
                "    type filter hook input priority 0; policy accept;\n"
                f"    meta l4proto udp{match} counter drop\n"
                "  }\n"
                "}\n"
            )
            self.run(["nft", "-f", "-"], input=script)
        self.loss = percent

    def udp_dropped(self) -> int:
        """Packets the loss rule has dropped so far."""
        out = self.run(["nft", "list", "table", "inet", LOSS_TABLE], check=False).stdout
        m = re.search(r"counter packets (\d+)", out)
        return int(m.group(1)) if m else 0

    def lift(self) -> None:
        self.shape("down", None)
        self.shape("up", None)
        self.udp_loss(0)

    def describe(self) -> str:
        """The qdiscs and nft rules in force, for logs."""
        down = _run(["tc", "qdisc", "show", "dev", self.host_if], check=False).stdout.strip()
        up = self.run(["tc", "qdisc", "show", "dev", self.ns_if], check=False).stdout.strip()
        nft = self.run(["nft", "list", "ruleset"], check=False).stdout.strip()
        return f"{self.name} down: {down}\n{self.name} up: {up}\n{self.name} nft: {nft or '-'}"


class NetnsPool:
    """Creates namespaces for one run and removes them all on `close()` (or leaving `with`)."""

    def __init__(self):
        reason = available()
        if reason:
            raise NetnsError(reason)
        sweep()
        self.run_id = os.getpid() % 1000
        self.namespaces: list[Namespace] = []

    def __enter__(self) -> "NetnsPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def create(self) -> Namespace:
        taken_names = set(_namespaces()) | {link[:-1] for link in _host_links()}
        taken_nets = _host_networks()
        for n in range(PER_RUN):
            name = f"{PREFIX}{self.run_id:03d}{n:02d}"
            if name in taken_names or (STATE_DIR / name).exists():
                continue
            index = (self.run_id * PER_RUN + n) % (SUBNET.num_addresses // 4)
            ns = Namespace(name, index)
            if any(ns.network.overlaps(net) for net in taken_nets):
                continue
            ns._create()
            self.namespaces.append(ns)
            return ns
        raise NetnsError(f"no free namespace name or /30 left for run {self.run_id}")

    def close(self) -> None:
        errors = []
        while self.namespaces:
            ns = self.namespaces.pop()
            try:
                ns.close()
            except Exception as err:  # keep removing the others
                errors.append(f"{ns.name}: {err}")
        if errors:
            raise NetnsError("; ".join(errors))


def leftovers(names: list[str]) -> list[str]:
    """Which of `names` (namespaces) still exist as a namespace, a host veth or a marker."""
    present = set(_namespaces()) | {link[:-1] for link in _host_links() if link.endswith("h")}
    present |= {p.name for p in STATE_DIR.iterdir()} if STATE_DIR.exists() else set()
    return [name for name in names if name in present]


def wait_port(host: str, port: int, timeout: float = 15.0) -> None:
    """Waits until a TCP connect to host:port succeeds."""
    import socket

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as err:
            last = err
            time.sleep(0.1)
    raise NetnsError(f"{host}:{port} not reachable within {timeout}s: {last}")
