"""Two Parley nodes on one PostgreSQL: they see each other through their leases, a room lives on
exactly one of them, a client that reaches the other node is relayed to it, and when that node
dies the room comes back on the survivor with its history.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
import websockets

from test_signaling_contract import Pool, T, metric, run, run_value

# Short leases so a lost node lapses fast; a short drain so a SIGTERM at teardown (which drains a
# node of a cluster) does not wait out the default minute.
LEASE = {"cluster.leaseDuration": "2s", "cluster.renewInterval": "400ms", "node.drainTimeout": "1s", "log.level": "warning"}


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.1)


def node_names(server) -> list[str]:
    r = server.admin("GET", "/v1/nodes")
    assert r.status == 200, r
    return [n["name"] for n in r.json()["nodes"]]


def start_pair(server_factory, postgres, a_sets: dict | None = None, b_sets: dict | None = None):
    url = postgres.create_database()
    a = server_factory({"database.url": url, "server.nodeName": "node-a", **LEASE, **(a_sets or {})})
    b = server_factory({"database.url": url, "server.nodeName": "node-b", **LEASE, **(b_sets or {})})
    wait_for(lambda: node_names(a) == ["node-a", "node-b"] and node_names(b) == ["node-a", "node-b"], 5, "both nodes listed")
    return a, b


def test_nodes_see_each_other_and_a_dead_one_lapses(postgres, server_factory):
    a, b = start_pair(server_factory, postgres)
    nodes = {n["name"]: n for n in b.admin("GET", "/v1/nodes").json()["nodes"]}
    assert nodes["node-a"]["signalingURL"] == a.url and nodes["node-b"]["signalingURL"] == b.url, nodes
    assert nodes["node-a"]["mediaAddresses"] and nodes["node-a"]["turnAddress"].endswith(f":{a.turn_port()}"), nodes
    assert nodes["node-a"]["leaseUntil"] > nodes["node-a"]["startedAt"]
    assert b.http("GET", "/v1/nodes").status == 401
    wait_for(lambda: metric(b.http("GET", "/metrics").text, "parley_cluster_nodes") == 2, 3, "2 nodes on /metrics")

    a.send_signal(signal.SIGKILL)
    a.wait_exit()
    killed = time.monotonic()
    wait_for(lambda: node_names(b) == ["node-b"], 5, "the dead node lapsing")
    assert time.monotonic() - killed < 4.5
    wait_for(lambda: metric(b.http("GET", "/metrics").text, "parley_cluster_nodes") == 1, 3, "1 node on /metrics")
    # A node that stops on purpose withdraws at once.
    c = server_factory({"database.url": a.sets["database.url"], "server.nodeName": "node-c", **LEASE})
    wait_for(lambda: node_names(b) == ["node-b", "node-c"], 5, "node-c listed")
    c.stop()
    assert node_names(b) == ["node-b"]


def test_a_room_lives_on_one_node_and_moves_when_it_dies(postgres, server_factory):
    a, b = start_pair(server_factory, postgres)

    async def relayed(pool):
        alice = await pool.open("alice", "r")
        assert alice.joined["room"]["node"] == "node-a", alice.joined["room"]
        await alice.chat("before the loss", client_msg_id="m1")
        # The same room through the other node: relayed to node-a, one room, one chat.
        bob = await Pool(b).open("bob", "r")
        assert bob.joined["room"]["node"] == "node-a", bob.joined["room"]
        assert [m["text"] for m in bob.joined["chat"]["messages"]] == ["before the loss"]
        assert (await alice.expect("participant.joined"))["participant"]["identity"] == "bob"
        ack = await bob.chat("through the relay", client_msg_id="m2")
        assert ack["message"]["seq"] == 2
        assert (await alice.expect("chat"))["message"]["text"] == "through the relay"
        await alice.chat("back to bob")
        assert (await bob.expect("chat"))["message"]["text"] == "back to bob"
        assert (await bob.call("ping"))["type"] == "pong"
        # The admin API answers from either node: node-b forwards to the room's node.
        r = b.admin("GET", "/v1/rooms/r/participants")
        assert r.status == 200 and sorted(p["identity"] for p in r.json()["participants"]) == ["alice", "bob"], r
        assert r.headers.get("X-Parley-Node") == "node-a", r.headers
        await bob.close()

    run(a, relayed)
    assert a.admin("GET", "/v1/rooms/r").json()["node"] == "node-a"
    assert b.admin("GET", "/v1/rooms/r").json()["node"] == "node-a"
    r = b.admin("GET", "/v1/rooms/r/messages")
    assert [m["text"] for m in r.json()["messages"]] == ["before the loss", "through the relay", "back to bob"], r
    assert b.http("GET", "/v1/rooms/r").status == 401  # the owner still checks the caller's token
    assert metric(b.http("GET", "/metrics").text, "parley_relayed_sessions_total") >= 1
    assert metric(a.http("GET", "/metrics").text, "parley_relayed_sessions_received_total") >= 1

    a.send_signal(signal.SIGKILL)
    a.wait_exit()
    killed = time.monotonic()

    async def on_b(pool):
        while True:  # until node-a's lease lapses, the room is still its own (and unreachable)
            client = await pool.open("bob", "r", expect_joined=False)
            first = await client._recv(T)
            if first["type"] == "joined":
                break
            assert first["code"] == "unavailable", first
            assert time.monotonic() - killed < 6, "the room did not move within the lease"
            await asyncio.sleep(0.3)
        assert first["room"]["node"] == "node-b"
        assert [m["text"] for m in first["chat"]["messages"]] == ["before the loss", "through the relay", "back to bob"]
        return time.monotonic() - killed

    moved_after = run_value(b, on_b)
    assert moved_after < 6
    assert b.admin("GET", "/v1/rooms/r").json()["node"] == "node-b"


def test_a_relay_needs_the_cluster_credential(postgres, server_factory):
    a, b = start_pair(server_factory, postgres)
    token = a.token("mallory", "r")

    async def forged():
        now = int(time.time())
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(a.rtc_url(token), additional_headers={"X-Parley-Relay": f"node-b.{now}.{'0' * 64}"}):
                pass
        assert refused.value.response.status_code == 401

    asyncio.run(forged())


def test_concurrent_first_joins_through_two_nodes_make_one_room(postgres, server_factory):
    a, b = start_pair(server_factory, postgres)

    async def body(pool):
        pool_b = Pool(b)
        try:
            for n in range(10):
                room = f"race-{n}"
                clients = await asyncio.gather(pool.open(f"x{n}", room), pool_b.open(f"y{n}", room))
                nodes = {c.joined["room"]["node"] for c in clients}
                assert len(nodes) == 1, nodes
                sids = {c.joined["room"]["sid"] for c in clients}
                assert len(sids) == 1, sids
        finally:
            await pool_b.close_all()

    run(a, body)
    # Either node lists every room of the cluster, each once, with its node.
    for server in (a, b):
        listed = server.admin("GET", "/v1/rooms").json()["rooms"]
        assert [r["name"] for r in listed] == sorted(f"race-{n}" for n in range(10)), listed
        assert all(r["node"] in ("node-a", "node-b") for r in listed), listed
