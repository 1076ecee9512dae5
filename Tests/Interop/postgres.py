"""A throwaway PostgreSQL for tests: initdb into a temporary folder, a free loopback port, stopped
and removed afterwards. As root (CI) the server runs as Debian's `postgres` user; initdb refuses
root. `make apt` installs the `postgresql` package."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid


def binary(name: str) -> str:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]), reverse=True)
    if not candidates:
        raise RuntimeError(f"PostgreSQL's {name} is missing under /usr/lib/postgresql: run `make apt`")
    return candidates[0]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThrowawayPostgres:
    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="parley-pg-")
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            # setpriv execs, so signals reach the server itself.
            self.as_user = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
        subprocess.run(
            self.as_user + [binary("initdb"), "-D", f"{self.folder}/data", "-U", "parley", "-A", "trust", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True)

    def start(self) -> "ThrowawayPostgres":
        assert self.proc is None
        log = open(f"{self.folder}/log", "ab")
        self.proc = subprocess.Popen(
            self.as_user + [
                binary("postgres"), "-D", f"{self.folder}/data", "-p", str(self.port), "-k", self.folder,
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200",
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if subprocess.run([binary("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]).returncode == 0:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not start: {self.log_tail()}")

    def stop(self) -> None:
        """A fast shutdown: clients are disconnected, the data stays for a later start()."""
        if self.proc is None:
            return
        self.proc.send_signal(2)  # SIGINT: fast shutdown
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def create_database(self) -> str:
        """A new empty database; returns its URL for `database.url`."""
        name = "p_" + uuid.uuid4().hex[:10]
        self.psql("postgres", f"CREATE DATABASE {name}")
        return f"postgres://parley@127.0.0.1:{self.port}/{name}?sslmode=disable"

    def psql(self, database: str, sql: str) -> str:
        result = subprocess.run(
            [binary("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "parley", "-d", database, "-At", "-c", sql],
            check=True, capture_output=True, text=True)
        return result.stdout

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(f"{self.folder}/log", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
