"""Fixtures for the black-box contract tests: start a real `parley` binary, mint tokens, speak HTTP.

Usage:
    .venv/bin/pytest Tests/Interop --parley .build/debug/parley

Every test gets its own server on a free 127.0.0.1 port with a fresh data directory. Options can be
set per test with the `parley_set` marker:

    @pytest.mark.parley_set({"signaling.resumeWindow": "2s"})
    def test_something(server): ...
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "devkey"
API_SECRET = "secret"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def pytest_addoption(parser):
    parser.addoption(
        "--parley",
        action="store",
        default=str(REPO_ROOT / ".build" / "debug" / "parley"),
        help="path to the parley binary under test (default: .build/debug/parley)",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "parley_set(options): extra --set key=value options for the server fixture")


# ---------------------------------------------------------------------------------------------
# Tokens


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint_token(
    identity: str | None = "alice",
    room: str | None = "room",
    *,
    name: str | None = None,
    metadata: str = "",
    join: bool = True,
    publish: bool = True,
    subscribe: bool = True,
    chat: bool = True,
    admin: bool = False,
    record: bool = False,
    hidden: bool = False,
    ttl: int = 3600,
    nbf: int | None = None,
    exp: int | None = None,
    key: str = API_KEY,
    secret: str = API_SECRET,
    grants: dict | None = None,
) -> str:
    """An HS256 access token as described in PROTOCOL.md. `grants` replaces the computed grants."""
    now = int(time.time())
    if grants is None:
        grants = {
            "join": join,
            "publish": publish,
            "subscribe": subscribe,
            "chat": chat,
            "admin": admin,
            "record": record,
            "hidden": hidden,
        }
        if room is not None:
            grants["room"] = room
    claims = {
        "iss": key,
        "nbf": now - 10 if nbf is None else nbf,
        "exp": now + ttl if exp is None else exp,
        "name": name if name is not None else (identity or "").capitalize(),
        "metadata": metadata,
        "grants": grants,
    }
    if identity is not None:
        claims["sub"] = identity
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    signature = hmac.new(secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + b64url(signature)


def admin_token(**kwargs) -> str:
    return mint_token("admin", None, admin=True, join=False, **kwargs)


# ---------------------------------------------------------------------------------------------
# HTTP


class HTTPResult:
    def __init__(self, status: int, headers, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body) if self.body else None

    def __repr__(self):
        return f"HTTPResult({self.status}, {self.text[:300]!r})"


def http_request(
    url: str, method: str = "GET", *, token: str | None = None, body=None, headers=None, timeout: float = 5.0
) -> HTTPResult:
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode() if not isinstance(body, (bytes, bytearray)) else bytes(body)
        hdrs.setdefault("Content-Type", "application/json")
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HTTPResult(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as err:
        return HTTPResult(err.code, err.headers, err.read())


# ---------------------------------------------------------------------------------------------
# Server process


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ParleyServer:
    """One `parley serve --dev` process on 127.0.0.1 with its own data directory."""

    def __init__(self, binary: str, data_dir: Path, sets: dict | None = None, host: str = "127.0.0.1"):
        self.binary = binary
        self.host = host
        self.data_dir = Path(data_dir)
        self.sets = dict(sets or {})
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir / "server.log"
        self.exit_codes: list[int] = []

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def db_path(self) -> Path:
        return self.data_dir / "parley.sqlite"

    def start(self, port: int | None = None) -> "ParleyServer":
        assert self.proc is None, "already running"
        last_error = None
        for _attempt in range(5):
            chosen = port if port is not None else free_port()
            try:
                self._spawn(chosen)
                return self
            except RuntimeError as err:  # e.g. the port was taken between probe and bind
                last_error = err
                if port is not None:
                    break
        raise RuntimeError(f"could not start parley: {last_error}")

    def _spawn(self, port: int) -> None:
        args = [
            self.binary,
            "serve",
            "--dev",
            "--host",
            self.host,
            "--port",
            str(port),
            "--set",
            f"store.path={self.db_path}",
            # Free media ports and candidates on the bound address (loopback unless a test binds a
            # network namespace's veth), so servers run side by side.
            "--set",
            "rtc.port=0",
            "--set",
            f"rtc.nodeIPs={self.host}",
            # A free STUN/TURN port too (servers side by side must not share one through SO_REUSEPORT).
            "--set",
            "turn.port=0",
            # Free TLS ports: dev mode on a non-loopback address (network namespaces) serves HTTPS
            # and TURN over TLS with its own certificate.
            "--set",
            "server.tlsPort=0",
            "--set",
            "turn.tlsPort=0",
        ]
        for key, value in self.sets.items():
            args += ["--set", f"{key}={value}"]
        log = open(self.log_path, "ab")
        log.write(f"\n=== start {' '.join(args)}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.data_dir)
        log.close()
        self.port = port
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"parley exited with {code} during start; log tail:\n{self.log_tail()}")
            try:
                if http_request(self.url + "/readyz", timeout=1.0).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.03)
        self.kill()
        raise RuntimeError(f"parley not ready within {START_TIMEOUT}s; log tail:\n{self.log_tail()}")

    def turn_port(self) -> int:
        """The STUN/TURN port, from the TURN URLs a participant gets in `joined`."""
        import re

        from websockets.sync.client import connect

        with connect(self.rtc_url(self.token("turn-probe", "turn-probe"))) as ws:
            joined = json.loads(ws.recv(timeout=5))
        urls = [url for entry in joined.get("iceServers", []) for url in entry["urls"]]
        match = next((re.search(r":(\d+)\?transport=udp$", url) for url in urls if url.startswith("turn:")), None)
        assert match, f"joined names no TURN server: {joined.get('iceServers')}"
        return int(match.group(1))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
        """Signal the server and wait for it to exit. Returns the exit code."""
        if self.proc is None:
            return None
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
                self.proc = None
                raise AssertionError(f"parley did not exit within {timeout}s of signal {sig}")
        self.proc = None
        self.exit_codes.append(proc.returncode)
        return proc.returncode

    def send_signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None, "not running"
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        """Waits for a server that was signalled (or is exiting) to end; returns its exit code."""
        assert self.proc is not None, "not running"
        proc = self.proc
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"parley did not exit within {timeout}s") from None
        self.proc = None
        self.exit_codes.append(proc.returncode)
        return proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def restart(self, same_port: bool = False) -> "ParleyServer":
        """Stop gracefully (SIGTERM) and start again on the same database."""
        port = self.port
        self.stop()
        return self.start(port if same_port else None)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    # -- addressing --------------------------------------------------------------------------

    @property
    def url_host(self) -> str:
        """The host as a URL spells it: an IPv6 address in brackets."""
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def url(self) -> str:
        return f"http://{self.url_host}:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://{self.url_host}:{self.port}"

    def rtc_url(self, token: str, resume: str | None = None) -> str:
        url = f"{self.ws_base}/v1/rtc?token={token}"
        if resume:
            url += f"&resume={resume}"
        return url

    # -- helpers -----------------------------------------------------------------------------

    token = staticmethod(mint_token)
    admin_token = staticmethod(admin_token)

    def http(self, method: str, path: str, **kwargs) -> HTTPResult:
        return http_request(self.url + path, method, **kwargs)

    def admin(self, method: str, path: str, **kwargs) -> HTTPResult:
        kwargs.setdefault("token", admin_token())
        return self.http(method, path, **kwargs)


@pytest.fixture(scope="session")
def parley_binary(pytestconfig) -> str:
    path = Path(pytestconfig.getoption("--parley"))
    if not path.is_absolute():
        candidate = Path.cwd() / path
        path = candidate if candidate.exists() else REPO_ROOT / path
    if not path.exists():
        pytest.exit(f"parley binary not found at {path}; build it or pass --parley PATH", returncode=2)
    return str(path)


@pytest.fixture
def server_factory(parley_binary):
    """Start servers with given options; all are stopped (SIGTERM) and cleaned up after the test."""
    started: list[ParleyServer] = []
    dirs: list[str] = []

    def make(sets: dict | None = None, data_dir: str | Path | None = None, host: str = "127.0.0.1") -> ParleyServer:
        """`host` is the address the server binds and advertises (`rtc.nodeIPs`); a test with
        browsers in network namespaces passes a host-side veth address."""
        if data_dir is None:
            data_dir = tempfile.mkdtemp(prefix="parley-interop-")
            dirs.append(str(data_dir))
        srv = ParleyServer(parley_binary, Path(data_dir), sets, host)
        started.append(srv)
        return srv.start()

    yield make

    failures = []
    for srv in started:
        try:
            srv.stop()
        except AssertionError as err:
            failures.append(str(err))
        finally:
            srv.kill()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    if failures:
        pytest.fail("; ".join(failures))


@pytest.fixture
def server(request, server_factory) -> ParleyServer:
    sets: dict = {"log.level": "warning"}
    for marker in reversed(list(request.node.iter_markers("parley_set"))):
        sets.update(marker.args[0] if marker.args else {})
        sets.update(marker.kwargs)
    return server_factory(sets)


# ---------------------------------------------------------------------------------------------
# Network namespaces (netns.py): shaped and lossy links for browsers and peers


@pytest.fixture
def netns_pool():
    """A `NetnsPool`: namespaces made through it are removed after the test, passed or failed.
    Skips where namespaces cannot be made (not root, no ip/tc/nft)."""
    import netns

    reason = netns.available()
    if reason:
        pytest.skip(reason)
    pool = netns.NetnsPool()
    try:
        yield pool
    finally:
        pool.close()


# ---------------------------------------------------------------------------------------------
# PostgreSQL (postgres.py): the cluster's store


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server of this test's own (tests may stop and start it)."""
    import postgres as pg

    server = pg.ThrowawayPostgres().start()
    try:
        yield server
    finally:
        server.close()
