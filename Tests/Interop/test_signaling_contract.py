"""Black-box tests of the Parley wire contract (/work/shared/PROTOCOL.md, docs/protocol.md).

Each test starts its own server (see conftest.py), talks to it over real WebSockets and HTTP on
127.0.0.1, and stops it with SIGTERM afterwards. Tests are sync functions that run an async body
with asyncio.run; every await is bounded by a timeout of a few seconds.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import socket
import time
import uuid

import pytest
import websockets

from conftest import admin_token, mint_token

T = 5.0  # bound for any single wait
TEST_TIMEOUT = 40.0  # bound for one test body
QUIET = 0.4  # how long "nothing arrives" is watched for


# ---------------------------------------------------------------------------------------------
# A small client


class Closed(Exception):
    pass


class Client:
    """One signaling connection. Frames that a wait skips over are kept in `backlog`."""

    def __init__(self, ws, label: str):
        self.ws = ws
        self.label = label
        self.backlog: list[dict] = []
        self.joined: dict | None = None
        self._ids = 0
        self.close_code: int | None = None
        self.close_reason: str | None = None

    # -- identity ----------------------------------------------------------------------------

    @property
    def sid(self) -> str:
        return self.joined["participant"]["sid"]

    @property
    def identity(self) -> str:
        return self.joined["participant"]["identity"]

    # -- sending -----------------------------------------------------------------------------

    def next_id(self) -> str:
        self._ids += 1
        return f"{self.label}-{self._ids}"

    async def send(self, frame) -> None:
        data = frame if isinstance(frame, (str, bytes)) else json.dumps(frame)
        await asyncio.wait_for(self.ws.send(data), T)

    async def request(self, type_: str, **fields) -> str:
        """Sends a request with a fresh id and returns the id."""
        rid = fields.pop("id", None) or self.next_id()
        await self.send({"type": type_, "id": rid, **fields})
        return rid

    async def call(self, type_: str, **fields) -> dict:
        """Sends a request and waits for the frame that answers it (`re` == id)."""
        rid = await self.request(type_, **fields)
        return await self.reply(rid)

    async def chat(self, text: str, to=None, client_msg_id: str | None = None) -> dict:
        fields = {"clientMsgId": client_msg_id or str(uuid.uuid4()), "text": text}
        if to is not None:
            fields["to"] = to
        reply = await self.call("chat.send", **fields)
        assert reply["type"] == "chat.ack", reply
        return reply

    # -- receiving ---------------------------------------------------------------------------

    async def _recv(self, timeout: float) -> dict:
        try:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed as err:
            self._note_close(err)
            raise Closed(f"{self.label}: connection closed ({self.close_code} {self.close_reason!r})") from None
        assert isinstance(raw, str), f"{self.label}: server sent a binary frame {raw[:80]!r}"
        frame = json.loads(raw)
        assert isinstance(frame, dict) and "type" in frame, f"{self.label}: frame without type: {raw[:300]}"
        return frame

    def _note_close(self, err) -> None:
        rcvd = getattr(err, "rcvd", None)
        self.close_code = rcvd.code if rcvd else self.ws.close_code
        self.close_reason = rcvd.reason if rcvd else self.ws.close_reason

    async def expect(self, type_: str | None = None, timeout: float = T, **match) -> dict:
        """The first frame (from the backlog, then the socket) of `type_` whose fields equal `match`."""

        def ok(f):
            return (type_ is None or f.get("type") == type_) and all(f.get(k) == v for k, v in match.items())

        for i, f in enumerate(self.backlog):
            if ok(f):
                return self.backlog.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                f = await self._recv(left)
            except asyncio.TimeoutError:
                break
            except Closed as err:
                raise AssertionError(f"{err} while waiting for {type_} {match}; backlog={self.backlog}") from None
            if ok(f):
                return f
            self.backlog.append(f)
        raise AssertionError(f"{self.label}: no {type_} {match} within {timeout}s; backlog={self.backlog}")

    async def reply(self, rid: str, timeout: float = T) -> dict:
        return await self.expect(None, timeout=timeout, re=rid)

    async def error(self, code: str, timeout: float = T, **match) -> dict:
        return await self.expect("error", timeout=timeout, code=code, **match)

    async def drain(self, duration: float = QUIET) -> list[dict]:
        """Everything that arrives within `duration` (plus the backlog); clears the backlog."""
        frames, self.backlog = self.backlog, []
        deadline = time.monotonic() + duration
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return frames
            try:
                frames.append(await self._recv(left))
            except (asyncio.TimeoutError, Closed):
                return frames

    async def quiet(self, *types: str, duration: float = QUIET) -> None:
        """Asserts that no frame of the given types (any frame if none given) arrives."""
        frames = await self.drain(duration)
        bad = [f for f in frames if not types or f.get("type") in types]
        assert not bad, f"{self.label}: unexpected frames {bad}"
        self.backlog = [f for f in frames if f not in bad]

    async def expect_close(self, timeout: float = T) -> tuple[int | None, list[dict]]:
        """Waits for the server to close; returns the close code and the frames seen before."""
        frames = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.label}: not closed within {timeout}s; saw {frames}")
            try:
                frames.append(await self._recv(left))
            except Closed:
                return self.close_code, self.backlog + frames
            except asyncio.TimeoutError:
                continue

    def drop(self) -> None:
        """Drops the TCP connection without a close handshake."""
        self.ws.transport.abort()

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.ws.close(), 3)
        except Exception:
            self.ws.transport.abort()


class Pool:
    """Tracks every client a test opens, so all are closed before the server is stopped."""

    def __init__(self, server):
        self.server = server
        self.clients: list[Client] = []

    async def open(
        self, identity: str, room: str, *, token: str | None = None, resume: str | None = None, expect_joined=True, **claims
    ) -> Client:
        token = token or mint_token(identity, room, **claims)
        ws = await websockets.connect(
            self.server.rtc_url(token, resume), open_timeout=T, close_timeout=2, max_size=2**22
        )
        client = Client(ws, identity or "anon")
        self.clients.append(client)
        if expect_joined:
            try:
                first = await client._recv(T)
            except Closed as err:
                raise AssertionError(f"{err} before joined") from None
            assert first["type"] == "joined", f"{identity}: first frame is not joined: {first}"
            client.joined = first
        return client

    async def close_all(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)


def run(server, body) -> None:
    run_value(server, body)


def run_value(server, body):
    """Runs `body(pool)` with a fresh client pool, closes every client afterwards, returns the result."""

    async def main():
        pool = Pool(server)
        try:
            return await asyncio.wait_for(body(pool), TEST_TIMEOUT)
        finally:
            await pool.close_all()

    return asyncio.run(main())


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def metric(text: str, name: str, labels: str | None = None) -> float | None:
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else r"(?:\{\})?") + r" (\S+)$"
    for line in text.splitlines():
        m = re.match(pattern, line)
        if m:
            return float(m.group(1))
    return None


def assert_message(msg: dict, *, text: str, sender: Client, client_msg_id: str | None = None, to=None) -> None:
    assert re.fullmatch(r"MS_\w+", msg["id"]), msg
    assert isinstance(msg["seq"], int) and msg["seq"] >= 1, msg
    assert msg["from"] == {
        "sid": sender.sid,
        "identity": sender.identity,
        "name": sender.joined["participant"]["name"],
    }, msg
    assert msg["text"] == text, msg
    assert isinstance(msg["ts"], int) and abs(msg["ts"] - time.time() * 1000) < 60_000, msg
    if client_msg_id is not None:
        assert msg["clientMsgId"] == client_msg_id, msg
    if to is None:
        assert not msg.get("to"), msg
    else:
        assert msg["to"] == to, msg


# ---------------------------------------------------------------------------------------------
# Health, tokens, joining


def test_health_and_readiness(server):
    for path in ("/healthz", "/readyz"):
        r = server.http("GET", path)
        assert r.status == 200, (path, r)


def test_dev_token_endpoint(server):
    r = server.http("GET", "/v1/dev/token?room=devroom&identity=dana&name=Dana")
    assert r.status == 200, r
    token = r.json()["token"]
    claims = jwt_claims(token)
    assert claims["iss"] == "devkey" and claims["sub"] == "dana" and claims["name"] == "Dana", claims
    grants = claims["grants"]
    assert grants["room"] == "devroom", grants
    assert all(grants[g] is True for g in ("join", "publish", "subscribe", "chat")), grants
    assert not grants.get("admin"), grants

    async def body(pool):
        dana = await pool.open("dana", "devroom", token=token)
        assert dana.joined["room"]["name"] == "devroom"
        assert dana.joined["participant"]["identity"] == "dana"
        assert dana.joined["participant"]["name"] == "Dana"

    run(server, body)


def test_joined_frame_and_participant_joined(server):
    async def body(pool):
        alice = await pool.open("alice", "standup", metadata="a-meta")
        j = alice.joined
        assert re.fullmatch(r"RM_\w+", j["room"]["sid"]) and j["room"]["name"] == "standup", j["room"]
        p = j["participant"]
        assert re.fullmatch(r"PA_\w+", p["sid"]), p
        assert (p["identity"], p["name"], p["metadata"]) == ("alice", "Alice", "a-meta"), p
        assert j["participants"] == [], j
        assert isinstance(j["iceServers"], list), j
        assert j["chat"] == {"messages": [], "hasMore": False}, j["chat"]
        assert isinstance(j["server"]["version"], str) and isinstance(j["server"]["node"], str), j["server"]
        assert j["resumed"] is False, j

        bob = await pool.open("bob", "standup", name="Bobby")
        others = bob.joined["participants"]
        assert [o["identity"] for o in others] == ["alice"], others
        assert others[0]["sid"] == alice.sid and others[0]["name"] == "Alice" and others[0]["metadata"] == "a-meta"
        assert bob.joined["room"]["sid"] == j["room"]["sid"]
        assert bob.sid != alice.sid

        ev = await alice.expect("participant.joined")
        assert ev["participant"]["sid"] == bob.sid, ev
        assert ev["participant"]["identity"] == "bob" and ev["participant"]["name"] == "Bobby", ev
        await bob.quiet("participant.joined")

        # A hidden participant is neither listed nor announced.
        hank = await pool.open("hank", "standup", hidden=True)
        assert {o["identity"] for o in hank.joined["participants"]} == {"alice", "bob"}
        await alice.quiet("participant.joined")
        carol = await pool.open("carol", "standup")
        assert {o["identity"] for o in carol.joined["participants"]} == {"alice", "bob"}, carol.joined["participants"]

    run(server, body)


@pytest.mark.parametrize(
    "kind",
    ["malformed", "wrong_secret", "expired", "unknown_key", "not_yet_valid"],
)
def test_bad_token_is_unauthorized(server, kind):
    now = int(time.time())
    token = {
        "malformed": "not-a-jwt",
        "wrong_secret": mint_token("mallory", "r", secret="not-the-secret"),
        "expired": mint_token("mallory", "r", nbf=now - 7200, exp=now - 3600),
        "unknown_key": mint_token("mallory", "r", key="APInobody"),
        "not_yet_valid": mint_token("mallory", "r", nbf=now + 3600, exp=now + 7200),
    }[kind]

    status, error = refused_upgrade(server, token)
    assert status == 401 and error["code"] == "unauthorized", (status, error)
    assert isinstance(error.get("message"), str) and error["message"], error


@pytest.mark.parametrize("kind", ["no_join_grant", "no_room_grant"])
def test_token_without_join_or_room_is_forbidden(server, kind):
    token = mint_token("mallory", "r", join=False) if kind == "no_join_grant" else mint_token("mallory", None)

    status, error = refused_upgrade(server, token)
    assert status == 403 and error["code"] == "forbidden", (status, error)


def refused_upgrade(server, token: str) -> tuple[int, dict]:
    """Attempts the WebSocket upgrade, expecting it refused; returns the HTTP status and JSON error."""

    async def attempt():
        try:
            ws = await websockets.connect(server.rtc_url(token, None), open_timeout=T)
        except websockets.exceptions.InvalidStatus as refused:
            response = refused.response
            assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
            return response.status_code, json.loads(response.body)["error"]
        await ws.close()
        raise AssertionError("the upgrade was accepted")

    return asyncio.run(asyncio.wait_for(attempt(), TEST_TIMEOUT))


def test_plain_http_rtc_with_bad_token_is_401(server):
    r = server.http("GET", "/v1/rtc?token=bad")
    assert r.status == 401, r
    err = r.json()["error"]
    assert err["code"] == "unauthorized" and isinstance(err["message"], str), err


# ---------------------------------------------------------------------------------------------
# Requests and errors


def test_ping_pong(server):
    async def body(pool):
        a = await pool.open("alice", "r")
        pong = await a.call("ping", id="p-1")
        assert pong == {"type": "pong", "re": "p-1"}, pong

    run(server, body)


def test_request_errors_keep_the_connection_open(server):
    async def body(pool):
        a = await pool.open("alice", "r")

        await a.send("this is not json")
        e = await a.error("bad_request")
        assert "re" not in e, e

        await a.send({"type": "no.such.thing", "id": "u1"})
        e = await a.error("bad_request")
        assert e["re"] == "u1" and isinstance(e["message"], str), e

        await a.send({"type": "no.such.thing"})
        e = await a.error("bad_request")
        assert "re" not in e, e

        e = await a.call("chat.send", id="m1", clientMsgId="x")
        assert (e["type"], e["code"]) == ("error", "bad_request") and "text" in e["message"], e

        e = await a.call("chat.history", id="h1", limit="x")
        assert (e["type"], e["code"]) == ("error", "bad_request") and "limit" in e["message"], e

        await a.send(json.dumps({"type": "ping", "id": "big", "pad": "x" * 70_000}))
        e = await a.error("too_large")
        assert e.get("re") in (None, "big"), e

        await a.send(b"\x00\x01\x02")
        await a.error("bad_request")

        pong = await a.call("ping", id="still-open")
        assert pong["type"] == "pong", pong
        await a.quiet()

    run(server, body)


def test_chat_text_length_limit(server):
    async def body(pool):
        a = await pool.open("alice", "r")
        b = await pool.open("bob", "r")
        e = await a.call("chat.send", clientMsgId="long", text="a" * 4001)
        assert (e["type"], e["code"]) == ("error", "too_large"), e
        # The limit counts characters, not bytes: 4000 two-byte characters are fine.
        ack = await a.chat("é" * 4000)
        assert ack["message"]["text"] == "é" * 4000 and ack["message"]["seq"] == 1
        got = await b.expect("chat")
        assert got["message"]["seq"] == 1, got
        await b.quiet("chat")

    run(server, body)


def test_chat_requires_chat_grant(server):
    async def body(pool):
        a = await pool.open("alice", "r", chat=False)
        b = await pool.open("bob", "r")
        e = await a.call("chat.send", id="nochat", clientMsgId="c", text="hi")
        assert (e["type"], e["code"], e["re"]) == ("error", "forbidden", "nochat"), e
        await b.quiet("chat")
        assert (await a.call("ping"))["type"] == "pong"

    run(server, body)


@pytest.mark.parley_set({"signaling.rateLimit.burst": "10", "signaling.rateLimit.perSecond": "0.5"})
def test_malformed_frames_count_against_the_rate_and_a_resume_does_not_refill_it(server):
    async def body(pool):
        a = await pool.open("alice", "r")
        for _ in range(10):
            await a.send("{not json")
        for _ in range(10):
            await a.error("bad_request")
        # The bucket is empty: a good request is refused, naming its id.
        e = await a.call("ping", id="late-ping")
        assert (e["type"], e["code"], e["re"]) == ("error", "rate_limited", "late-ping"), e
        # Dropping the connection and resuming does not refill it.
        sid = a.sid
        a.drop()
        b = await pool.open("alice", "r", resume=sid)
        assert b.joined["resumed"] is True
        e = await b.call("ping", id="after-resume")
        assert (e["code"], e["re"]) == ("rate_limited", "after-resume"), e
        # A client that goes on regardless is closed.
        for i in range(12):
            try:
                await b.send({"type": "ping", "id": f"flood-{i}"})
            except Exception:
                break
        code, frames = await b.expect_close()
        assert code == 1008, (code, frames)

    run(server, body)


@pytest.mark.parley_set({"chat.retention": "2s"})
def test_chat_older_than_the_retention_is_deleted_but_the_rooms_newest(server):
    async def body(pool):
        a = await pool.open("alice", "r")
        sent = [(await a.chat(f"old {i}"))["message"] for i in range(3)]
        await asyncio.sleep(4.5)
        r = server.admin("GET", "/v1/rooms/r/messages")
        assert [m["id"] for m in r.json()["messages"]] == [sent[-1]["id"]], r.json()
        newer = (await a.chat("new"))["message"]
        assert newer["seq"] == sent[-1]["seq"] + 1
        assert "parley_chat_messages_expired_total 2" in server.http("GET", "/metrics").text

    run(server, body)


def test_chat_rate_limit(server):
    async def body(pool):
        a = await pool.open("alice", "r")
        b = await pool.open("bob", "r")
        ids = [f"rl-{i}" for i in range(40)]
        t0 = time.monotonic()
        for rid in ids:
            await a.send({"type": "chat.send", "id": rid, "clientMsgId": rid, "text": "spam"})
        replies = [await a.reply(rid) for rid in ids]
        span = time.monotonic() - t0
        acks = [r for r in replies if r["type"] == "chat.ack"]
        limited = [r for r in replies if r["type"] == "error"]
        assert all(r["code"] == "rate_limited" for r in limited), limited
        # Burst 20, refilled at 10/s: the first 20 pass, then about one more per 100 ms spent.
        assert [r["re"] for r in acks[:20]] == ids[:20], replies
        assert 20 <= len(acks) <= 21 + 10 * span, (len(acks), span)
        assert limited, (len(acks), span)
        seen = []
        for _ in acks:
            seen.append((await b.expect("chat"))["message"]["clientMsgId"])
        assert seen == [r["message"]["clientMsgId"] for r in acks]
        await b.quiet("chat")
        assert (await a.call("ping"))["type"] == "pong"

    run(server, body)


# ---------------------------------------------------------------------------------------------
# Chat


def test_chat_ack_and_broadcast(server):
    async def body(pool):
        alice = await pool.open("alice", "r")
        bob = await pool.open("bob", "r")
        carol = await pool.open("carol", "r")

        ack = await alice.call("chat.send", id="send-1", clientMsgId="cm-1", text="hello")
        assert ack["type"] == "chat.ack" and ack["re"] == "send-1" and ack["duplicate"] is False, ack
        msg = ack["message"]
        assert_message(msg, text="hello", sender=alice, client_msg_id="cm-1")
        assert msg["seq"] == 1
        for other in (bob, carol):
            ev = await other.expect("chat")
            assert ev["message"] == msg, (ev, msg)
        await alice.quiet("chat")

        ack2 = await bob.chat("hi alice", client_msg_id="cm-2")
        assert_message(ack2["message"], text="hi alice", sender=bob, client_msg_id="cm-2")
        assert ack2["message"]["seq"] == 2
        assert ack2["message"]["id"] != msg["id"]
        for other in (alice, carol):
            assert (await other.expect("chat"))["message"] == ack2["message"]
        await bob.quiet("chat")

        seqs = [(await alice.chat(f"n{i}"))["message"]["seq"] for i in range(3)]
        assert seqs == [3, 4, 5], seqs

    run(server, body)


def test_chat_duplicate_client_msg_id(server):
    async def body(pool):
        alice = await pool.open("alice", "r")
        bob = await pool.open("bob", "r")
        first = await alice.chat("original", client_msg_id="same")
        assert first["duplicate"] is False
        await bob.expect("chat")

        again = await alice.call("chat.send", id="retry", clientMsgId="same", text="changed on retry")
        assert again["type"] == "chat.ack" and again["re"] == "retry" and again["duplicate"] is True, again
        assert again["message"] == first["message"], (again, first)
        await bob.quiet("chat")

        # A new session of the same identity is still deduplicated.
        await alice.close()
        alice2 = await pool.open("alice", "r")
        again2 = await alice2.chat("original", client_msg_id="same")
        assert again2["duplicate"] is True and again2["message"]["id"] == first["message"]["id"], again2
        await bob.quiet("chat")

        # The same clientMsgId from another identity is a different message.
        other = await bob.chat("bob's own", client_msg_id="same")
        assert other["duplicate"] is False and other["message"]["seq"] == 2, other
        assert (await alice2.expect("chat"))["message"]["id"] == other["message"]["id"]

        hist = await alice2.call("chat.history")
        assert [m["seq"] for m in hist["messages"]] == [1, 2], hist

    run(server, body)


def test_direct_messages(server):
    async def body(pool):
        alice = await pool.open("alice", "r")
        bob = await pool.open("bob", "r")
        carol = await pool.open("carol", "r")
        public = await alice.chat("for everyone")
        for c in (bob, carol):
            await c.expect("chat")

        ack = await alice.call("chat.send", clientMsgId="dm-1", text="psst bob", to=["bob"])
        assert ack["type"] == "chat.ack" and ack["duplicate"] is False, ack
        dm = ack["message"]
        assert_message(dm, text="psst bob", sender=alice, client_msg_id="dm-1", to=["bob"])
        assert dm["seq"] == public["message"]["seq"] + 1
        assert (await bob.expect("chat"))["message"] == dm
        await carol.quiet("chat")
        await alice.quiet("chat")

        def ids(frames):
            return [m["id"] for m in frames]

        for who, sees_dm in ((alice, True), (bob, True), (carol, False)):
            h = await who.call("chat.history")
            assert h["type"] == "chat.history" and h["hasMore"] is False, h
            expected = [public["message"]["id"]] + ([dm["id"]] if sees_dm else [])
            assert ids(h["messages"]) == expected, (who.label, h)

        # History on join follows the same rule.
        dave = await pool.open("dave", "r")
        assert ids(dave.joined["chat"]["messages"]) == [public["message"]["id"]], dave.joined["chat"]
        await bob.close()
        bob2 = await pool.open("bob", "r")
        assert ids(bob2.joined["chat"]["messages"]) == [public["message"]["id"], dm["id"]], bob2.joined["chat"]

        # The admin API sees everything.
        r = server.admin("GET", "/v1/rooms/r/messages")
        assert r.status == 200, r
        assert ids(r.json()["messages"]) == [public["message"]["id"], dm["id"]], r

    run(server, body)


def test_chat_history_paging(server):
    async def body(pool):
        alice = await pool.open("alice", "r")
        sent = [(await alice.chat(f"m{i}"))["message"] for i in range(1, 6)]
        assert [m["seq"] for m in sent] == [1, 2, 3, 4, 5]

        async def page(**kw):
            h = await alice.call("chat.history", **kw)
            assert h["type"] == "chat.history", h
            return [m["seq"] for m in h["messages"]], h["hasMore"]

        assert await page() == ([1, 2, 3, 4, 5], False)
        assert await page(limit=2) == ([4, 5], True)
        assert await page(before=4, limit=2) == ([2, 3], True)
        assert await page(before=2, limit=2) == ([1], False)
        assert await page(after=3) == ([4, 5], False)
        assert await page(after=1, limit=2) == ([2, 3], True)
        assert await page(after=5) == ([], False)
        full = await alice.call("chat.history")
        assert full["messages"] == sent

        # A newcomer's joined frame carries the recent history.
        bob = await pool.open("bob", "r")
        assert bob.joined["chat"] == {"messages": sent, "hasMore": False}, bob.joined["chat"]

    run(server, body)


# ---------------------------------------------------------------------------------------------
# Typing and presence


def test_typing_goes_to_others_only(server):
    async def body(pool):
        alice = await pool.open("alice", "r")
        bob = await pool.open("bob", "r")
        carol = await pool.open("carol", "r")
        await alice.send({"type": "typing", "active": True})
        for c in (bob, carol):
            ev = await c.expect("typing")
            assert (ev["participant"], ev["identity"], ev["active"]) == (alice.sid, "alice", True), ev
        await alice.send({"type": "typing", "active": False})
        ev = await bob.expect("typing")
        assert ev["active"] is False, ev
        await alice.quiet("typing")

    run(server, body)


def test_presence(server):
    async def body(pool):
        alice = await pool.open("alice", "r")
        bob = await pool.open("bob", "r")
        mine = await alice.call("presence.set", id="pr-1", status="away", text="lunch")
        assert mine["type"] == "presence" and mine["re"] == "pr-1", mine
        ev = await bob.expect("presence")
        for f in (mine, ev):
            assert (f["participant"], f["identity"], f["status"], f["text"]) == (alice.sid, "alice", "away", "lunch"), f
            assert isinstance(f["since"], int), f
        assert "re" not in ev, ev

        for status in ("online", "busy", "dnd"):
            r = await alice.call("presence.set", status=status, text="")
            assert r["type"] == "presence" and r["status"] == status, r
            assert (await bob.expect("presence"))["status"] == status

        bad = await alice.call("presence.set", id="pr-bad", status="sleeping", text="zzz")
        assert (bad["type"], bad["code"], bad["re"]) == ("error", "bad_request", "pr-bad"), bad
        await bob.quiet("presence")

        await alice.call("presence.set", status="busy", text="in a call")
        await bob.expect("presence")
        carol = await pool.open("carol", "r")
        listed = {p["identity"]: p for p in carol.joined["participants"]}
        assert listed["alice"]["presence"]["status"] == "busy", listed
        assert listed["alice"]["presence"]["text"] == "in a call", listed

    run(server, body)


# ---------------------------------------------------------------------------------------------
# Leaving, replacing, resuming


def test_leave(server):
    async def body(pool):
        alice = await pool.open("alice", "r")
        bob = await pool.open("bob", "r")
        await alice.send({"type": "leave"})
        ev = await bob.expect("participant.left")
        assert ev == {"type": "participant.left", "participant": alice.sid, "identity": "alice", "reason": "left"}, ev
        await alice.expect_close()
        r = server.admin("GET", "/v1/rooms/r/participants")
        assert [p["identity"] for p in r.json()["participants"]] == ["bob"], r

    run(server, body)


def test_duplicate_identity_replaces_session(server):
    async def body(pool):
        alice = await pool.open("alice", "r")
        bob = await pool.open("bob", "r")
        await alice.expect("participant.joined")
        old_sid = bob.sid

        bob2 = await pool.open("bob", "r")
        assert bob2.sid != old_sid
        assert [p["identity"] for p in bob2.joined["participants"]] == ["alice"], bob2.joined["participants"]

        code, frames = await bob.expect_close()
        left = [f for f in frames if f["type"] == "participant.left"]
        assert left and left[0]["participant"] == old_sid and left[0]["reason"] == "duplicate_identity", frames

        ev1 = await alice.expect("participant.left")
        assert (ev1["participant"], ev1["identity"], ev1["reason"]) == (old_sid, "bob", "duplicate_identity"), ev1
        ev2 = await alice.expect("participant.joined")
        assert ev2["participant"]["sid"] == bob2.sid, ev2
        assert alice.backlog == [], alice.backlog  # left came before joined, nothing else

        # The new session works.
        ack = await bob2.chat("I'm back")
        assert (await alice.expect("chat"))["message"]["id"] == ack["message"]["id"]

    run(server, body)


@pytest.mark.parley_set({"signaling.resumeWindow": "3s"})
def test_resume_within_window_keeps_sid(server):
    async def body(pool):
        alice = await pool.open("alice", "r")
        bob = await pool.open("bob", "r")
        await alice.expect("participant.joined")
        token = mint_token("bob", "r")
        sid = bob.sid
        bob.drop()
        await alice.quiet("participant.left", "participant.joined", duration=0.8)

        bob2 = await pool.open("bob", "r", token=token, resume=sid)
        assert bob2.joined["resumed"] is True, bob2.joined
        assert bob2.sid == sid, (bob2.sid, sid)
        assert [p["identity"] for p in bob2.joined["participants"]] == ["alice"]
        # Past the end of the original window: still nobody saw bob leave or join.
        await alice.quiet("participant.left", "participant.joined", duration=3.0)

        ack = await bob2.chat("resumed fine")
        assert (await alice.expect("chat"))["message"]["from"]["sid"] == sid, ack

    run(server, body)


@pytest.mark.parley_set({"signaling.resumeWindow": "1s"})
def test_dropped_connection_leaves_after_resume_window(server):
    async def body(pool):
        alice = await pool.open("alice", "r")
        bob = await pool.open("bob", "r")
        await alice.expect("participant.joined")
        sid = bob.sid
        t0 = time.monotonic()
        bob.drop()
        await alice.quiet("participant.left", duration=0.5)
        ev = await alice.expect("participant.left", timeout=4)
        waited = time.monotonic() - t0
        assert ev == {"type": "participant.left", "participant": sid, "identity": "bob", "reason": "disconnected"}, ev
        assert 0.8 <= waited <= 4, waited

        # Too late to resume: a fresh session with a new sid.
        bob2 = await pool.open("bob", "r", resume=sid)
        assert bob2.joined["resumed"] is False and bob2.sid != sid, bob2.joined
        assert (await alice.expect("participant.joined"))["participant"]["sid"] == bob2.sid

    run(server, body)


# ---------------------------------------------------------------------------------------------
# Admin API


def test_admin_api_requires_admin_token(server):
    user = mint_token("alice", "r")
    probes = [
        ("GET", "/v1/rooms", None),
        ("POST", "/v1/rooms", {"name": "x"}),
        ("GET", "/v1/rooms/r", None),
        ("DELETE", "/v1/rooms/r", None),
        ("GET", "/v1/rooms/r/participants", None),
        ("DELETE", "/v1/rooms/r/participants/alice", None),
        ("GET", "/v1/rooms/r/messages", None),
        ("POST", "/v1/rooms/r/messages", {"text": "x"}),
    ]
    for method, path, body in probes:
        r = server.http(method, path, body=body)
        assert r.status == 401, (method, path, r)
        assert r.json()["error"]["code"] == "unauthorized", (method, path, r)
        r = server.http(method, path, body=body, token=user)
        assert r.status == 403, (method, path, r)
        assert r.json()["error"]["code"] == "forbidden", (method, path, r)
        r = server.http(method, path, body=body, token=admin_token(secret="wrong"))
        assert r.status == 401, (method, path, r)


def test_admin_rooms_create_get_list_delete(server):
    r = server.admin("POST", "/v1/rooms", body={"name": "board", "maxParticipants": 5, "emptyTimeout": 60, "metadata": "m1"})
    assert r.status == 201, r
    room = r.json()
    assert (room["name"], room["maxParticipants"], room["emptyTimeout"], room["metadata"]) == ("board", 5, 60, "m1"), room
    assert re.fullmatch(r"RM_\w+", room["sid"]), room

    r = server.admin("POST", "/v1/rooms", body={"name": "board", "maxParticipants": 5, "emptyTimeout": 60, "metadata": ""})
    assert r.status == 409 and r.json()["error"]["code"] == "conflict", r

    r = server.admin("GET", "/v1/rooms/board")
    assert r.status == 200 and r.json()["sid"] == room["sid"] and r.json()["metadata"] == "m1", r
    r = server.admin("GET", "/v1/rooms")
    assert r.status == 200 and [x["name"] for x in r.json()["rooms"]] == ["board"], r
    assert server.admin("GET", "/v1/rooms/nope").status == 404

    async def body(pool):
        alice = await pool.open("alice", "board")
        bob = await pool.open("bob", "board")
        assert alice.joined["room"]["sid"] == room["sid"] and alice.joined["room"]["metadata"] == "m1"
        r = server.admin("DELETE", "/v1/rooms/board")
        assert r.status == 204, r
        for c in (alice, bob):
            code, frames = await c.expect_close()
            closed = [f for f in frames if f["type"] == "room.closed"]
            assert closed and closed[0]["reason"] == "deleted", frames

    run(server, body)
    assert server.admin("GET", "/v1/rooms/board").status == 404
    assert server.admin("GET", "/v1/rooms").json()["rooms"] == []


def test_admin_participants_and_kick(server):
    async def body(pool):
        alice = await pool.open("alice", "r", metadata="am")
        bob = await pool.open("bob", "r")
        await alice.expect("participant.joined")
        r = server.admin("GET", "/v1/rooms/r/participants")
        assert r.status == 200, r
        listed = {p["identity"]: p for p in r.json()["participants"]}
        assert set(listed) == {"alice", "bob"}, listed
        assert listed["alice"]["sid"] == alice.sid and listed["alice"]["metadata"] == "am", listed

        r = server.admin("DELETE", "/v1/rooms/r/participants/bob")
        assert r.status == 204, r
        code, frames = await bob.expect_close()
        left = [f for f in frames if f["type"] == "participant.left"]
        assert left and (left[0]["participant"], left[0]["reason"]) == (bob.sid, "kicked"), frames
        ev = await alice.expect("participant.left")
        assert ev == {"type": "participant.left", "participant": bob.sid, "identity": "bob", "reason": "kicked"}, ev

        r = server.admin("GET", "/v1/rooms/r/participants")
        assert [p["identity"] for p in r.json()["participants"]] == ["alice"], r
        assert server.admin("DELETE", "/v1/rooms/r/participants/bob").status == 404

    run(server, body)


def test_a_kick_with_a_ban_keeps_the_identity_out_until_it_ends(server):
    async def body(pool):
        alice = await pool.open("alice", "r")
        bob = await pool.open("bob", "r")
        await alice.expect("participant.joined")
        assert server.admin("DELETE", "/v1/rooms/r/participants/bob?ban=forever").status == 400
        r = server.admin("DELETE", "/v1/rooms/r/participants/bob?ban=3s")
        assert r.status == 204, r
        await bob.expect_close()
        # The same token again, at once: refused, saying for how long.
        again = await pool.open("bob", "r", expect_joined=False)
        code, frames = await again.expect_close()
        assert frames and frames[0]["type"] == "error" and frames[0]["code"] == "forbidden", frames
        assert "may join again in" in frames[0]["message"], frames
        # Another room is not banned; after the ban the identity joins.
        await pool.open("bob", "elsewhere")
        await asyncio.sleep(3.2)
        back = await pool.open("bob", "r")
        assert back.joined["participant"]["identity"] == "bob"

    run(server, body)


def test_admin_messages_and_system_message(server):
    async def body(pool):
        alice = await pool.open("alice", "r")
        bob = await pool.open("bob", "r")
        sent = [(await alice.chat(f"m{i}"))["message"] for i in range(1, 4)]
        dm = (await alice.chat("secret", to=["bob"]))["message"]
        for _ in range(4):
            await bob.expect("chat")

        r = server.admin("POST", "/v1/rooms/r/messages", body={"text": "maintenance at 5", "name": "Ops"})
        assert r.status == 201, r
        sysmsg = r.json()["message"]
        assert sysmsg["system"] is True and sysmsg["text"] == "maintenance at 5" and sysmsg["seq"] == 5, sysmsg
        assert re.fullmatch(r"MS_\w+", sysmsg["id"]), sysmsg
        for c in (alice, bob):
            ev = await c.expect("chat")
            assert ev["message"] == sysmsg, (ev, sysmsg)

        def page(query=""):
            r = server.admin("GET", "/v1/rooms/r/messages" + query)
            assert r.status == 200, r
            return [m["seq"] for m in r.json()["messages"]], r.json()["hasMore"]

        assert page() == ([1, 2, 3, 4, 5], False)
        assert page("?limit=2") == ([4, 5], True)
        assert page("?before=4&limit=2") == ([2, 3], True)
        assert page("?after=3") == ([4, 5], False)
        assert page("?after=1&limit=2") == ([2, 3], True)
        full = server.admin("GET", "/v1/rooms/r/messages").json()["messages"]
        assert full == sent + [dm, sysmsg], full

        h = await alice.call("chat.history")
        assert h["messages"] == sent + [dm, sysmsg], h

    run(server, body)


def test_room_capacity(server):
    r = server.admin("POST", "/v1/rooms", body={"name": "solo", "maxParticipants": 1, "emptyTimeout": 60, "metadata": ""})
    assert r.status == 201, r

    async def body(pool):
        alice = await pool.open("alice", "solo")
        bob = await pool.open("bob", "solo", expect_joined=False)
        code, frames = await bob.expect_close()
        assert frames and frames[0]["type"] == "error" and frames[0]["code"] == "room_full", frames
        assert not any(f["type"] == "joined" for f in frames), frames
        assert code == 1008, code
        await alice.quiet("participant.joined", "participant.left")
        r = server.admin("GET", "/v1/rooms/solo/participants")
        assert [p["identity"] for p in r.json()["participants"]] == ["alice"], r

    run(server, body)


# ---------------------------------------------------------------------------------------------
# Metrics


def test_metrics(server):
    async def body(pool):
        alice = await pool.open("alice", "r")
        bob = await pool.open("bob", "r")
        await alice.chat("one")
        await alice.chat("two")
        await bob.expect("chat")
        await bob.send("not json")
        await bob.error("bad_request")

        r = server.http("GET", "/metrics")
        assert r.status == 200, r
        assert r.headers.get("Content-Type", "").startswith("text/plain"), r.headers
        text = r.text
        assert metric(text, "parley_rooms") == 1, text
        assert metric(text, "parley_participants") == 2, text
        assert metric(text, "parley_websocket_connections") == 2, text
        assert metric(text, "parley_chat_messages_total") == 2, text
        assert metric(text, "parley_signaling_errors_total", 'code="bad_request"') >= 1, text
        assert re.search(r"^# TYPE parley_http_request_duration_seconds histogram$", text, re.M), text
        assert re.search(r'^parley_http_request_duration_seconds_bucket\{.*le="\+Inf".*\} \d+', text, re.M), text
        assert re.search(r"^parley_http_request_duration_seconds_count\{.*\} \d+", text, re.M), text

    run(server, body)


# ---------------------------------------------------------------------------------------------
# Shutdown and durability


def test_sigterm_shutdown_then_restart_keeps_chat_history(server):
    """SIGTERM with participants connected, then a restart on the same database.

    That participants hear room.closed(server_shutdown) on SIGTERM is asserted strictly by
    test_sigterm_sends_room_closed_to_every_participant; this test records it but checks the
    durability half: history (ids, seqs, DMs, dedup) is intact and numbering continues.
    """
    before: dict = {}

    async def first(pool):
        alice = await pool.open("alice", "r")
        bob = await pool.open("bob", "r")
        msgs = [(await alice.chat("a1"))["message"], (await bob.chat("b1"))["message"]]
        msgs.append((await alice.chat("dm", to=["bob"]))["message"])
        msgs.append((await alice.chat("a2", client_msg_id="keep-me"))["message"])
        assert [m["seq"] for m in msgs] == [1, 2, 3, 4]
        before["messages"] = msgs

        server.send_signal(signal.SIGTERM)
        before["frames"] = {}
        for c in (alice, bob):
            code, frames = await c.expect_close()  # the server closes every connection
            before["frames"][c.label] = (code, frames)
            for f in frames:
                if f["type"] == "room.closed":
                    assert f["reason"] == "server_shutdown", frames

    run(server, first)
    code = server.wait_exit()
    assert code == 0, (code, server.log_tail())
    server.start()  # same data directory, same database

    async def second(pool):
        msgs = before["messages"]
        alice = await pool.open("alice", "r")
        assert alice.joined["chat"]["messages"] == msgs, alice.joined["chat"]
        h = await alice.call("chat.history")
        assert h["messages"] == msgs and h["hasMore"] is False, h
        carol = await pool.open("carol", "r")
        assert [m["id"] for m in carol.joined["chat"]["messages"]] == [msgs[i]["id"] for i in (0, 1, 3)]
        r = server.admin("GET", "/v1/rooms/r/messages")
        assert r.json()["messages"] == msgs, r

        nxt = await carol.chat("after restart")
        assert nxt["message"]["seq"] == 5, nxt
        assert (await alice.expect("chat"))["message"]["seq"] == 5
        # Deduplication is durable too.
        dup = await alice.chat("a2", client_msg_id="keep-me")
        assert dup["duplicate"] is True and dup["message"] == msgs[3], dup
        await carol.quiet("chat")

    run(server, second)

    # A second restart through the fixture helper: still the same history.
    server.restart()

    async def third(pool):
        dave = await pool.open("dave", "r")
        h = await dave.call("chat.history")
        assert [m["seq"] for m in h["messages"]] == [1, 2, 4, 5], h

    run(server, third)


def test_sigterm_sends_room_closed_to_every_participant(server_factory):
    """Every participant hears room.closed(server_shutdown) before its socket closes.

    The loss is a race, so this repeats SIGTERM on fresh servers, stopping at the first miss, after
    100 rounds or after a 10 s budget (about 100 rounds at ~0.1 s each when shutdown is prompt).
    """
    rounds, budget = 100, 10.0

    async def one_round(srv):
        pool = Pool(srv)
        try:
            alice = await pool.open("alice", "r")
            bob = await pool.open("bob", "r")
            await alice.chat("hello")
            await bob.chat("hi")
            srv.send_signal(signal.SIGTERM)
            seen = {}
            for c in (alice, bob):
                code, frames = await c.expect_close()
                seen[c.label] = (code, c.close_reason, [f for f in frames if f["type"] != "chat"])
            return seen
        finally:
            await pool.close_all()

    started = time.monotonic()
    for i in range(rounds):
        if time.monotonic() - started > budget:
            break
        srv = server_factory({"log.level": "warning"})
        seen = asyncio.run(asyncio.wait_for(one_round(srv), TEST_TIMEOUT))
        assert srv.wait_exit() == 0
        for label, (code, reason, frames) in seen.items():
            closed = [f for f in frames if f["type"] == "room.closed"]
            assert closed and closed[0]["reason"] == "server_shutdown", (
                f"round {i}: {label} got no room.closed before close {code} {reason!r}; frames: {frames}"
            )


def test_sigterm_exits_promptly_when_clients_cooperate(server):
    """With every client reading and answering the close handshake, SIGTERM ends the process at once."""

    async def body(pool):
        alice = await pool.open("alice", "r")
        bob = await pool.open("bob", "r")
        await alice.chat("hello")
        await bob.expect("chat")
        t0 = time.monotonic()
        server.send_signal(signal.SIGTERM)
        for c in (alice, bob):
            await c.expect_close()
        return t0

    t0 = run_value(server, body)
    code = server.wait_exit(timeout=10)
    took = time.monotonic() - t0
    assert code == 0, code
    assert took < 1.0, f"parley took {took:.2f} s to exit after SIGTERM although both clients closed cleanly"


def test_sigterm_exits_despite_unresponsive_client(server):
    # A raw WebSocket client that completes the upgrade, then never reads or answers anything.
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=T)
    try:
        key = base64.b64encode(uuid.uuid4().bytes).decode()
        sock.sendall(
            (
                f"GET /v1/rtc?token={mint_token('zombie', 'r')} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"joined" not in head:
            chunk = sock.recv(65536)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head[:100]
        server.send_signal(signal.SIGTERM)
        server.wait_exit(timeout=5)  # kills the server and fails if it is still running
    finally:
        sock.close()
