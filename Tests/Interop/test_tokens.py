"""Tokens that other tools mint: LiveKit's own server SDK (livekit-api from PyPI), a plain JWT
library (PyJWT) with only the claims Parley needs, and `parley token create --format livekit`.
Each joins a room and may do what its claims say; a refused one says why."""

from __future__ import annotations

import subprocess
import time

import jwt
import pytest
from livekit import api

from conftest import API_KEY, API_SECRET, mint_token
from test_signaling_contract import Pool, run

# The dev secret is short on purpose (the dev key); PyJWT warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key")


def livekit_token(identity: str, room: str, **grants) -> str:
    return (api.AccessToken(API_KEY, API_SECRET).with_identity(identity).with_name(identity.title())
            .with_grants(api.VideoGrants(room_join=True, room=room, **grants)).to_jwt())


def test_a_token_from_livekits_server_sdk_joins_chats_and_publishes(server):
    async def body(pool):
        alice = await pool.open(None, "lk", token=livekit_token("alice", "lk"))
        assert alice.joined["participant"]["identity"] == "alice" and alice.joined["participant"]["name"] == "Alice"
        ack = await alice.chat("hello from a LiveKit token")
        assert ack["message"]["from"]["identity"] == "alice"
        # canPublish false: joins and watches, may not publish or chat.
        viewer = await pool.open(None, "lk", token=livekit_token("viewer", "lk", can_publish=False, can_publish_data=False))
        refused = await viewer.call("chat.send", clientMsgId="v1", text="no")
        assert refused["type"] == "error" and refused["code"] == "forbidden", refused
        offer = await viewer.call("offer", target="publisher", sdp="v=0\r\n")
        assert offer["type"] == "error" and offer["code"] == "forbidden", offer

    run(server, body)
    # A LiveKit server token (roomCreate, roomList) works the admin API.
    admin = api.AccessToken(API_KEY, API_SECRET).with_identity("ops").with_grants(
        api.VideoGrants(room_create=True, room_list=True)).to_jwt()
    assert server.http("GET", "/v1/rooms", token=admin).status == 200


def test_a_token_without_nbf_from_a_plain_jwt_library_joins(server):
    token = jwt.encode({"iss": API_KEY, "sub": "bob", "exp": int(time.time()) + 60,
                        "grants": {"room": "plain", "join": True, "chat": True}}, API_SECRET, algorithm="HS256")

    async def body(pool):
        bob = await pool.open(None, "plain", token=token)
        assert bob.joined["participant"]["identity"] == "bob"
        await bob.chat("no nbf needed")

    run(server, body)


@pytest.mark.parametrize("claims, reason", [
    ({"iss": API_KEY, "sub": "x", "exp": 1}, "expired"),
    ({"iss": API_KEY, "sub": "x"}, "no expiry (exp)"),
    ({"sub": "x", "exp": 4102444800}, "no API key (iss)"),
    ({"iss": "nokey", "sub": "x", "exp": 4102444800}, "not a known API key"),
    ({"iss": API_KEY, "exp": 4102444800, "grants": {"room": "r", "join": True}}, "no identity (sub)"),
])
def test_a_refused_token_says_what_is_wrong(server, claims, reason):
    token = jwt.encode(claims, API_SECRET, algorithm="HS256")
    r = server.http("GET", f"/v1/rtc?token={token}")
    assert r.status == 401 and reason in r.json()["error"]["message"], r
    forged = jwt.encode({"iss": API_KEY, "sub": "x", "exp": 4102444800}, "wrong-secret", algorithm="HS256")
    r = server.http("GET", f"/v1/rtc?token={forged}")
    assert r.status == 401 and "signature" in r.json()["error"]["message"], r


def test_parley_mints_tokens_in_livekits_shape(server):
    out = subprocess.run([server.binary, "token", "create", "--room", "shape", "--identity", "carol", "--format", "livekit"],
                         capture_output=True, text=True, check=True).stdout.strip()
    claims = jwt.decode(out, API_SECRET, algorithms=["HS256"])
    assert claims["video"]["roomJoin"] is True and claims["video"]["room"] == "shape" and "grants" not in claims, claims
    # livekit-api's own verifier reads it.
    verified = api.TokenVerifier(API_KEY, API_SECRET).verify(out)
    assert verified.identity == "carol" and verified.video.room == "shape" and verified.video.room_join

    async def body(pool):
        carol = await pool.open(None, "shape", token=out)
        assert carol.joined["participant"]["identity"] == "carol"
        await carol.chat("minted in LiveKit's shape")

    run(server, body)


def test_a_token_in_a_subprotocol_or_a_header_keeps_it_out_of_the_url(server):
    """Browsers cannot set headers on a WebSocket but can offer subprotocols: `parley` and
    `access_token.<JWT>` join, and the server picks `parley`. Other clients may send
    `Authorization: Bearer`. Either way the URL has no token for a proxy to log."""
    import asyncio
    import json

    import websockets

    url = server.url.replace("http", "ws") + "/v1/rtc"

    async def first_frame(**options):
        async with websockets.connect(url, open_timeout=5, **options) as ws:
            return ws.subprotocol, json.loads(await asyncio.wait_for(ws.recv(), 5))

    chosen, joined = asyncio.run(first_frame(subprotocols=["parley", "access_token." + mint_token("ada", "quiet")]))
    assert chosen == "parley" and joined["type"] == "joined" and joined["participant"]["identity"] == "ada", joined
    chosen, joined = asyncio.run(first_frame(additional_headers={"Authorization": "Bearer " + mint_token("bo", "quiet")}))
    assert joined["type"] == "joined" and joined["participant"]["identity"] == "bo", joined

    async def refused():
        try:
            await first_frame(subprotocols=["parley", "access_token.not.a.jwt"])
        except websockets.exceptions.InvalidStatus as error:
            return error.response.status_code
        return None

    assert asyncio.run(refused()) == 401


def test_metrics_behind_a_token_answer_only_to_it(server_factory):
    server = server_factory({"log.level": "warning", "metrics.token": "scrape-token-of-the-operator"})
    assert server.http("GET", "/metrics").status == 401
    assert server.http("GET", "/metrics", headers={"Authorization": "Bearer scrape-token-of-the-operatoR"}).status == 401
    assert server.http("GET", "/metrics", headers={"Authorization": "Bearer scrape-token-of-the-operator"}).status == 200


def test_the_http_api_limits_each_client_and_refuses_oversized_bodies(server_factory):
    import urllib.request

    server = server_factory({"log.level": "warning", "http.rateLimit.perSecond": "1", "http.rateLimit.burst": "5"})
    statuses = [server.admin("GET", "/v1/rooms").status for _ in range(8)]
    assert statuses[:5] == [200] * 5 and 429 in statuses[5:], statuses
    refused = server.admin("GET", "/v1/rooms")
    assert refused.status == 429 and refused.headers.get("Retry-After") == "1", refused.status
    assert refused.json()["error"]["code"] == "rate_limited"
    # Probes and scrapes are never limited.
    assert all(server.http("GET", path).status == 200 for path in ["/healthz", "/metrics"] * 5)
    assert "parley_http_rate_limited_total" in server.http("GET", "/metrics").text

    time.sleep(2.2)
    # A body declared larger than the API takes is refused before anything reads it.
    request = urllib.request.Request(server.url + "/v1/rooms", method="POST", data=b"x" * 2_000_000,
                                     headers={"Authorization": "Bearer " + server.admin_token(), "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=5)
        status = 200
    except urllib.error.HTTPError as error:
        status = error.code
    except (ConnectionError, urllib.error.URLError):
        status = 413  # the server answered and closed while the client was still sending
    assert status == 413, status
