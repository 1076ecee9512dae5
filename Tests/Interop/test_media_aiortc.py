"""Media through Parley's SFU with aiortc peers: a tone and a video forwarded to subscribers, decoded
and checked (ISSUE 3). Each test runs its own server on loopback."""

from __future__ import annotations

import asyncio
import re

import pytest

from rtc_peer import Participant, wait_for


def run(coro, timeout: float = 60.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def join(server, identity: str, room: str = "media") -> Participant:
    participant = Participant(server.rtc_url(server.token(identity, room)), identity)
    await participant.connect()
    return participant


async def alice_tone_at_bob(server):
    """alice and bob in room `media`, alice publishing a 440 Hz tone; returns them once bob has
    heard a second of it, with bob's received track."""
    alice = await join(server, "alice")
    bob = await join(server, "bob")
    await alice.publish(tone=440.0, video=False)
    await wait_for(lambda: bob.tracks_from(alice.sid, "audio") and len(bob.tracks_from(alice.sid, "audio")[0].audio()) >= 48_000,
                   15, what="first second of audio")
    return alice, bob, bob.tracks_from(alice.sid, "audio")[0]


def metric(server, name: str, **labels) -> float:
    """Sums the samples of `name` whose labels include `labels`."""
    text = server.http("GET", "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(r"^([a-z_]+)(\{[^}]*\})?\s+([0-9.eE+-]+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def test_a_tone_and_a_video_reach_a_subscriber(server):
    async def scenario():
        alice = await join(server, "alice")
        bob = await join(server, "bob")
        try:
            answer = await alice.publish(tone=440.0, video=True)
            kinds = sorted(t["kind"] for t in answer["tracks"])
            assert kinds == ["audio", "video"], answer
            assert all(t["sid"].startswith("TR_") for t in answer["tracks"])
            await wait_for(lambda: len(bob.tracks_from(alice.sid, "audio")) == 1 and len(bob.tracks_from(alice.sid, "video")) == 1,
                           15, what="bob's subscriber tracks")
            audio = bob.tracks_from(alice.sid, "audio")[0]
            video = bob.tracks_from(alice.sid, "video")[0]
            await wait_for(lambda: len(audio.audio()) >= 3 * 48_000 and video.frames >= 30, 20, what="3 s of audio and 30 frames")
            frequency = audio.dominant_frequency(2.0)
            assert abs(frequency - 440) <= 10, frequency
            assert video.frames >= 30
            published = [e for e in bob.events if e["type"] == "track.published"]
            assert {e["track"]["kind"] for e in published} == {"audio", "video"}
            # The tone's audio-level extension makes alice an active speaker.
            speakers = [e for e in bob.events if e["type"] == "speakers"]
            assert any(s["participant"] == alice.sid and 0 < s["level"] <= 1 for e in speakers for s in e["speakers"]), speakers
        finally:
            await alice.close()
            await bob.close()
        assert metric(server, "parley_media_packets_total", direction="out", kind="rtp") > 100
        assert metric(server, "parley_media_forwarded_packets_total") > 100
        assert metric(server, "parley_media_forwarding_delay_seconds_count") > 100
        assert metric(server, "parley_media_remb_total") >= 1
        assert metric(server, "parley_media_srtp_failures_total") == 0

    run(scenario())


def test_h264_video_is_forwarded(server):
    async def scenario():
        alice = await join(server, "alice")
        bob = await join(server, "bob")
        try:
            answer = await alice.publish(tone=None, video=True, video_codec="H264")
            video_mline = answer["sdp"][answer["sdp"].index("m=video"):]
            assert "H264/90000" in video_mline and "VP8" not in video_mline, video_mline
            await wait_for(lambda: bob.tracks_from(alice.sid, "video") and bob.tracks_from(alice.sid, "video")[0].frames >= 30, 20,
                           what="30 decoded H.264 frames")
            offer = [e for e in bob.events if e["type"] == "offer"][-1]["sdp"]
            assert "H264/90000" in offer and "packetization-mode=1" in offer
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


def test_three_participants_each_receive_the_other_two(server):
    tones = {"ann": 330.0, "ben": 550.0, "cat": 770.0}

    async def scenario():
        people = {name: await join(server, name) for name in tones}
        try:
            for name, tone in tones.items():
                await people[name].publish(tone=tone, video=True)

            def everyone_hears_everyone():
                return all(
                    len(people[me].tracks_from(people[other].sid, "audio")) == 1
                    and len(people[me].tracks_from(people[other].sid, "audio")[0].audio()) >= 2 * 48_000
                    and len(people[me].tracks_from(people[other].sid, "video")) == 1
                    and people[me].tracks_from(people[other].sid, "video")[0].frames >= 15
                    for me in tones for other in tones if other != me
                )

            await wait_for(everyone_hears_everyone, 30, what="every participant receiving the other two")
            for me in tones:
                assert not people[me].tracks_from(people[me].sid, "audio"), "nobody receives themselves"
                for other, tone in tones.items():
                    if other == me:
                        continue
                    heard = people[me].tracks_from(people[other].sid, "audio")[0].dominant_frequency(1.5)
                    assert abs(heard - tone) <= 10, (me, other, heard)
        finally:
            for person in people.values():
                await person.close()

    run(scenario(), timeout=90)


@pytest.mark.parley_set({"room.allowRemoteUnmute": "true"})
def test_the_admin_api_mutes_and_unmutes_a_participants_microphone(server):
    """POST /v1/rooms/{room}/participants/{identity}/mute: the listener hears the tone stop and
    come back, everyone (the muted one too) gets track.muted."""
    async def scenario():
        alice, bob, audio = await alice_tone_at_bob(server)
        try:
            reply = await asyncio.to_thread(server.admin, "POST", "/v1/rooms/media/participants/alice/mute", body={"track": "microphone", "muted": True})
            assert reply.status == 200 and reply.json()["muted"] is True, reply.text
            track = reply.json()["track"]
            await wait_for(lambda: any(e["type"] == "track.muted" and e["muted"] and e["track"] == track for e in bob.events), 5, what="bob told")
            await wait_for(lambda: any(e["type"] == "track.muted" and e["muted"] and e["track"] == track for e in alice.events), 5,
                           what="alice told")
            # Nothing (or silence) arrives while muted.
            await asyncio.sleep(1.0)
            muted_at = len(audio.audio())
            await asyncio.sleep(1.5)
            received = audio.audio()[muted_at:]
            assert len(received) < 48_000 // 4 or float(abs(received).mean()) < 100, "the tone went on after the admin muted it"

            reply = await asyncio.to_thread(server.admin, "POST", "/v1/rooms/media/participants/alice/mute", body={"track": track, "muted": False})
            assert reply.status == 200 and reply.json()["muted"] is False, reply.text
            before = len(audio.audio())
            await wait_for(lambda: len(audio.audio()) >= before + 2 * 48_000, 10, what="2 s of audio after the unmute")
            assert abs(audio.dominant_frequency(1.0) - 440) <= 10 and audio.rms(1.0) > 1000, "the tone is back"

            reply = await asyncio.to_thread(server.admin, "POST", "/v1/rooms/media/participants/alice/mute", body={"track": "TR_none", "muted": True})
            assert reply.status == 404 and "no track" in reply.text, reply.text
            reply = await asyncio.to_thread(server.admin, "POST", "/v1/rooms/media/participants/zed/mute", body={"track": track, "muted": True})
            assert reply.status == 404, reply.text
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


def test_remote_unmute_is_refused_unless_the_operator_allows_it(server):
    async def scenario():
        alice = await join(server, "alice")
        try:
            await alice.publish(tone=440.0, video=False)
            reply = await asyncio.to_thread(server.admin, "POST", "/v1/rooms/media/participants/alice/mute", body={"track": "audio", "muted": True})
            assert reply.status == 200, reply.text
            reply = await asyncio.to_thread(server.admin, "POST", "/v1/rooms/media/participants/alice/mute", body={"track": "audio", "muted": False})
            assert reply.status == 403 and "room.allowRemoteUnmute" in reply.text, reply.text
        finally:
            await alice.close()

    run(scenario())


def test_mute_then_unmute_resumes_audio(server):
    async def scenario():
        alice, bob, audio = await alice_tone_at_bob(server)
        try:
            await alice.mute("audio", True)
            await wait_for(lambda: any(e["type"] == "track.muted" and e["muted"] for e in bob.events), 5, what="track.muted")
            await asyncio.sleep(1.5)
            before_unmute = len(audio.audio())
            await alice.mute("audio", False)
            await wait_for(lambda: any(e["type"] == "track.muted" and not e["muted"] for e in bob.events), 5, what="track.muted false")
            await wait_for(lambda: len(audio.audio()) >= before_unmute + 2 * 48_000, 10, what="2 s of audio after unmute")
            await asyncio.sleep(0.5)
            frequency = audio.dominant_frequency(1.5)
            assert abs(frequency - 440) <= 10, frequency
            assert audio.rms(1.0) > 1000, "audio resumed with the tone, not silence"
        finally:
            await alice.close()
            await bob.close()

    run(scenario())


def test_media_flows_over_ipv6_loopback(server_factory, monkeypatch):
    """The server on ::1 (signaling, media host candidates and TURN): aiortc peers whose only host
    candidate is ::1 publish and hear each other, and TURN answers on ::1."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["::1"])
    server = server_factory({"log.level": "warning"}, host="::1")

    async def scenario():
        alice = Participant(server.rtc_url(server.token("alice", "six")), "alice")
        bob = Participant(server.rtc_url(server.token("bob", "six")), "bob")
        await alice.connect()
        await bob.connect()
        try:
            turn = [s for s in alice.joined["iceServers"] if any(u.startswith("turn:") for u in s["urls"])]
            assert turn and all("[::1]" in u for s in turn for u in s["urls"]), alice.joined["iceServers"]
            answer = await alice.publish(tone=440.0, video=True)
            await wait_for(lambda: bob.tracks_from(alice.sid, "audio") and len(bob.tracks_from(alice.sid, "audio")[0].audio()) >= 48_000,
                           20, what="a second of alice's tone at bob over IPv6")
            audio = bob.tracks_from(alice.sid, "audio")[0]
            assert abs(audio.dominant_frequency(1.0) - 440) <= 10
            await wait_for(lambda: bob.tracks_from(alice.sid, "video") and bob.tracks_from(alice.sid, "video")[0].frames >= 10, 20,
                           what="alice's video at bob")
            assert " ::1 " in answer.get("sdp", "") or "IP6 ::1" in answer.get("sdp", ""), answer
        finally:
            await alice.close()
            await bob.close()

    run(scenario(), timeout=60)
