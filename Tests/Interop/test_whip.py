"""WHIP ingest (RFC 9725) with a client written here from the RFC on aiortc: POST an SDP offer
with a Bearer token, get 201 with Location, ETag, Link (ICE servers) and the answer, send a tone;
a participant on the WebSocket hears it at its pitch. PATCH (trickle, ICE restart, a stale ETag),
DELETE, OPTIONS, and the errors the RFC names."""

from __future__ import annotations

import asyncio
import re
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription

from conftest import mint_token
from rtc_peer import Participant, PatternTrack, ToneTrack, wait_for


def run(coro, timeout: float = 60.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.headers.get_all("Link") or [], response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.headers.get_all("Link") or [], err.read()


class WHIPClient:
    """A WHIP publisher as RFC 9725 describes one, on aiortc."""

    def __init__(self, endpoint: str, token: str):
        self.endpoint = endpoint
        self.token = token
        self.pc = RTCPeerConnection()
        self.location: str | None = None
        self.etag: str | None = None
        self.links: list[str] = []

    async def publish(self, tone: float, video: bool = False) -> int:
        self.pc.addTransceiver(ToneTrack(tone), direction="sendonly")
        if video:
            self.pc.addTransceiver(PatternTrack(), direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())  # aiortc gathers before returning
        status, headers, self.links, body = await asyncio.to_thread(
            http, "POST", self.endpoint, self.pc.localDescription.sdp.encode(),
            {"Content-Type": "application/sdp", "Authorization": f"Bearer {self.token}"})
        assert status == 201, (status, body)
        assert headers["Content-Type"] == "application/sdp"
        self.location = urllib.parse.urljoin(self.endpoint, headers["Location"])
        self.etag = headers["ETag"]
        await self.pc.setRemoteDescription(RTCSessionDescription(body.decode(), "answer"))
        return status

    @property
    def sid(self) -> str:
        return self.location.rsplit("/", 1)[1]

    def patch(self, fragment: str, etag: str | None = None, content_type: str = "application/trickle-ice-sdpfrag"):
        return http("PATCH", self.location, fragment.encode(),
                    {"Content-Type": content_type, "If-Match": etag or self.etag, "Authorization": f"Bearer {self.token}"})

    def delete(self):
        return http("DELETE", self.location, None, {"Authorization": f"Bearer {self.token}"})


def test_a_whip_publisher_is_heard_by_a_websocket_participant_and_leaves_on_delete(server):
    async def scenario():
        listener = Participant(server.rtc_url(server.token("listener", "whip")), "listener")
        await listener.connect()
        whip = WHIPClient(server.url + "/v1/whip", mint_token("obs", "whip"))
        try:
            await whip.publish(660.0, video=True)
            assert whip.location.startswith(server.url + "/v1/whip/PA_"), whip.location
            # The ICE servers come as Link headers, TURN with its credentials.
            assert any(l.startswith("<stun:") and 'rel="ice-server"' in l for l in whip.links), whip.links
            assert any(l.startswith("<turn:") and "username=" in l and "credential=" in l for l in whip.links), whip.links
            await wait_for(lambda: any(e["type"] == "participant.joined" and e["participant"]["identity"] == "obs"
                                       for e in listener.events), 10, what="obs joined")
            await wait_for(lambda: listener.tracks_from(whip.sid, "audio"), 15, what="the WHIP tone at the listener")
            heard = listener.tracks_from(whip.sid, "audio")[0]
            await wait_for(lambda: len(heard.audio()) >= 3 * 48_000, 20, what="3 s of the tone")
            assert abs(heard.dominant_frequency(2.0) - 660) <= 10
            await wait_for(lambda: listener.tracks_from(whip.sid, "video") and listener.tracks_from(whip.sid, "video")[0].frames > 10,
                           15, what="the WHIP video")

            # Trickle: Parley is ICE-lite, a candidate fragment is taken as it is.
            trickle = "a=ice-ufrag:" + re.search(r"a=ice-ufrag:(\S+)", whip.pc.localDescription.sdp).group(1) + "\r\n" \
                + "a=ice-pwd:" + re.search(r"a=ice-pwd:(\S+)", whip.pc.localDescription.sdp).group(1) + "\r\n" \
                + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:1 1 UDP 2130706431 127.0.0.1 9 typ host\r\n"
            status, _, _, _ = await asyncio.to_thread(whip.patch, trickle)
            assert status == 204, status
            status, _, _, body = await asyncio.to_thread(whip.patch, trickle, '"stale"')
            assert status == 412, (status, body)
            status, _, _, _ = await asyncio.to_thread(whip.patch, trickle, None, "text/plain")
            assert status == 415
            # ICE restart: new client credentials get new server credentials and a new ETag.
            restart = "a=ice-ufrag:newufrag\r\na=ice-pwd:newpasswordnewpasswordxx\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
            status, headers, _, body = await asyncio.to_thread(whip.patch, restart)
            assert status == 200 and headers["Content-Type"] == "application/trickle-ice-sdpfrag", (status, body)
            assert re.search(r"a=ice-ufrag:\S+", body.decode()) and "a=candidate:" in body.decode(), body
            assert headers["ETag"] != whip.etag

            status, _, _, _ = await asyncio.to_thread(whip.delete)
            assert status == 200
            await wait_for(lambda: any(e["type"] == "participant.left" and e.get("identity") == "obs" for e in listener.events), 10,
                           what="obs left")
            status, _, _, _ = await asyncio.to_thread(whip.delete)
            assert status == 404
        finally:
            await whip.pc.close()
            await listener.close()

    run(scenario())
    metrics = server.http("GET", "/metrics").text
    assert "parley_whip_sessions_total 1" in metrics


def test_whip_refusals_use_the_codes_the_rfc_names(server):
    endpoint = server.url + "/v1/whip"
    offer = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    token = mint_token("obs", "refusals")

    def post(body: bytes, headers: dict):
        return http("POST", endpoint, body, headers)[0]

    assert post(offer.encode(), {"Content-Type": "application/sdp"}) == 401  # no token
    no_publish = mint_token("viewer", "refusals", publish=False)
    assert post(offer.encode(), {"Content-Type": "application/sdp", "Authorization": f"Bearer {no_publish}"}) == 403
    assert post(offer.encode(), {"Content-Type": "text/plain", "Authorization": f"Bearer {token}"}) == 415
    assert post(offer.encode(), {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}) == 422  # no m-line
    huge = (offer + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" + "a=x:" + "y" * 70_000 + "\r\n").encode()
    assert post(huge, {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}) == 413
    broken = offer + "m=audio x UDP/TLS/RTP/SAVPF 111\r\n"
    assert post(broken.encode(), {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}) == 400
    # CORS preflight and the ICE servers for a token.
    status, headers, links, _ = http("OPTIONS", endpoint, None, {"Authorization": f"Bearer {token}"})
    assert status == 204 and headers["Access-Control-Allow-Origin"] == "*" and "POST" in headers["Access-Control-Allow-Methods"]
    assert any('rel="ice-server"' in l for l in links), links
    # A session that does not exist, or is someone else's.
    assert http("DELETE", endpoint + "/PA_nothing", None, {"Authorization": f"Bearer {token}"})[0] == 404


def test_a_chromium_page_publishes_by_whip_with_fetch(server):
    from test_web_client_chromium import browser

    token = mint_token("browser", "whip-page")
    driver = browser()

    async def scenario():
        listener = Participant(server.rtc_url(server.token("listener", "whip-page")), "listener")
        await listener.connect()
        try:
            driver.get(server.url + "/")
            location = driver.execute_async_script("""
                const [token, done] = arguments;
                (async () => {
                  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
                  const pc = new RTCPeerConnection();
                  for (const track of stream.getTracks()) pc.addTransceiver(track, {direction: "sendonly"});
                  await pc.setLocalDescription(await pc.createOffer());
                  await new Promise((r) => { if (pc.iceGatheringState === "complete") r();
                    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r(); setTimeout(r, 2000); });
                  const res = await fetch("/v1/whip", {method: "POST", body: pc.localDescription.sdp,
                    headers: {"Content-Type": "application/sdp", "Authorization": "Bearer " + token}});
                  if (res.status !== 201) return done("status " + res.status + " " + await res.text());
                  await pc.setRemoteDescription({type: "answer", sdp: await res.text()});
                  window.whipPC = pc;
                  done(res.headers.get("Location"));
                })().catch((e) => done("error " + e));
            """, token)
            assert location.startswith("/v1/whip/PA_"), location
            sid = location.rsplit("/", 1)[1]
            await wait_for(lambda: listener.tracks_from(sid, "audio") and listener.tracks_from(sid, "video"), 15,
                           what="the page's tracks at the listener")
            video = listener.tracks_from(sid, "video")[0]
            audio = listener.tracks_from(sid, "audio")[0]
            await wait_for(lambda: video.frames > 20 and len(audio.audio()) > 48_000, 20, what="the page's video and audio")
            assert driver.execute_script("return window.whipPC.connectionState") == "connected"
        finally:
            await listener.close()

    try:
        run(scenario())
    finally:
        driver.quit()


def test_the_swift_sdk_publishes_by_whip(server):
    import subprocess

    async def scenario():
        listener = Participant(server.rtc_url(server.token("listener", "sdk-whip")), "listener")
        await listener.connect()
        proc = await asyncio.create_subprocess_exec(
            server.binary, "whip", "--url", server.url + "/v1/whip", "--room", "sdk-whip", "--identity", "swift",
            "--tone", "550", "--duration", "6s", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
            assert "publishing at " + server.url + "/v1/whip/PA_" in line and "turn:" in line, line
            sid = line.split("/v1/whip/")[1].split()[0]
            await wait_for(lambda: listener.tracks_from(sid, "audio"), 15, what="the SDK's WHIP tone")
            heard = listener.tracks_from(sid, "audio")[0]
            await wait_for(lambda: len(heard.audio()) >= 2 * 48_000, 15, what="2 s of it")
            assert abs(heard.dominant_frequency(1.5) - 550) <= 10
            assert await asyncio.wait_for(proc.wait(), 20) == 0
            await wait_for(lambda: any(e["type"] == "participant.left" and e.get("identity") == "swift" for e in listener.events), 10,
                           what="the WHIP session deleted")
        finally:
            if proc.returncode is None:
                proc.kill()
            await listener.close()

    run(scenario())
