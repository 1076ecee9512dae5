"""TLS with a certificate made here by `openssl req`: HTTPS and `wss://` signaling on
server.tlsPort, TURN over TLS (`turns:`) on turn.tlsPort relaying coturn's client with no loss and
aiortc's media in relay-only mode, and a certificate replaced on disk taking effect at SIGHUP."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import select
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import websockets

from conftest import free_port, mint_token
from rtc_peer import Participant, wait_for
from test_turn import OPEN_LOOPBACK, PASSWORD, USER, uclient


def make_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


def served_fingerprint(port: int) -> str:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, context.wrap_socket(raw) as tls:
        return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def file_fingerprint(cert: Path) -> str:
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    return hashlib.sha256(der).hexdigest()


@pytest.fixture
def tls_server(server_factory, tmp_path):
    cert, key = make_certificate(tmp_path, "first")
    ports = {"server.tlsPort": free_port(), "turn.tlsPort": free_port()}
    server = server_factory({**OPEN_LOOPBACK, "tls.certFile": str(cert), "tls.keyFile": str(key), **ports})
    server.tls_port, server.turn_tls_port, server.cert, server.key = ports["server.tlsPort"], ports["turn.tlsPort"], cert, key
    return server


def test_https_and_wss_signaling(tls_server):
    context = ssl.create_default_context(cafile=str(tls_server.cert))

    async def scenario():
        url = f"wss://127.0.0.1:{tls_server.tls_port}/v1/rtc?token={mint_token('alice', 'secure')}"
        async with websockets.connect(url, ssl=context) as ws:
            joined = json.loads(await ws.recv())
            assert joined["type"] == "joined", joined
            urls = [u for server in joined["iceServers"] for u in server["urls"]]
            assert f"turns:127.0.0.1:{tls_server.turn_tls_port}?transport=tcp" in urls, urls
            await ws.send(json.dumps({"type": "ping", "id": "p"}))
            assert json.loads(await ws.recv())["type"] == "pong"

    asyncio.run(scenario())
    import urllib.request
    with urllib.request.urlopen(f"https://127.0.0.1:{tls_server.tls_port}/healthz", context=context, timeout=5) as r:
        assert r.status == 200
    # Plain HTTP goes on beside it.
    assert tls_server.http("GET", "/healthz").status == 200


def test_swift_sdk_participants_over_wss_hear_each_other(tls_server):
    from test_cluster_media import JoinProcess

    # By name: NIOSSL sends the host as SNI, which may not be an IP address.
    url = f"wss://localhost:{tls_server.tls_port}"
    trust = ["--ca-file", str(tls_server.cert)]
    alice = JoinProcess(tls_server.binary, "alice", "sdk-wss", [url], 440, trust)
    bob = JoinProcess(tls_server.binary, "bob", "sdk-wss", [url], 660, trust)
    try:
        alice.wait(lambda e: e["event"] == "joined", 15, "joined over wss")
        alice.wait(alice.hears("bob"), 20, "bob's tone")
        bob.wait(bob.hears("alice"), 20, "alice's tone")
    finally:
        alice.close()
        bob.close()
    # Without the CA the SDK refuses the self-signed certificate.
    stranger = subprocess.run([tls_server.binary, "join", "--url", url, "--room", "sdk-wss", "--identity", "eve", "--duration", "1s"],
                              capture_output=True, text=True, timeout=30)
    assert stranger.returncode != 0, stranger.stdout


def test_swift_sdk_relays_through_turns(tls_server):
    import os
    from test_cluster_media import JoinProcess

    # Only the turns: URL, relay-only: every packet goes through TURN over TLS. The SDK trusts the
    # test certificate through SSL_CERT_FILE (the TLS library's default trust store).
    relay = ["--relay", "--ice-server", f"turns:127.0.0.1:{tls_server.turn_tls_port}?transport=tcp",
             "--ice-username", USER, "--ice-credential", PASSWORD]
    os.environ["SSL_CERT_FILE"] = str(tls_server.cert)
    try:
        alice = JoinProcess(tls_server.binary, "alice", "sdk-turns", [tls_server.ws_base], 440, relay)
        bob = JoinProcess(tls_server.binary, "bob", "sdk-turns", [tls_server.ws_base], 660, relay)
    finally:
        del os.environ["SSL_CERT_FILE"]
    try:
        alice.wait(alice.hears("bob"), 30, "bob's tone through turns:")
        bob.wait(bob.hears("alice"), 30, "alice's tone through turns:")
    finally:
        alice.close()
        bob.close()
    relayed = [l for l in tls_server.http("GET", "/metrics").text.splitlines() if l.startswith("parley_turn_relayed_packets_total")]
    assert sum(float(l.split()[-1]) for l in relayed) > 200, relayed


def test_coturn_client_relays_over_turn_tls_without_loss(tls_server):
    totals = uclient(tls_server.turn_tls_port, "-u", USER, "-w", PASSWORD, "-t", "-S")
    # On failure, the server's TURN counters tell a drop (and which) from a loss outside it.
    counters = [l for l in tls_server.http("GET", "/metrics").text.splitlines() if l.startswith("parley_turn_")]
    assert totals["sent"] == 10_000 and totals["received"] == 10_000 and totals["lost"] == 0, \
        totals["output"][-600:] + "\n" + "\n".join(counters)


def test_aiortc_in_relay_only_mode_through_turns(tls_server, monkeypatch):
    # aioice checks the TURN server's certificate against the default trust store: trust ours.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.cert))

    async def scenario():
        alice = Participant(tls_server.rtc_url(tls_server.token("alice", "turns")), "alice", relay_transport="tls")
        bob = Participant(tls_server.rtc_url(tls_server.token("bob", "turns")), "bob", relay_transport="tls")
        await alice.connect()
        await bob.connect()
        try:
            await alice.publish(tone=440.0, video=False)
            await wait_for(lambda: bob.tracks_from(alice.sid, "audio"), 20, what="alice's audio through turns:")
            heard = bob.tracks_from(alice.sid, "audio")[0]
            await wait_for(lambda: len(heard.audio()) >= 2 * 48_000, 20, what="2 s of audio through turns:")
            assert abs(heard.dominant_frequency(1.5) - 440) <= 10
        finally:
            await alice.close()
            await bob.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_new_certificate_takes_effect_on_sighup(tls_server, tmp_path):
    before = served_fingerprint(tls_server.tls_port)
    assert before == file_fingerprint(tls_server.cert)
    new_cert, new_key = make_certificate(tmp_path, "second")
    tls_server.cert.write_text(new_cert.read_text())
    tls_server.key.write_text(new_key.read_text())
    tls_server.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while served_fingerprint(tls_server.tls_port) != file_fingerprint(new_cert):
        assert time.monotonic() < deadline, "the new certificate was not served after SIGHUP"
        time.sleep(0.1)
    assert served_fingerprint(tls_server.turn_tls_port) == file_fingerprint(new_cert)
    # A broken file on the next SIGHUP keeps the current certificate.
    tls_server.cert.write_text("not a certificate")
    tls_server.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert served_fingerprint(tls_server.tls_port) == file_fingerprint(new_cert)
    assert tls_server.http("GET", "/healthz").status == 200


def test_dev_mode_on_a_lan_address_makes_and_keeps_a_self_signed_certificate(parley_binary, tmp_path):
    def start():
        port, tls_port = free_port(), free_port()
        proc = subprocess.Popen(
            [parley_binary, "serve", "--dev", "--host", "0.0.0.0", "--port", str(port), "--set", f"server.tlsPort={tls_port}",
             "--set", "rtc.port=0", "--set", "rtc.nodeIPs=127.0.0.1", "--set", "turn.port=0", "--set", "turn.tlsPort=0"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        banner = ""
        deadline = time.monotonic() + 20
        while "SHA-256" not in banner and time.monotonic() < deadline and proc.poll() is None:
            # Never block past the deadline on a server that prints nothing.
            if select.select([proc.stdout], [], [], 0.2)[0]:
                banner += os.read(proc.stdout.fileno(), 4096).decode(errors="replace")
        assert "SHA-256" in banner, banner
        assert f"https://127.0.0.1:{tls_port}/" in banner, banner
        printed = banner.split("SHA-256 ")[1].split(")")[0].replace(":", "").lower()
        deadline = time.monotonic() + 10
        while True:
            try:
                return proc, tls_port, printed, served_fingerprint(tls_port)
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)

    proc, tls_port, printed, served = start()
    try:
        assert printed == served
        cert = tmp_path / "data" / "dev-tls" / "dev-cert.pem"
        # Trusting the file verifies the chain and the address (a SAN for 127.0.0.1).
        context = ssl.create_default_context(cafile=str(cert))
        with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert b"200" in tls.recv(100)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    # The next start reuses it: a phone that accepted it once is not asked again.
    proc, _, printed_again, _ = start()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)
    assert printed_again == printed


def test_chromium_pages_relay_only_through_turns(tls_server):
    from selenium.webdriver.common.by import By
    from test_web_client_chromium import browser, stats, wait_until

    drivers = []
    try:
        for name in ["Ada", "Bo"]:
            # The test CA is not Chromium's: it is told to accept certificate errors for this run.
            driver = browser(extra_flags=["--ignore-certificate-errors"])
            drivers.append(driver)
            driver.get(tls_server.url + "/?relay=tls")
            driver.find_element(By.ID, "room").clear()
            driver.find_element(By.ID, "room").send_keys("turns-web")
            driver.find_element(By.ID, "name").send_keys(name)
            driver.find_element(By.CSS_SELECTOR, "#join button").click()
        for driver in drivers:
            wait_until(lambda d=driver: (lambda s: s.get("framesDecoded", 0) > 10 and s.get("audioBytesReceived", 0) > 1000)(stats(d)),
                       40, "video and audio through turns:")
            assert stats(driver)["candidateTypes"] == ["relay"], stats(driver)
    finally:
        for driver in drivers:
            driver.quit()


def test_quiet_turn_connections_without_an_allocation_are_closed(server_factory, tmp_path):
    """turn.tcp.idleTimeout: a TCP and a TLS client that never allocate are closed after it."""
    cert, key = make_certificate(tmp_path, "idle")
    ports = {"server.tlsPort": free_port(), "turn.tlsPort": free_port()}
    server = server_factory({**OPEN_LOOPBACK, "tls.certFile": str(cert), "tls.keyFile": str(key), **ports, "turn.tcp.idleTimeout": "2s"})
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    plain = socket.create_connection(("127.0.0.1", server.turn_port()), timeout=10)
    tls = context.wrap_socket(socket.create_connection(("127.0.0.1", ports["turn.tlsPort"]), timeout=10))
    started = time.monotonic()
    try:
        for connection in (plain, tls):
            try:
                assert connection.recv(1) == b"", "the server closed it"
            except (ConnectionResetError, ssl.SSLError):
                pass
        assert 1.5 <= time.monotonic() - started <= 8, time.monotonic() - started
        text = server.http("GET", "/metrics").text
        assert "parley_turn_tcp_idle_closed_total 2" in text, [l for l in text.splitlines() if "idle" in l]
    finally:
        plain.close()
        tls.close()
