"""A Parley cluster with real media and real trouble: tones between participants on different
nodes, rooms placed by load, a node drained onto another, Swift SDK participants that come back by
themselves after their node is killed, and a PostgreSQL outage that running rooms ride out.
"""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import subprocess
import threading
import time

from rtc_peer import Participant, wait_for as wait_async
from test_cluster_postgres import LEASE, start_pair, wait_for
from test_media_aiortc import metric
from test_signaling_contract import Pool
from test_signaling_contract import run as run_pool


def run(coro, timeout: float = 90.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def join(server, identity: str, room: str) -> Participant:
    participant = Participant(server.rtc_url(server.token(identity, room)), identity)
    await participant.connect()
    return participant


def test_tones_cross_between_participants_on_different_nodes(postgres, server_factory):
    a, b = start_pair(server_factory, postgres)

    async def scenario():
        alice = await join(a, "alice", "tones")
        bob = await join(b, "bob", "tones")  # relayed: the room lives on node-a
        try:
            assert bob.joined["room"]["node"] == "node-a", bob.joined["room"]
            await alice.publish(tone=440.0, video=False)
            await bob.publish(tone=660.0, video=False)
            await wait_async(lambda: bob.tracks_from(alice.sid, "audio") and alice.tracks_from(bob.sid, "audio"), 15,
                             what="each other's audio")
            heard_by_bob = bob.tracks_from(alice.sid, "audio")[0]
            heard_by_alice = alice.tracks_from(bob.sid, "audio")[0]
            await wait_async(lambda: len(heard_by_bob.audio()) >= 3 * 48_000 and len(heard_by_alice.audio()) >= 3 * 48_000, 20,
                             what="3 s of audio each way")
            assert abs(heard_by_bob.dominant_frequency(2.0) - 440) <= 10
            assert abs(heard_by_alice.dominant_frequency(2.0) - 660) <= 10
        finally:
            await alice.close()
            await bob.close()

    run(scenario())
    # Media went to the room's node only: node-b relayed signaling and forwarded nothing.
    assert metric(a, "parley_media_forwarded_packets_total") > 100
    assert metric(b, "parley_media_forwarded_packets_total") == 0


def test_a_full_node_places_new_rooms_on_the_least_loaded(postgres, server_factory):
    a, b = start_pair(server_factory, postgres, a_sets={"node.maxParticipants": "1"})

    async def body(pool):
        first = await pool.open("alice", "first")
        assert first.joined["room"]["node"] == "node-a"
        # node-a is at its cap: a new room asked of it opens on node-b, and node-a relays.
        second = await pool.open("bob", "second")
        assert second.joined["room"]["node"] == "node-b", second.joined["room"]
        # A room already on node-a stays there, cap or not: its people are together.
        again = await pool.open("carol", "first")
        assert again.joined["room"]["node"] == "node-a"
        ack = await second.chat("through the relay to node-b")
        assert ack["message"]["seq"] == 1

    run_pool(a, body)
    assert metric(a, "parley_rooms_placed_elsewhere_total") == 1
    assert b.admin("GET", "/v1/rooms/second").json()["node"] == "node-b"


def parley(server, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([server.binary, *args], capture_output=True, text=True, timeout=timeout)


def test_drain_moves_the_participants_left_to_another_node(postgres, server_factory):
    a, b = start_pair(server_factory, postgres)

    async def scenario():
        pool_a, pool_b = Pool(a), Pool(b)
        try:
            alice = await pool_a.open("alice", "meeting")
            bob = await pool_a.open("bob", "meeting")
            assert alice.joined["room"]["node"] == "node-a"
            await alice.chat("before the drain", client_msg_id="d1")
            # Drained through the other node's API: the request is forwarded to node-a.
            drain = await asyncio.to_thread(parley, b, "node", "drain", "node-a", "--timeout", "2s", "--url", b.url)
            assert drain.returncode == 0, drain.stdout + drain.stderr
            assert "waiting for 1 room(s), 2 participant(s)" in drain.stdout, drain.stdout
            assert "drained, 2 participant(s) moved" in drain.stdout, drain.stdout
            moved = []
            for client in (alice, bob):
                told = await client.expect("reconnect")
                assert told["reason"] == "node_draining" and told["url"] == b.url, told
                moved.append(told)
            # They follow the URL, fresh, and find the room on node-b with its history.
            alice2 = await pool_b.open("alice", "meeting")
            bob2 = await pool_b.open("bob", "meeting")
            assert alice2.joined["room"]["node"] == "node-b" and bob2.joined["room"]["node"] == "node-b"
            assert [m["text"] for m in bob2.joined["chat"]["messages"]] == ["before the drain"]
            ack = await bob2.chat("after the drain")
            assert ack["message"]["seq"] == 2
            assert (await alice2.expect("chat"))["message"]["text"] == "after the drain"
            # node-a takes no new rooms: one asked of it opens on node-b (relayed).
            carol = await pool_a.open("carol", "later")
            assert carol.joined["room"]["node"] == "node-b", carol.joined["room"]
        finally:
            await pool_a.close_all()
            await pool_b.close_all()

    run(scenario())
    nodes = {n["name"]: n for n in b.admin("GET", "/v1/nodes").json()["nodes"]}
    assert nodes["node-a"]["draining"] is True and nodes["node-b"]["draining"] is False, nodes
    assert a.http("GET", "/readyz").status == 500
    status = b.admin("GET", "/v1/nodes/node-a/drain")
    assert status.status == 200 and status.json()["phase"] == "drained" and status.json()["moved"] == 2, status
    assert status.headers.get("X-Parley-Node") == "node-a"
    assert metric(a, "parley_drained_participants_total") == 2
    assert metric(a, "parley_node_draining") == 1
    # A drain needs a cluster; a drained node cannot be undrained.
    assert b.admin("DELETE", "/v1/nodes/node-a/drain").status == 409


def test_a_drain_that_is_still_waiting_can_be_cancelled(postgres, server_factory):
    a, b = start_pair(server_factory, postgres)

    async def body(pool):
        await pool.open("alice", "stay")
        started = a.admin("POST", "/v1/nodes/node-a/drain", body={"timeout": "60s"})
        assert started.status == 202 and started.json()["phase"] == "waiting", started
        assert started.json()["participants"] == 1
        wait_for(lambda: {n["name"]: n["draining"] for n in b.admin("GET", "/v1/nodes").json()["nodes"]}.get("node-a"), 3,
                 "node-a draining in the cluster's view")
        cancelled = b.admin("DELETE", "/v1/nodes/node-a/drain")
        assert cancelled.status == 200 and cancelled.json()["phase"] == "serving", cancelled
        assert a.http("GET", "/readyz").status == 200
        again = await Pool(a).open("bob", "fresh")
        assert again.joined["room"]["node"] == "node-a"
        await again.close()

    run_pool(a, body)
    assert a.admin("POST", "/v1/nodes/node-z/drain").status == 404


def test_sigterm_in_a_cluster_drains_onto_the_other_node(postgres, server_factory):
    a, b = start_pair(server_factory, postgres, a_sets={"node.drainTimeout": "1s"})

    async def scenario():
        pool = Pool(a)
        try:
            alice = await pool.open("alice", "term")
            a.send_signal(signal.SIGTERM)
            told = await alice.expect("reconnect", timeout=10)
            assert told["url"] == b.url, told
        finally:
            await pool.close_all()

    run(scenario())
    assert a.wait_exit() == 0

    async def back():
        pool = Pool(b)
        try:
            alice = await pool.open("alice", "term")
            assert alice.joined["room"]["node"] == "node-b"
        finally:
            await pool.close_all()

    run(back())


class JoinProcess:
    """`parley join`: one Swift SDK participant, its events read from its JSON lines."""

    def __init__(self, binary: str, identity: str, room: str, urls: list[str], tone: float, extra: list[str] | None = None):
        args = [binary, "join", "--room", room, "--identity", identity, "--tone", str(tone), *(extra or [])]
        for url in urls:
            args += ["--url", url]
        self.identity = identity
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: list[dict] = []
        self.lines: queue.Queue = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.events.append(event)

    def find(self, predicate, since: int = 0):
        return next((e for e in self.events[since:] if predicate(e)), None)

    def wait(self, predicate, timeout: float, what: str, since: int = 0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.find(predicate, since)
            if found:
                return found
            assert self.proc.poll() is None, f"{self.identity} exited: {self.proc.stderr.read()[-2000:]}"
            time.sleep(0.1)
        raise AssertionError(f"{self.identity}: no {what} within {timeout}s; events: {self.events[-10:]}")

    def hears(self, other: str, since: int = 0):
        # A tone is 50 packets a second: 40 is a second heard without a gap worth the name.
        return lambda e: e["event"] == "media" and e["audio"].get(other, 0) >= 40

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def test_swift_sdk_participants_come_back_by_themselves_when_their_node_dies(postgres, server_factory):
    a, b = start_pair(server_factory, postgres)
    alice = JoinProcess(a.binary, "alice", "sdk", [a.ws_base, b.ws_base], 440)
    joined = alice.wait(lambda e: e["event"] == "joined", 15, "joined")
    assert joined["node"] == "node-a", joined
    bob = JoinProcess(a.binary, "bob", "sdk", [b.ws_base, a.ws_base], 660)
    try:
        assert bob.wait(lambda e: e["event"] == "joined", 15, "joined")["node"] == "node-a"
        alice.wait(alice.hears("bob"), 20, "bob's tone")
        bob.wait(bob.hears("alice"), 20, "alice's tone")

        mark_alice, mark_bob = len(alice.events), len(bob.events)
        a.send_signal(signal.SIGKILL)
        a.wait_exit()
        killed = time.monotonic()
        for person in (alice, bob):
            since = mark_alice if person is alice else mark_bob
            person.wait(lambda e: e["event"] == "reconnecting", 10, "reconnecting", since)
            back = person.wait(lambda e: e["event"] == "reconnected", 30, "reconnected", since)
            assert back["resumed"] is False and back["node"] == "node-b", back
        came_back = time.monotonic() - killed
        # Media again, both ways, on node-b: each published again in the new session.
        alice.wait(alice.hears("bob"), 20, "bob's tone after the loss", mark_alice)
        bob.wait(bob.hears("alice"), 20, "alice's tone after the loss", mark_bob)
        assert came_back < 15, came_back
        assert b.admin("GET", "/v1/rooms/sdk").json()["node"] == "node-b"
    finally:
        alice.close()
        bob.close()


def test_a_postgres_outage_keeps_running_rooms_and_refuses_chat_until_it_is_back(postgres, server_factory):
    a, b = start_pair(server_factory, postgres, a_sets={"database.statementTimeout": "2s"},
                      b_sets={"database.statementTimeout": "2s"})

    async def scenario():
        alice = await join(a, "alice", "outage")
        bob = await join(b, "bob", "outage")  # relayed to node-a
        pool = Pool(a)
        try:
            await alice.publish(tone=440.0, video=False)
            await wait_async(lambda: bob.tracks_from(alice.sid, "audio"), 15, what="alice's audio at bob")
            heard = bob.tracks_from(alice.sid, "audio")[0]
            await wait_async(lambda: len(heard.audio()) >= 2 * 48_000, 10, what="2 s of audio")
            acked = await alice.request({"type": "chat.send", "clientMsgId": "ok-1", "text": "before"})
            assert acked["type"] == "chat.ack", acked

            await asyncio.to_thread(postgres.stop)
            stopped = time.monotonic()
            samples_at_stop = len(heard.audio())
            refused = await alice.request({"type": "chat.send", "clientMsgId": "lost-1", "text": "during"}, timeout=15, allow_error=True)
            assert refused["type"] == "error" and refused["code"] == "unavailable", refused
            refused = await bob.request({"type": "chat.send", "clientMsgId": "lost-2", "text": "during, relayed"}, timeout=15, allow_error=True)
            assert refused["type"] == "error" and refused["code"] == "unavailable", refused
            # A room that needs placing cannot be placed.
            newcomer = await pool.open("carol", "new-room", expect_joined=False)
            first = await newcomer._recv(15)
            assert first["type"] == "error" and first["code"] == "unavailable", first
            await asyncio.sleep(max(0, 10 - (time.monotonic() - stopped)))
            outage = time.monotonic() - stopped
            # Media never stopped: nearly all of the outage's audio arrived.
            arrived = (len(heard.audio()) - samples_at_stop) / 48_000
            assert arrived >= outage - 1.5, (arrived, outage)
            assert (await alice.request({"type": "ping"}))["type"] == "pong"

            await asyncio.to_thread(postgres.start)
            # Everything comes back by itself: chat is stored and acked again, new rooms open.
            deadline = time.monotonic() + 20
            while True:
                reply = await alice.request({"type": "chat.send", "clientMsgId": "ok-2", "text": "after"}, timeout=15, allow_error=True)
                if reply["type"] == "chat.ack":
                    break
                assert time.monotonic() < deadline, reply
                await asyncio.sleep(0.5)
            assert reply["message"]["seq"] == 2, reply
            later = await pool.open("carol", "new-room-after")
            assert later.joined["room"]["node"] in ("node-a", "node-b")
            history = await alice.request({"type": "chat.history", "limit": 50})
            assert [m["text"] for m in history["messages"]] == ["before", "after"], history
        finally:
            await pool.close_all()
            await alice.close()
            await bob.close()

    run(scenario(), timeout=120)
    wait_for(lambda: metric(a, "parley_cluster_nodes") == 2, 10, "both nodes live again")
    assert metric(a, "parley_cluster_lease_renewal_failures_total") >= 1


def test_the_web_client_comes_back_by_itself_when_the_rooms_node_dies(postgres, server_factory):
    from selenium.webdriver.common.by import By
    from test_web_client_chromium import join_in_browsers, stats, wait_until

    a, b = start_pair(server_factory, postgres)
    # The room lives on node-a; the pages come from node-b (as behind a load balancer that
    # happened to pick it), so their signaling is relayed.
    assert a.admin("POST", "/v1/rooms", body={"name": "web"}).status == 201
    drivers = []
    try:
        join_in_browsers(b, "web", ["Ada", "Bo"], drivers)
        for driver in drivers:
            wait_until(lambda d=driver: d.find_element(By.ID, "status").text.startswith("in web"), 15, "joined")
            wait_until(lambda d=driver: stats(d).get("framesDecoded", 0) > 10, 30, "the other's video")
        a.send_signal(signal.SIGKILL)
        a.wait_exit()
        for driver in drivers:
            status = wait_until(
                lambda d=driver: (lambda t: t if "reconnected to web on node node-b" in t else None)(
                    d.find_element(By.ID, "status").text),
                30, "the page saying it is back on node-b")
            assert "new session" in status, status
            # Media again, in the new session's connections.
            wait_until(lambda d=driver: (lambda s: s.get("framesDecoded", 0) > 10 and s.get("audioBytesReceived", 0) > 1000)(stats(d)),
                       30, "video and audio again after the loss")
            assert len(driver.find_elements(By.CSS_SELECTOR, ".tile:not([data-sid='local'])")) == 1
        assert b.admin("GET", "/v1/rooms/web").json()["node"] == "node-b"
    finally:
        for driver in drivers:
            driver.quit()
