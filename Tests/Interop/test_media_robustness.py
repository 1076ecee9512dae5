"""Bad input on the media path and on SDP, selective subscription, and cleanup (ISSUE 3)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import socket

import websockets

from rtc_peer import Participant, wait_for
from test_media_aiortc import join, metric, run


def media_port(answer_sdp: str) -> int:
    match = re.search(r"a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host", answer_sdp)
    assert match, answer_sdp
    return int(match.group(1))


def test_an_invalid_offer_gets_bad_request_naming_the_problem(server):
    async def scenario():
        async with websockets.connect(server.rtc_url(server.token("alice", "sdp"))) as ws:
            assert json.loads(await ws.recv())["type"] == "joined"
            cases = {
                "not sdp at all": "line 1",
                "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio x UDP/TLS/RTP/SAVPF 111\r\n": "line 5",
                "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n": "ice-ufrag",
            }
            for index, (sdp, expected) in enumerate(cases.items()):
                await ws.send(json.dumps({"type": "offer", "id": f"o{index}", "target": "publisher", "sdp": sdp}))
                reply = json.loads(await ws.recv())
                assert reply["type"] == "error" and reply["code"] == "bad_request" and reply["re"] == f"o{index}", reply
                assert expected in reply["message"], reply
            # An answer nobody asked for, and an offer on the wrong transport.
            await ws.send(json.dumps({"type": "answer", "re": "s9", "target": "subscriber", "sdp": "v=0"}))
            assert json.loads(await ws.recv())["code"] == "conflict"
            await ws.send(json.dumps({"type": "offer", "id": "x", "target": "subscriber", "sdp": "v=0"}))
            assert json.loads(await ws.recv())["code"] == "bad_request"
            await ws.send(json.dumps({"type": "candidate", "id": "c", "target": "publisher", "candidate": {"candidate": "candidate:garbage"}}))
            assert json.loads(await ws.recv())["code"] == "bad_request"
            # The connection is still good.
            await ws.send(json.dumps({"type": "ping", "id": "p"}))
            assert json.loads(await ws.recv())["type"] == "pong"

    run(scenario())


def test_garbage_datagrams_are_counted_and_media_keeps_flowing(server):
    async def scenario():
        alice = await join(server, "alice")
        bob = await join(server, "bob")
        try:
            answer = await alice.publish(tone=440.0, video=False)
            port = media_port(answer["sdp"])
            await wait_for(lambda: bob.tracks_from(alice.sid, "audio") and len(bob.tracks_from(alice.sid, "audio")[0].audio()) > 48_000,
                           15, what="audio before the garbage")
            dropped_before = metric(server, "parley_media_dropped_total")
            rng = random.Random(7983)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            stun = bytes.fromhex("000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74"
                                 "002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020"
                                 "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf")
            for index in range(3000):
                kind = index % 5
                if kind == 0:
                    payload = os.urandom(rng.randint(0, 1500))
                elif kind == 1:
                    payload = stun[: rng.randint(0, len(stun))]  # truncated STUN
                elif kind == 2:
                    payload = bytes([rng.randint(20, 63)]) + os.urandom(rng.randint(0, 300))  # DTLS-looking garbage
                elif kind == 3:
                    payload = bytes([0x80, 111]) + os.urandom(rng.randint(0, 200))  # RTP-looking, unauthenticated
                else:
                    payload = bytes([0x81, 200]) + os.urandom(rng.randint(0, 100))  # RTCP-looking
                sock.sendto(payload, ("127.0.0.1", port))
                if index % 200 == 0:
                    await asyncio.sleep(0)
            sock.close()
            audio = bob.tracks_from(alice.sid, "audio")[0]
            before = len(audio.audio())
            await wait_for(lambda: len(audio.audio()) >= before + 48_000, 10, what="audio after the garbage")
            assert abs(audio.dominant_frequency(1.0) - 440) <= 10
            assert metric(server, "parley_media_dropped_total") >= dropped_before + 2500
            assert server.http("GET", "/healthz").status == 200
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


def test_selective_unsubscribe_and_resubscribe(server):
    async def scenario():
        alice = await join(server, "alice")
        bob = await join(server, "bob")
        try:
            answer = await alice.publish(tone=440.0, video=True)
            video_sid = next(t["sid"] for t in answer["tracks"] if t["kind"] == "video")
            await wait_for(lambda: bob.tracks_from(alice.sid, "video") and bob.tracks_from(alice.sid, "video")[0].frames >= 10, 15,
                           what="video before unsubscribing")
            offers_before = sum(1 for e in bob.events if e["type"] == "offer")
            await bob.ws.send(json.dumps({"type": "subscribe", "id": "u1", "tracks": [video_sid], "subscribe": False}))
            await wait_for(lambda: sum(1 for e in bob.events if e["type"] == "offer") > offers_before, 5, what="a re-offer")
            offer = [e for e in bob.events if e["type"] == "offer"][-1]["sdp"]
            video_section = offer[offer.index("m=video"):]
            assert "a=inactive" in video_section.split("m=", 2)[1], video_section
            await asyncio.sleep(1.0)
            video = bob.tracks_from(alice.sid, "video")[0]
            frames = video.frames
            await asyncio.sleep(1.5)
            assert video.frames - frames <= 2, "video stopped after unsubscribing"
            audio = bob.tracks_from(alice.sid, "audio")[0]
            samples = len(audio.audio())
            await asyncio.sleep(1.0)
            assert len(audio.audio()) > samples + 24_000, "audio still flows"
            # Unknown tracks are refused.
            await bob.ws.send(json.dumps({"type": "subscribe", "id": "u2", "tracks": ["TR_nope"], "subscribe": True}))
            await wait_for(lambda: any(e.get("code") == "not_found" for e in bob.events), 5, what="not_found")
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


def test_participants_coming_and_going_leave_nothing_behind(server):
    async def scenario():
        for round_number in range(4):
            people = [await join(server, f"p{round_number}-{n}", room="churn") for n in range(3)]
            for index, person in enumerate(people):
                await person.publish(tone=300.0 + 100 * index, video=index == 0)
            await wait_for(lambda: all(len(p.received) == 2 + (1 if p is not people[0] else 0) for p in people), 20,
                           what="every subscription")
            assert metric(server, "parley_media_transports") == 6
            for person in people:
                await person.close()
            await wait_for(lambda: metric(server, "parley_media_transports") == 0, 10, what="transports closed")
        assert metric(server, "parley_participants") == 0

    run(scenario(), timeout=120)
