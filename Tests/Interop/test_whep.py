"""WHEP playback with a player written here on aiortc from the WHEP draft: POST a receive-only
offer with a Bearer token (subscribe grant), get 201 with Location, ETag, Link and the answer,
then hear the room's tone and decode its video. Without `?participant=` the player follows the
active speaker and switches on the same stream when someone else speaks; with it, it gets that
participant. PATCH (ICE restart), DELETE, and the refusals."""

from __future__ import annotations

import asyncio
import urllib.parse

import numpy
from aiortc import RTCPeerConnection, RTCSessionDescription

from conftest import mint_token
from rtc_peer import SAMPLE_RATE, Participant, ReceivedTrack, consume, wait_for
from test_whip import http, run


class WHEPPlayer:
    """A WHEP player: one receive-only audio and video transceiver, what arrives kept."""

    def __init__(self, endpoint: str, token: str):
        self.endpoint = endpoint
        self.token = token
        self.pc = RTCPeerConnection()
        self.location: str | None = None
        self.etag: str | None = None
        self.links: list[str] = []
        self.audio = ReceivedTrack(kind="audio", participant="", track="")
        self.video = ReceivedTrack(kind="video", participant="", track="")
        self.last_image: numpy.ndarray | None = None
        self.ssrcs: set[int] = set()
        self._tasks: list[asyncio.Task] = []
        self.pc.on("track", self._on_track)

    async def play(self, query: str = "") -> None:
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        status, headers, self.links, body = await asyncio.to_thread(
            http, "POST", self.endpoint + query, self.pc.localDescription.sdp.encode(),
            {"Content-Type": "application/sdp", "Authorization": f"Bearer {self.token}"})
        assert status == 201, (status, body)
        assert headers["Content-Type"] == "application/sdp"
        self.location = urllib.parse.urljoin(self.endpoint, headers["Location"])
        self.etag = headers["ETag"]
        self.answer = body.decode()
        await self.pc.setRemoteDescription(RTCSessionDescription(self.answer, "answer"))

    def _on_track(self, track) -> None:
        self._tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track) -> None:
        received = self.audio if track.kind == "audio" else self.video
        await consume(track, received, on_video=self._keep_image)

    def _keep_image(self, frame) -> None:
        self.last_image = frame.to_ndarray(format="rgb24")

    def blue(self) -> float:
        return float(self.last_image[:, :, 2].mean()) if self.last_image is not None else -1.0

    def frequency(self) -> float:
        return self.audio.dominant_frequency(1.0)

    def delete(self):
        return http("DELETE", self.location, None, {"Authorization": f"Bearer {self.token}"})

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


async def heard(player: WHEPPlayer, frequency: float, timeout: float, what: str) -> None:
    """The last second of the player's audio is the tone at `frequency`."""
    start = len(player.audio.audio())
    await wait_for(lambda: len(player.audio.audio()) - start >= SAMPLE_RATE and abs(player.frequency() - frequency) <= 10,
                   timeout, what=what)


async def seen(player: WHEPPlayer, blue: int, timeout: float, what: str) -> None:
    """Decoded frames keep coming and the latest is the pattern with this blue."""
    frames = player.video.frames
    try:
        await wait_for(lambda: player.video.frames >= frames + 10 and abs(player.blue() - blue) <= 25, timeout, what=what)
    except AssertionError as error:
        raise AssertionError(f"{error}: {player.video.frames - frames} new frames, blue {player.blue():.0f}") from None


def test_a_whep_player_follows_the_speaker_hearing_and_seeing_each_on_one_stream(server):
    async def scenario():
        alice = Participant(server.rtc_url(server.token("alice", "stage")), "alice")
        bob = Participant(server.rtc_url(server.token("bob", "stage")), "bob")
        player = WHEPPlayer(server.url + "/v1/whep", mint_token("tv", "stage", publish=False, chat=False))
        try:
            await alice.connect()
            await bob.connect()
            await alice.publish(440.0, blue=40)
            await bob.publish(660.0, blue=220, amplitude=0.0)  # bob is silent at first
            await player.play()
            assert player.location.startswith(server.url + "/v1/whep/"), player.location
            assert player.answer.count("a=sendonly") == 2 and "a=ice-lite" in player.answer, player.answer
            assert any(l.startswith("<turn:") and "credential=" in l for l in player.links), player.links
            # The player is audience: nobody sees it join.
            await asyncio.sleep(0.5)
            assert not any(e["type"] == "participant.joined" and e["participant"]["identity"] == "tv" for e in alice.events)

            await heard(player, 440, 20, "alice's tone at the player")
            await seen(player, 40, 20, "alice's video decoded at the player")

            # bob speaks, alice stops: the player switches to bob on the same two streams.
            bob.tone.amplitude = 0.3
            alice.tone.amplitude = 0.0
            await heard(player, 660, 15, "bob's tone after the switch")
            try:
                await seen(player, 220, 15, "bob's video after the switch")
            except AssertionError:
                # What the server sends the player, to tell a pause from a switch that did not happen.
                print("player's media:", server.admin("GET", "/v1/rooms/stage/participants").text)
                raise
            receivers = player.pc.getReceivers()
            assert len([r for r in receivers if r.track and r.track.readyState == "live"]) == 2

            # Both silent: bob keeps the picture.
            bob.tone.amplitude = 0.0
            await asyncio.sleep(2)
            await seen(player, 220, 10, "bob still shown in silence")

            status, _, _, _ = await asyncio.to_thread(player.delete)
            assert status == 200
            status, _, _, _ = await asyncio.to_thread(player.delete)
            assert status == 404
        finally:
            await player.close()
            await alice.close()
            await bob.close()

    run(scenario(), timeout=120)
    assert "parley_whep_sessions_total 1" in server.http("GET", "/metrics").text


def test_a_whep_player_under_a_participants_own_identity_plays_beside_that_participant(server):
    """Someone in the call also plays the room on a TV with a token of the same identity: the
    player joins beside them, not in their place, and its session answers to that identity."""
    async def scenario():
        alice = Participant(server.rtc_url(server.token("alice", "den")), "alice")
        bob = Participant(server.rtc_url(server.token("bob", "den")), "bob")
        player = WHEPPlayer(server.url + "/v1/whep", mint_token("alice", "den", publish=False, chat=False))
        try:
            await alice.connect()
            await bob.connect()
            await bob.publish(660.0, blue=220)
            await player.play()
            await heard(player, 660, 20, "bob's tone at alice's player")
            assert not any(e["type"] == "participant.left" for e in alice.events + bob.events), alice.events
            identities = [p["identity"] for p in server.admin("GET", "/v1/rooms/den/participants").json()["participants"]]
            assert identities.count("alice") == 1 and any(i.startswith("alice#whep_") for i in identities), identities
            status, _, _, _ = await asyncio.to_thread(player.delete)
            assert status == 200
        finally:
            await player.close()
            await alice.close()
            await bob.close()

    run(scenario(), timeout=60)


def test_a_whep_player_asking_for_a_participant_gets_that_one_and_waits_for_it(server):
    async def scenario():
        alice = Participant(server.rtc_url(server.token("alice", "hall")), "alice")
        carol = Participant(server.rtc_url(server.token("carol", "hall")), "carol")
        player = WHEPPlayer(server.url + "/v1/whep", mint_token("tv", "hall", publish=False, chat=False))
        try:
            await alice.connect()
            await alice.publish(440.0, blue=40)
            # carol is not there yet: the player waits for her, and hears nobody else meanwhile.
            await player.play("?participant=carol")
            await asyncio.sleep(3)
            assert player.audio.rms(1.0) < 50 and player.video.frames == 0, (player.audio.rms(1.0), player.video.frames)
            await carol.connect()
            await carol.publish(550.0, blue=220, amplitude=0.1)  # quieter than alice: pinned, not followed
            await heard(player, 550, 20, "carol's tone")
            await seen(player, 220, 20, "carol's video")
        finally:
            await player.close()
            await alice.close()
            await carol.close()

    run(scenario(), timeout=90)


def test_whep_patch_restarts_ice_and_refusals_name_what_is_wrong(server):
    token = mint_token("tv", "room", publish=False, chat=False)

    async def offer() -> str:
        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        await pc.close()
        return pc.localDescription.sdp

    sdp = run(offer())

    def post(body: bytes, headers: dict, query: str = ""):
        return http("POST", server.url + "/v1/whep" + query, body, headers)

    sdp_headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
    status, _, _, body = post(sdp.encode(), {**sdp_headers, "Authorization": "Bearer " + mint_token("tv", "room", subscribe=False)})
    assert status == 403 and b"subscribe" in body, (status, body)
    status, _, _, _ = post(sdp.encode(), {**sdp_headers, "Content-Type": "text/plain"})
    assert status == 415
    status, _, _, _ = post(sdp.encode(), {"Content-Type": "application/sdp"})
    assert status == 401
    status, _, _, _ = post(b"v=0\r\n" + b"x" * 70_000, sdp_headers)
    assert status == 413
    status, _, _, body = post(b"v=0\r\ns=-\r\n", sdp_headers)
    assert status == 422, (status, body)
    # A publisher's offer (sendonly) has nothing to play.
    sendonly = sdp.replace("a=recvonly", "a=sendonly")
    status, _, _, body = post(sendonly.encode(), sdp_headers)
    assert status == 400 and b"receives no audio or video" in body, (status, body)

    status, headers, _, body = post(sdp.encode(), sdp_headers)
    assert status == 201, (status, body)
    location = urllib.parse.urljoin(server.url + "/v1/whep", headers["Location"])
    restart = "a=ice-ufrag:newufrag\r\na=ice-pwd:newpasswordnewpasswordxx\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
    patch_headers = {"Content-Type": "application/trickle-ice-sdpfrag", "Authorization": f"Bearer {token}"}
    status, _, _, _ = http("PATCH", location, restart.encode(), {**patch_headers, "If-Match": '"stale"'})
    assert status == 412
    status, reply, _, body = http("PATCH", location, restart.encode(), {**patch_headers, "If-Match": headers["ETag"]})
    assert status == 200 and "a=ice-ufrag:" in body.decode() and reply["ETag"] != headers["ETag"], (status, body)
    # A WHEP session is not a WHIP one.
    whip_location = location.replace("/v1/whep/", "/v1/whip/")
    status, _, _, _ = http("DELETE", whip_location, None, {"Authorization": f"Bearer {token}"})
    assert status == 404
    status, _, _, _ = http("DELETE", location, None, {"Authorization": "Bearer " + mint_token("mallory", "room")})
    assert status == 403
    status, _, _, _ = http("DELETE", location, None, {"Authorization": f"Bearer {token}"})
    assert status == 200


def test_a_chromium_page_plays_by_whep_with_fetch_and_follows_the_speaker(server):
    """A player page written with fetch: the browser decodes alice, then bob on the same stream
    (one inbound video SSRC) once he speaks."""
    from test_web_client_chromium import browser

    token = mint_token("tv-page", "screen", publish=False, chat=False)
    driver = browser()

    def page_state() -> dict:
        return driver.execute_async_script("""
            const done = arguments[0];
            (async () => {
              const video = document.getElementById("player");
              const canvas = document.createElement("canvas");
              canvas.width = 64; canvas.height = 48;
              const context = canvas.getContext("2d");
              context.drawImage(video, 0, 0, 64, 48);
              const pixels = context.getImageData(0, 0, 64, 48).data;
              let blue = 0;
              for (let i = 2; i < pixels.length; i += 4) blue += pixels[i];
              const stats = await window.whepPC.getStats();
              const inbound = [...stats.values()].filter((s) => s.type === "inbound-rtp");
              const videoIn = inbound.filter((s) => s.kind === "video");
              done({blue: blue / (pixels.length / 4), frames: videoIn.reduce((n, s) => n + (s.framesDecoded || 0), 0),
                    videoSSRCs: videoIn.map((s) => s.ssrc), audioBytes: inbound.filter((s) => s.kind === "audio")
                      .reduce((n, s) => n + (s.bytesReceived || 0), 0), state: window.whepPC.connectionState});
            })().catch((e) => done({error: String(e)}));
        """)

    async def shows(blue: int, what: str) -> dict:
        start = page_state()["frames"]
        state: dict = {}

        def check() -> bool:
            nonlocal state
            state = page_state()
            return state.get("frames", 0) >= start + 20 and abs(state.get("blue", -100) - blue) <= 30

        try:
            await wait_for(check, 20, interval=0.5, what=what)
        except AssertionError as error:
            raise AssertionError(f"{error}: {state}") from None
        return state

    async def scenario():
        alice = Participant(server.rtc_url(server.token("alice", "screen")), "alice")
        bob = Participant(server.rtc_url(server.token("bob", "screen")), "bob")
        try:
            await alice.connect()
            await bob.connect()
            await alice.publish(440.0, blue=40)
            await bob.publish(660.0, blue=220, amplitude=0.0)
            driver.get(server.url + "/")
            location = driver.execute_async_script("""
                const [token, done] = arguments;
                (async () => {
                  const video = document.createElement("video");
                  video.id = "player"; video.muted = true; video.autoplay = true; video.playsInline = true;
                  document.body.appendChild(video);
                  const pc = new RTCPeerConnection();
                  pc.addTransceiver("audio", {direction: "recvonly"});
                  pc.addTransceiver("video", {direction: "recvonly"});
                  const stream = new MediaStream();
                  pc.ontrack = (event) => { stream.addTrack(event.track); video.srcObject = stream; };
                  await pc.setLocalDescription(await pc.createOffer());
                  const res = await fetch("/v1/whep", {method: "POST", body: pc.localDescription.sdp,
                    headers: {"Content-Type": "application/sdp", "Authorization": "Bearer " + token}});
                  if (res.status !== 201) return done("status " + res.status + " " + await res.text());
                  await pc.setRemoteDescription({type: "answer", sdp: await res.text()});
                  window.whepPC = pc;
                  done(res.headers.get("Location"));
                })().catch((e) => done("error " + e));
            """, token)
            assert location.startswith("/v1/whep/PA_"), location
            first = await shows(40, "alice's picture in the page")
            assert first["state"] == "connected" and first["audioBytes"] > 0, first
            bob.tone.amplitude = 0.3
            alice.tone.amplitude = 0.0
            after = await shows(220, "bob's picture after he speaks")
            assert after["videoSSRCs"] == first["videoSSRCs"] and len(after["videoSSRCs"]) == 1, (first, after)
        finally:
            await alice.close()
            await bob.close()

    try:
        run(scenario(), timeout=90)
    finally:
        driver.quit()
