"""The store in PostgreSQL (`database.url`), against a real PostgreSQL server started for each test.

Acked chat lives in PostgreSQL, not on the node: a node killed with SIGKILL loses none of it, and
another node on the same database carries on the room's history and numbering. While PostgreSQL
is down a chat message is refused with `unavailable`, never acked; when it comes back, the same
message goes through by itself on retry.
"""

from __future__ import annotations

import asyncio
import signal
import time

from test_signaling_contract import T, run


def test_acked_chat_survives_sigkill_and_moves_to_another_node(postgres, server_factory):
    url = postgres.create_database()
    first = server_factory({"database.url": url, "log.level": "warning"})
    acked: list[dict] = []

    async def chat_on_first(pool):
        alice = await pool.open("alice", "r")
        bob = await pool.open("bob", "r")
        for n in range(30):
            sender = alice if n % 2 == 0 else bob
            acked.append((await sender.chat(f"m{n}", client_msg_id=f"c{n}"))["message"])
        acked.append((await alice.chat("just between us", to=["bob"]))["message"])

    run(first, chat_on_first)
    assert [m["seq"] for m in acked] == list(range(1, 32))
    first.send_signal(signal.SIGKILL)
    first.wait_exit()
    # The node kept nothing of it: its own SQLite file was never created.
    assert not first.db_path.exists()
    assert postgres.psql(url.rsplit("/", 1)[1].split("?")[0], "SELECT count(*) FROM chat_message").strip() == "31"

    second = server_factory({"database.url": url, "log.level": "warning"})

    async def history_on_second(pool):
        bob = await pool.open("bob", "r")
        h = await bob.call("chat.history", limit=100)
        assert h["messages"] == acked and h["hasMore"] is False
        carol = await pool.open("carol", "r")
        h = await carol.call("chat.history", limit=100)
        assert [m["seq"] for m in h["messages"]] == list(range(1, 31))  # the DM is not hers
        nxt = await carol.chat("after the loss")
        assert nxt["message"]["seq"] == 32
        dup = await bob.chat("m1", client_msg_id="c1")
        assert dup["duplicate"] is True and dup["message"] == acked[1]

    run(second, history_on_second)
    r = second.admin("GET", "/v1/rooms/r/messages")
    assert [m["seq"] for m in r.json()["messages"]][-2:] == [31, 32], r


def test_chat_is_refused_while_postgres_is_down_and_recovers(postgres, server_factory):
    url = postgres.create_database()
    server = server_factory({"database.url": url, "database.statementTimeout": "2s", "log.level": "error"})

    async def body(pool):
        alice = await pool.open("alice", "r")
        bob = await pool.open("bob", "r")
        first = await alice.chat("before", client_msg_id="one")
        assert first["message"]["seq"] == 1
        await bob.expect("chat")

        postgres.stop()
        started = time.monotonic()
        e = await alice.call("chat.send", text="during", clientMsgId="two")
        assert e["type"] == "error" and e["code"] == "unavailable", e
        assert "retry with the same clientMsgId" in e["message"], e
        assert time.monotonic() - started < 12, "the refusal took too long"
        await bob.quiet("chat")
        # Signaling itself goes on without the database.
        assert (await alice.call("ping"))["type"] == "pong"
        assert server.http("GET", "/readyz").status == 500

        postgres.start()
        deadline = time.monotonic() + 20
        while True:
            reply = await alice.call("chat.send", text="during", clientMsgId="two")
            if reply["type"] == "chat.ack":
                break
            assert reply["code"] == "unavailable", reply
            assert time.monotonic() < deadline, "chat did not come back after PostgreSQL did"
            await asyncio.sleep(0.5)
        assert reply["message"]["seq"] == 2 and reply["duplicate"] is False, reply
        got = await bob.expect("chat")
        assert got["message"]["text"] == "during"
        assert server.http("GET", "/readyz").status == 200

    run(server, body)
