"""Parley's built-in STUN/TURN server (ISSUE 4): coturn's own client relays through it over UDP and
TCP with static and REST credentials, a hand-written client checks every error path, and aiortc and
Chromium reach the SFU through relay candidates only."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import shutil
import socket
import struct
import subprocess
import time
import zlib

import pytest

from rtc_peer import Participant, wait_for
from test_media_aiortc import metric, run

UCLIENT = shutil.which("turnutils_uclient") or "/usr/bin/turnutils_uclient"
USER, PASSWORD, SECRET = "ninefingers", "youhavetoberealistic", "northsecret"
REALM = "parley"
MAGIC = 0x2112A442

# -- a minimal STUN/TURN client ------------------------------------------------------------------

ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND, BINDING, CONNECT = 0x003, 0x004, 0x008, 0x009, 0x001, 0x00A
A_USERNAME, A_MI, A_ERROR, A_UNKNOWN, A_REALM, A_NONCE = 0x0006, 0x0008, 0x0009, 0x000A, 0x0014, 0x0015
A_CHANNEL, A_LIFETIME, A_PEER, A_DATA, A_RELAYED, A_TRANSPORT, A_MAPPED, A_FINGERPRINT = (
    0x000C, 0x000D, 0x0012, 0x0013, 0x0016, 0x0019, 0x0020, 0x8028)


def message_type(method: int, cls: int) -> int:
    return (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | ((cls & 1) << 4) | ((cls & 2) << 7)


def xor_address(host: str, port: int, txid: bytes) -> bytes:
    if ":" in host:
        raw = socket.inet_pton(socket.AF_INET6, host)
        mask = struct.pack("!I", MAGIC) + txid
        return struct.pack("!BBH", 0, 2, port ^ (MAGIC >> 16)) + bytes(a ^ b for a, b in zip(raw, mask))
    raw = struct.unpack("!I", socket.inet_aton(host))[0]
    return struct.pack("!BBHI", 0, 1, port ^ (MAGIC >> 16), raw ^ MAGIC)


def decode_xor_address(value: bytes, txid: bytes) -> tuple[str, int]:
    family, port = value[1], struct.unpack("!H", value[2:4])[0] ^ (MAGIC >> 16)
    if family == 1:
        return socket.inet_ntoa(struct.pack("!I", struct.unpack("!I", value[4:8])[0] ^ MAGIC)), port
    mask = struct.pack("!I", MAGIC) + txid
    return socket.inet_ntop(socket.AF_INET6, bytes(a ^ b for a, b in zip(value[4:20], mask))), port


class Message:
    def __init__(self, method: int, cls: int = 0, txid: bytes | None = None):
        self.method, self.cls = method, cls
        self.txid = txid or os.urandom(12)
        self.attributes: list[tuple[int, bytes]] = []

    def add(self, kind: int, value: bytes) -> "Message":
        self.attributes.append((kind, value))
        return self

    def encode(self, key: bytes | None = None, fingerprint: bool = True) -> bytes:
        body = b"".join(struct.pack("!HH", k, len(v)) + v + b"\0" * (-len(v) % 4) for k, v in self.attributes)

        def header(extra: int) -> bytes:
            return struct.pack("!HHI", message_type(self.method, self.cls), len(body) + extra, MAGIC) + self.txid

        if key is not None:
            mac = hmac.new(key, header(24) + body, hashlib.sha1).digest()
            body += struct.pack("!HH", A_MI, 20) + mac
        if fingerprint:
            crc = zlib.crc32(header(8) + body) ^ 0x5354554E
            body += struct.pack("!HHI", A_FINGERPRINT, 4, crc)
        return header(0) + body


class Reply:
    def __init__(self, data: bytes):
        kind, length, _magic = struct.unpack("!HHI", data[:8])
        self.txid = data[8:20]
        self.cls = ((kind >> 4) & 1) | ((kind >> 7) & 2)
        self.attributes: dict[int, bytes] = {}
        offset = 20
        while offset + 4 <= 20 + length:
            akind, alen = struct.unpack("!HH", data[offset:offset + 4])
            self.attributes.setdefault(akind, data[offset + 4:offset + 4 + alen])
            offset += 4 + alen + (-alen % 4)

    @property
    def error(self) -> int | None:
        value = self.attributes.get(A_ERROR)
        return None if value is None else (value[2] & 7) * 100 + value[3]

    @property
    def success(self) -> bool:
        return self.cls == 2


def long_term_key(user: str, password: str) -> bytes:
    return hashlib.md5(f"{user}:{REALM}:{password}".encode()).digest()


class Client:
    """One UDP client of the TURN server, with the long-term credential dance built in."""

    def __init__(self, port: int, user: str = USER, password: str = PASSWORD):
        self.server = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(3)
        self.user, self.key, self.nonce = user, long_term_key(user, password), None

    def exchange(self, message: Message, key: bytes | None = None) -> Reply:
        self.sock.sendto(message.encode(key), self.server)
        while True:
            reply = Reply(self.sock.recvfrom(65536)[0])
            if reply.txid == message.txid:
                return reply

    def request(self, method: int, attributes: list[tuple[int, bytes]], *, user: str | None = None) -> Reply:
        """An authenticated request; fetches a nonce first when there is none yet."""
        if self.nonce is None:
            challenge = self.exchange(Message(method))
            assert challenge.error == 401, challenge.attributes
            self.nonce = challenge.attributes[A_NONCE]
        message = Message(method)
        for kind, value in attributes:
            message.add(kind, value)
        message.add(A_USERNAME, (user or self.user).encode()).add(A_REALM, REALM.encode()).add(A_NONCE, self.nonce)
        return self.exchange(message, self.key)

    def allocate(self) -> Reply:
        return self.request(ALLOCATE, [(A_TRANSPORT, bytes([17, 0, 0, 0]))])

    def close(self):
        self.sock.close()


TURN_SETTINGS = {"turn.users": f"{USER}:{PASSWORD},alice:wonderland", "turn.secret": SECRET, "turn.userQuota": 100}
OPEN_LOOPBACK = dict(TURN_SETTINGS, **{"turn.allowedPeers": "127.0.0.0/8"})


def uclient(port: int, *flags: str, host: str = "127.0.0.1") -> dict:
    """Runs coturn's client in client-to-client mode and reads its printed totals."""
    result = subprocess.run(
        [UCLIENT, "-y", "-c", "-m", "10", "-n", "1000", "-l", "100", "-z", "5", "-p", str(port), *flags, host],
        capture_output=True, text=True, timeout=90)
    output = result.stdout + result.stderr
    totals = re.search(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", output, re.M)
    lost = re.search(r"Total lost packets (\d+)", output)
    assert totals and lost, output[-3000:]
    return {"sent": int(totals.group(1)), "received": int(totals.group(2)), "lost": int(lost.group(1)), "output": output}


# -- coturn's client against Parley ----------------------------------------------------------------

@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_coturn_client_relays_over_ipv6_without_loss(server_factory, transport):
    """TURN on ::1: coturn's client asks for IPv6 relays (-x, REQUESTED-ADDRESS-FAMILY), relays
    through them and loses nothing."""
    server = server_factory(dict(TURN_SETTINGS, **{"turn.allowedPeers": "::1/128", "log.level": "warning"}), host="::1")
    flags = ["-u", USER, "-w", PASSWORD, "-x"] + (["-t"] if transport == "tcp" else [])
    totals = uclient(server.turn_port(), *flags, host="::1")
    assert totals["sent"] == 10_000 and totals["received"] == 10_000 and totals["lost"] == 0, totals["output"][-2000:]
    assert metric(server, "parley_turn_allocations_created_total") >= 10


@pytest.mark.parley_set(OPEN_LOOPBACK)
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_coturn_client_relays_10_clients_by_1000_messages_without_loss(server, transport):
    flags = ["-u", USER, "-w", PASSWORD] + (["-t"] if transport == "tcp" else [])
    totals = uclient(server.turn_port(), *flags)
    assert totals["sent"] == 10_000 and totals["received"] == 10_000 and totals["lost"] == 0, totals["output"][-2000:]
    assert metric(server, "parley_turn_relayed_packets_total", direction="to_peer") >= 10_000
    assert metric(server, "parley_turn_allocations_created_total") >= 10


@pytest.mark.parley_set(OPEN_LOOPBACK)
def test_coturn_client_with_send_and_data_indications(server):
    """-s: no channels, every message rides a Send indication in and a Data indication out."""
    totals = uclient(server.turn_port(), "-u", USER, "-w", PASSWORD, "-s")
    assert totals["received"] == 10_000 and totals["lost"] == 0, totals["output"][-2000:]


@pytest.mark.parley_set(OPEN_LOOPBACK)
def test_coturn_client_with_rest_credentials(server):
    totals = uclient(server.turn_port(), "-u", "bob", "-W", SECRET)
    assert totals["received"] == 10_000 and totals["lost"] == 0, totals["output"][-2000:]


@pytest.mark.parley_set(OPEN_LOOPBACK)
def test_rtcp_port_reservations_of_coturn_client(server):
    """Without -c the client asks for an even port and a reserved odd one (EVEN-PORT R bit)."""
    result = subprocess.run([UCLIENT, "-y", "-m", "2", "-n", "50", "-z", "5", "-u", USER, "-w", PASSWORD,
                             "-p", str(server.turn_port()), "127.0.0.1"], capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert re.search(r"Total lost packets 0 ", output), output[-2000:]


# -- the protocol, error by error -------------------------------------------------------------------

@pytest.mark.parley_set(dict(TURN_SETTINGS, **{"turn.userQuota": 2}))
def test_turn_errors_follow_rfc_8656(server):
    port = server.turn_port()
    a, b, c, d = Client(port), Client(port), Client(port), Client(port, "alice", "wonderland")
    try:
        # STUN binding: our own address back.
        binding = a.exchange(Message(BINDING))
        assert binding.success and decode_xor_address(binding.attributes[A_MAPPED], binding.txid) == ("127.0.0.1", a.sock.getsockname()[1])

        # 401 with REALM and NONCE, then a wrong password is 401 again and counted.
        challenge = a.exchange(Message(ALLOCATE).add(A_TRANSPORT, bytes([17, 0, 0, 0])))
        assert challenge.error == 401 and challenge.attributes[A_REALM] == REALM.encode() and A_NONCE in challenge.attributes
        wrong = Client(port, USER, "not-the-password")
        assert wrong.allocate().error == 401
        assert metric(server, "parley_turn_auth_failures_total") >= 1
        # A nonce the server never issued (or one too old) is stale: 438 with a fresh one.
        a.nonce = b"5f5e100-000000000000000000000000"
        stale = a.allocate()
        assert stale.error == 438 and A_NONCE in stale.attributes
        a.nonce = stale.attributes[A_NONCE]

        # 400 without REQUESTED-TRANSPORT; 442 for TCP relays; 420 naming an unknown attribute.
        assert a.request(ALLOCATE, []).error == 400
        assert a.request(ALLOCATE, [(A_TRANSPORT, bytes([6, 0, 0, 0]))]).error == 442
        unknown = a.request(ALLOCATE, [(A_TRANSPORT, bytes([17, 0, 0, 0])), (0x7777, b"\x01\x02\x03\x04")])
        assert unknown.error == 420 and unknown.attributes[A_UNKNOWN] == b"\x77\x77"
        # 437 before an allocation exists; 400 for an unsupported method.
        assert a.request(REFRESH, [(A_LIFETIME, struct.pack("!I", 600))]).error == 437
        assert a.request(CONNECT, [(A_PEER, xor_address("8.8.8.8", 80, b"\0" * 12))]).error == 400

        allocated = a.allocate()
        assert allocated.success, allocated.attributes
        relay_host, relay_port = decode_xor_address(allocated.attributes[A_RELAYED], allocated.txid)
        assert relay_host == "127.0.0.1" and 49152 <= relay_port <= 65535
        assert struct.unpack("!I", allocated.attributes[A_LIFETIME])[0] == 600
        # Another Allocate on the same 5-tuple is 437.
        assert a.allocate().error == 437
        # 441 when another user speaks for this allocation.
        impostor = Message(REFRESH).add(A_LIFETIME, struct.pack("!I", 600))
        impostor.add(A_USERNAME, b"alice").add(A_REALM, REALM.encode()).add(A_NONCE, a.nonce)
        assert a.exchange(impostor, long_term_key("alice", "wonderland")).error == 441

        # The peer policy: loopback is denied (403), except Parley's own media ports.
        def peer(host, port_=9):
            return (A_PEER, xor_address(host, port_, b"\0" * 12))

        for denied in ["127.0.0.2", "10.1.2.3", "192.168.1.1", "169.254.169.254", "0.0.0.0", "224.0.0.1", "100.64.0.1"]:
            refused = a.request(CREATE_PERMISSION, [peer(denied)])
            assert refused.error == 403, (denied, refused.attributes)
        assert a.request(CREATE_PERMISSION, [peer("::ffff:127.0.0.1")]).error == 443  # IPv6 peer on an IPv4 relay
        assert a.request(CHANNEL_BIND, [(A_CHANNEL, struct.pack("!HH", 0x4000, 0)), peer("127.0.0.1", 22)]).error == 403
        assert metric(server, "parley_turn_denied_peers_total") >= 8
        assert a.request(CREATE_PERMISSION, [peer("8.8.8.8")]).success
        assert a.request(CHANNEL_BIND, [(A_CHANNEL, struct.pack("!HH", 0x3FFF, 0)), peer("8.8.8.8")]).error == 400
        assert a.request(CHANNEL_BIND, [(A_CHANNEL, struct.pack("!HH", 0x4001, 0)), peer("8.8.8.8", 53)]).success
        assert a.request(CHANNEL_BIND, [(A_CHANNEL, struct.pack("!HH", 0x4001, 0)), peer("8.8.4.4", 53)]).error == 400

        # Quota: two allocations per user, the third is 486.
        assert b.allocate().success
        refused = c.allocate()
        assert refused.error == 486
        assert metric(server, "parley_turn_quota_refusals_total") == 1
        assert d.allocate().success  # another user has their own quota

        # Refresh with lifetime 0 deletes; then the allocation is gone (437).
        deleted = a.request(REFRESH, [(A_LIFETIME, struct.pack("!I", 0))])
        assert deleted.success and struct.unpack("!I", deleted.attributes[A_LIFETIME])[0] == 0
        assert a.request(REFRESH, [(A_LIFETIME, struct.pack("!I", 600))]).error == 437
        assert c.allocate().success  # the quota was given back
    finally:
        for client in (a, b, c, d):
            client.close()


@pytest.mark.parley_set(dict(TURN_SETTINGS, **{"turn.relayPortMin": 40999, "turn.relayPortMax": 40999}))
def test_no_free_relay_port_is_508(server):
    port = server.turn_port()
    first, second = Client(port), Client(port)
    try:
        assert first.allocate().success
        assert second.allocate().error == 508
        assert metric(server, "parley_turn_allocations") == 1
    finally:
        first.close()
        second.close()


@pytest.mark.parley_set({"turn.rateLimit.perSecond": 5, "turn.rateLimit.burst": 10})
def test_unauthenticated_requests_are_rate_limited(server):
    port = server.turn_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        for _ in range(100):
            sock.sendto(Message(ALLOCATE).add(A_TRANSPORT, bytes([17, 0, 0, 0])).encode(), ("127.0.0.1", port))
        answers = 0
        try:
            while True:
                sock.recvfrom(2048)
                answers += 1
        except socket.timeout:
            pass
    assert 10 <= answers <= 20, answers
    assert metric(server, "parley_turn_dropped_total", reason="rate_limited") >= 80


@pytest.mark.parley_set(dict(OPEN_LOOPBACK, **{"turn.maxBitrate": 100_000}))
def test_an_allocation_over_its_bandwidth_is_cut(server):
    """100 kbit/s per allocation: 10 sessions of 100-byte messages every 5 ms (160 kbit/s) lose some."""
    totals = uclient(server.turn_port(), "-u", USER, "-w", PASSWORD)
    assert totals["lost"] > 0, totals["output"][-1000:]
    assert metric(server, "parley_turn_dropped_total", reason="bandwidth") > 0


def test_garbage_is_counted_and_the_server_keeps_answering(server):
    port = server.turn_port()
    rng = __import__("random").Random(7)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for index in range(2000):
            size = rng.randrange(0, 200)
            data = bytes(rng.randrange(256) for _ in range(size))
            if index % 3 == 0 and size >= 20:  # STUN-shaped garbage: the cookie, nonsense after it
                data = bytes([0, 1]) + data[2:4] + struct.pack("!I", MAGIC) + data[8:]
            sock.sendto(data, ("127.0.0.1", port))
    # On TCP a frame that is neither STUN nor ChannelData ends the connection; a well-framed but
    # malformed message is dropped and the connection keeps working.
    with socket.create_connection(("127.0.0.1", port), timeout=3) as stream:
        stream.sendall(b"\xff" * 40)
        try:
            assert stream.recv(100) == b""
        except ConnectionResetError:
            pass
    with socket.create_connection(("127.0.0.1", port), timeout=3) as stream:
        overrun = struct.pack("!HHI", 0x0003, 8, MAGIC) + os.urandom(12) + struct.pack("!HH", 0xFFFF, 64) + b"abcd"
        binding = Message(BINDING)
        stream.sendall(overrun + binding.encode())
        header = stream.recv(20, socket.MSG_WAITALL)
        body = stream.recv(struct.unpack("!H", header[2:4])[0], socket.MSG_WAITALL)
        assert Reply(header + body).success
    time.sleep(0.3)
    client = Client(port)
    try:
        reply = client.exchange(Message(BINDING))
        assert reply.success
    finally:
        client.close()
    assert metric(server, "parley_turn_dropped_total", reason="malformed") >= 500


# -- WebRTC peers through relay candidates only ---------------------------------------------------

@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_aiortc_relay_only_publisher_reaches_a_subscriber(server, transport):
    """Loopback is not opened (turn.allowedPeers is empty): only the SFU's media ports are reachable."""

    async def scenario():
        alice = Participant(server.rtc_url(server.token("alice", "relay")), "alice", relay_transport=transport)
        bob = Participant(server.rtc_url(server.token("bob", "relay")), "bob")
        await alice.connect()
        await bob.connect()
        try:
            servers = alice.joined["iceServers"]
            assert any(u.endswith("?transport=udp") for s in servers for u in s["urls"]), servers
            assert all(s.get("username", "x").split(":")[-1] in ("alice", "x") for s in servers), servers
            await alice.publish(tone=440.0, video=False)
            await wait_for(lambda: len(bob.tracks_from(alice.sid, "audio")) == 1, 20, what="bob's audio track")
            audio = bob.tracks_from(alice.sid, "audio")[0]
            await wait_for(lambda: len(audio.audio()) >= 3 * 48_000, 25, what="3 s of audio through TURN")
            frequency = audio.dominant_frequency(2.0)
            assert abs(frequency - 440) <= 10, frequency
            local = alice.publisher.localDescription.sdp
            assert "typ relay" in local and "typ host" not in local, local
        finally:
            await alice.close()
            await bob.close()
        assert metric(server, "parley_turn_relayed_packets_total", direction="to_peer") > 100
        assert metric(server, "parley_turn_allocations_created_total") >= 1

    run(scenario(), timeout=90)
