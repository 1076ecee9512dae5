"""The browser SDK (/sdk/parley.js) in headless Chromium: the events an app gets and their order,
chat with its history, presence, typing, mute, stats; a dropped signaling connection resumed in
place; a server restart answered by a new session that publishes again; and the errors a refused
token and a denied camera give."""

from __future__ import annotations

import time

from conftest import mint_token
from test_web_client_chromium import browser, wait_until

# Loads the SDK into the page, records every event of a room in `window.events` (name and a
# summary) and every WebSocket the page opens in `window.sockets`, so a test can drop one.
SETUP = """
const done = arguments[arguments.length - 1];
(async () => {
  window.sockets = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native { constructor(...args) { super(...args); window.sockets.push(this); } };
  window.sdk = await import("/sdk/parley.js");
  window.events = [];
  const names = ["connectionStateChanged", "participantJoined", "participantLeft", "trackPublished", "trackUnpublished",
    "trackSubscribed", "trackUnsubscribed", "trackMuted", "trackPaused", "trackResumed", "trackLayer", "activeSpeakers", "chat",
    "presence", "typing", "reconnecting", "reconnected", "moving", "relayFallback", "localTrackPublished", "roomClosed",
    "left", "disconnected", "error"];
  const summary = (name, v) => {
    if (!v || typeof v !== "object") return v;
    if (name === "participantJoined") return { identity: v.identity };
    if (name === "participantLeft") return { identity: v.participant && v.participant.identity, reason: v.reason };
    if (name === "trackPublished" || name === "trackUnpublished" || name === "trackMuted")
      return { identity: v.participant && v.participant.identity, kind: v.track && v.track.kind, sid: v.track && v.track.sid, muted: v.muted };
    if (name === "trackSubscribed" || name === "trackUnsubscribed")
      return { identity: v.participant && v.participant.identity, kind: v.track.kind, sid: v.track.sid };
    if (name === "chat") return { id: v.id, seq: v.seq, text: v.text, from: v.from.identity };
    if (name === "presence") return { identity: v.participant && v.participant.identity, status: v.status, text: v.text };
    if (name === "typing") return { identity: v.participant && v.participant.identity, active: v.active };
    if (name === "reconnected") return { resumed: v.resumed };
    if (name === "trackLayer") return { sid: v.trackSid, layer: v.layer, rid: v.rid };
    if (name === "disconnected") return v.reason ? { reason: v.reason } : {};
    if (name === "error") return { code: v.code, message: v.message };
    if (name === "activeSpeakers") return v.map((s) => s.sid);
    if (name === "localTrackPublished") return { kind: v.kind, sid: v.sid };
    return {};
  };
  window.join = async (token, options) => {
    const room = await window.sdk.Room.connect(location.origin, token, options || {});
    window.room = room;
    for (const name of names) room.on(name, (v) => window.events.push({ name, value: summary(name, v), at: performance.now() }));
    return { sid: room.localParticipant.sid, identity: room.localParticipant.identity, others: [...room.participants.values()].map((p) => p.identity) };
  };
  window.call = (body) => Promise.resolve().then(body).then((v) => ({ ok: v === undefined ? null : v }), (e) => ({ error: e.code || String(e), message: e.message }));
  done(true);
})().catch((e) => done("setup failed: " + e));
"""


def page(server, grant_media: bool = True):
    driver = browser(grant_media=grant_media)
    driver.get(server.url + "/examples/")
    assert driver.execute_async_script(SETUP) is True
    return driver


def run_js(driver, body: str):
    """Runs `body` (an async function body) in the page; returns its value or raises with the SDK's error."""
    result = driver.execute_async_script(f"const done = arguments[0]; window.call(async () => {{ {body} }}).then(done);")
    if result is None or "error" in result:
        raise AssertionError(f"{body!r} failed: {result}")
    return result["ok"]


def events(driver, name: str | None = None) -> list:
    found = driver.execute_script("return window.events")
    return [e for e in found if name is None or e["name"] == name]


def frames_from(driver, identity: str) -> int:
    stats = run_js(driver, "return await window.room.getStats();")
    sids = run_js(driver, f"return [...window.room.participants.values()].filter((p) => p.identity === '{identity}').map((p) => p.sid);")
    return sum(s.get("framesDecoded", 0) for s in stats["inbound"] if s["kind"] == "video" and s["participant"] in sids)


def test_the_sdk_reports_a_meeting_in_order_chat_presence_typing_mute_and_stats(server):
    ada, bo = page(server), page(server)
    try:
        run_js(ada, f"return await window.join('{mint_token('ada', 'sdk')}');")
        joined = run_js(bo, f"return await window.join('{mint_token('bo', 'sdk')}');")
        assert joined["others"] == ["ada"], joined
        run_js(bo, "await window.room.publishCamera(); await window.room.publishMicrophone();")
        wait_until(lambda: len(events(ada, "trackSubscribed")) == 2, 20, "bo's two tracks at ada")
        order = [e["name"] for e in events(ada) if e["name"] in ("participantJoined", "trackPublished", "trackSubscribed")]
        assert order[0] == "participantJoined" and order.count("trackPublished") == 2, order
        published = {e["value"]["sid"]: i for i, e in enumerate(events(ada)) if e["name"] == "trackPublished"}
        subscribed = {e["value"]["sid"]: i for i, e in enumerate(events(ada)) if e["name"] == "trackSubscribed"}
        assert set(published) == set(subscribed) and all(published[s] < subscribed[s] for s in published), (published, subscribed)
        assert {e["value"]["identity"] for e in events(ada, "trackSubscribed")} == {"bo"}
        wait_until(lambda: frames_from(ada, "bo") > 20, 20, "bo's video decoded at ada")

        # Mute: the others hear of it.
        run_js(bo, "const mic = window.room.localTracks.find((t) => t.kind === 'audio'); await mic.mute();")
        wait_until(lambda: any(e["value"]["kind"] == "audio" and e["value"]["muted"] for e in events(ada, "trackMuted")), 10, "bo's mute")

        # Chat: acked with its seq, received with the same id; history pages oldest first.
        sent = [run_js(ada, f"return await window.room.sendChat('line {i}');") for i in range(3)]
        assert [m["seq"] for m in sent] == sorted(m["seq"] for m in sent)
        wait_until(lambda: [e["value"]["id"] for e in events(bo, "chat")] == [m["id"] for m in sent], 10, "the three lines at bo")
        page_of_two = run_js(bo, f"return await window.room.chatHistory({{ before: {sent[2]['seq']}, limit: 2 }});")
        assert [m["text"] for m in page_of_two["messages"]] == ["line 0", "line 1"] and page_of_two["hasMore"] is False, page_of_two
        direct = run_js(bo, "return await window.room.sendChat('just you', { to: ['ada'] });")
        assert direct["to"] == ["ada"]

        # Presence and typing.
        run_js(bo, "await window.room.setPresence('away', 'lunch'); window.room.setTyping(true);")
        wait_until(lambda: any(e["value"] == {"identity": "bo", "status": "away", "text": "lunch"} for e in events(ada, "presence")), 10,
                   "bo away at ada")
        wait_until(lambda: any(e["value"] == {"identity": "bo", "active": True} for e in events(ada, "typing")), 10, "bo typing")

        # Stats: what arrives, at what rate, over which round trip.
        run_js(ada, "await window.room.getStats();")
        time.sleep(1.5)
        stats = run_js(ada, "return await window.room.getStats();")
        video = [s for s in stats["inbound"] if s["kind"] == "video"]
        assert video and video[0]["bitrate"] > 20_000 and video[0]["width"] > 0, stats
        assert stats["roundTripTime"] is not None and stats["relayed"] is False, stats
        sent_stats = run_js(bo, "return await window.room.getStats();")
        assert any(o["kind"] == "video" for o in sent_stats["outbound"]), sent_stats

        # Selective subscription: a quality per track, then off and on again.
        camera = next(e["value"]["sid"] for e in events(ada, "trackSubscribed") if e["value"]["kind"] == "video")

        def layer_now():
            layers = [e["value"] for e in events(ada, "trackLayer") if e["value"]["sid"] == camera]
            return layers[-1]["rid"] if layers else None

        run_js(ada, f"window.room.subscribe('{camera}', {{ quality: 'low' }});")
        wait_until(lambda: layer_now() == "q", 20, "the low layer of bo's camera")
        run_js(ada, f"window.room.subscribe('{camera}', {{ quality: 'high' }});")
        wait_until(lambda: layer_now() == "f", 30, "the full layer of bo's camera")
        run_js(ada, f"window.room.unsubscribe('{camera}');")
        time.sleep(1.5)
        stopped = frames_from(ada, "bo")
        time.sleep(1.5)
        assert frames_from(ada, "bo") <= stopped + 2, "frames still arrive after unsubscribe"
        run_js(ada, f"window.room.subscribe('{camera}');")
        wait_until(lambda: frames_from(ada, "bo") > stopped + 20, 20, "bo's video back after subscribing again")

        # Another microphone, without renegotiating: the same track sid, the new device's audio at ada.
        switched = run_js(bo, """
            const mics = (await window.sdk.listDevices()).microphones;
            const other = mics.find((d) => d.label === 'Fake Audio Input 1');
            const before = window.room.localTracks.find((t) => t.kind === 'audio');
            const sid = before.sid;
            const after = await window.room.switchDevice('audio', other.deviceId);
            return { label: after.mediaStreamTrack.label, sameSid: after.sid === sid, live: after.mediaStreamTrack.readyState };""")
        assert switched == {"label": "Fake Audio Input 1", "sameSid": True, "live": "live"}, switched
        run_js(bo, "const mic = window.room.localTracks.find((t) => t.kind === 'audio'); await mic.unmute();")
        heard = run_js(ada, "return (await window.room.getStats()).inbound.filter((s) => s.kind === 'audio').reduce((n, s) => n + s.packetsReceived, 0);")
        wait_until(lambda: run_js(ada, "return (await window.room.getStats()).inbound.filter((s) => s.kind === 'audio').reduce((n, s) => n + s.packetsReceived, 0);")
                   > heard + 50, 10, "bo's audio from the other microphone")

        # Leaving: ada hears bo's tracks go, then bo leave.
        run_js(bo, "window.room.disconnect();")
        wait_until(lambda: events(ada, "participantLeft"), 10, "bo left")
        assert events(ada, "participantLeft")[0]["value"] == {"identity": "bo", "reason": "left"}
        assert len(events(ada, "trackUnsubscribed")) == 2
        assert run_js(bo, "return window.room.state;") == "disconnected"
        assert not events(ada, "error") and not events(bo, "error"), (events(ada, "error"), events(bo, "error"))
    finally:
        ada.quit()
        bo.quit()


def test_a_dropped_connection_resumes_in_place_and_a_server_restart_starts_a_new_session(server):
    ada, bo = page(server), page(server)
    try:
        first = run_js(ada, f"return await window.join('{mint_token('ada', 'resume')}');")
        run_js(ada, "await window.room.publishCamera(); window.mic = await window.room.publishMicrophone();")
        first_mic = run_js(ada, "return window.mic.sid;")
        run_js(bo, f"return await window.join('{mint_token('bo', 'resume')}');")
        wait_until(lambda: frames_from(bo, "ada") > 20, 20, "ada's video at bo")

        # The signaling socket drops (media does not): the SDK resumes the held session.
        run_js(ada, "window.sockets[window.sockets.length - 1].close();")
        wait_until(lambda: events(ada, "reconnected"), 15, "ada back")
        names = [e["name"] for e in events(ada) if e["name"] in ("reconnecting", "reconnected")]
        states = [e["value"] for e in events(ada, "connectionStateChanged")]
        assert names == ["reconnecting", "reconnected"] and states[-2:] == ["reconnecting", "connected"], (names, states)
        assert events(ada, "reconnected")[0]["value"] == {"resumed": True}
        assert run_js(ada, "return window.room.localParticipant.sid;") == first["sid"]
        assert not events(bo, "participantLeft"), "a resumed session never left"
        frames = frames_from(bo, "ada")
        wait_until(lambda: frames_from(bo, "ada") > frames + 20, 15, "ada's video still arriving")

        # The server restarts: the session is gone, so each page joins afresh and publishes again.
        server.restart(same_port=True)
        wait_until(lambda: len(events(ada, "reconnected")) == 2 and events(bo, "reconnected"), 30, "both back after the restart")
        assert events(ada, "reconnected")[1]["value"] == {"resumed": False}
        assert run_js(ada, "return window.room.localParticipant.sid;") != first["sid"]
        wait_until(lambda: frames_from(bo, "ada") > 20, 30, "ada's video at bo in the new session")

        # The app's handle of the microphone is the one published again: muting it reaches bo.
        mic = run_js(ada, "return window.mic.sid;")
        assert mic and mic != first_mic, (mic, first_mic)
        run_js(ada, "await window.mic.mute();")
        wait_until(lambda: any(e["value"]["sid"] == mic and e["value"]["muted"] for e in events(bo, "trackMuted")), 10, "bo sees the mute")
    finally:
        ada.quit()
        bo.quit()


def test_a_refused_token_and_a_denied_camera_give_their_codes(server):
    driver = page(server, grant_media=False)
    try:
        refused = run_js_error(driver, "return await window.join('not-a-token');")
        assert refused["error"] == "unauthorized", refused
        wrong_secret = mint_token("eve", "sdk", secret="not-the-secret-at-all-not-the-secret")
        refused = run_js_error(driver, f"return await window.join('{wrong_secret}');")
        assert refused["error"] == "unauthorized" and "signature" in refused["message"], refused
        run_js(driver, f"return await window.join('{mint_token('dan', 'sdk')}');")
        denied = run_js_error(driver, "return await window.room.publishCamera();")
        assert denied["error"] == "permission_denied", denied
    finally:
        driver.quit()


def test_a_token_refused_on_reconnecting_ends_the_retries_with_its_reason(server):
    """The server restarts after the token expired: no retry can succeed, so the SDK stops and
    says why instead of retrying for ever."""
    ada = page(server)
    try:
        run_js(ada, f"return await window.join('{mint_token('ada', 'expiry', ttl=2)}');")
        time.sleep(8)  # past exp and the server's 5 s leeway
        server.restart(same_port=True)
        wait_until(lambda: events(ada, "disconnected"), 30, "ada told she is out")
        assert [e["value"] for e in events(ada, "disconnected")] == [{"reason": "unauthorized"}], events(ada)
        assert not events(ada, "reconnected")
        assert [e["value"] for e in events(ada, "connectionStateChanged")][-1] == "disconnected"
        sockets = ada.execute_script("return window.sockets.length")
        time.sleep(6)
        assert ada.execute_script("return window.sockets.length") == sockets, "no retry after a final refusal"
    finally:
        ada.quit()


def run_js_error(driver, body: str) -> dict:
    result = driver.execute_async_script(f"const done = arguments[0]; window.call(async () => {{ {body} }}).then(done);")
    assert result and "error" in result, result
    return result


def test_a_page_whose_udp_is_blocked_falls_back_to_turn_over_tcp(netns_pool, server_factory):
    """All UDP arriving in the page's namespace is dropped: no direct media path and no TURN over
    UDP. With `turn: "fallback"` the first session has no relay candidates, so after
    `relayFallbackMs` the SDK joins again relay-only and its media goes through TURN over TCP; a
    page outside sees its video. (With the default `turn: "always"` ICE finds the relay itself.)"""
    import tempfile
    from pathlib import Path

    from test_adaptive_video_chromium import NsChromium

    ns = netns_pool.create()
    server = server_factory({"log.level": "warning"}, host=ns.host_ip)
    inside = NsChromium(ns, server.url, Path(tempfile.mkdtemp(prefix="parley-fallback-")), "inside", publish=True)
    outside = page(server)
    try:
        ns.udp_loss(100)
        driver = inside.driver
        driver.get(server.url + "/examples/")
        assert driver.execute_async_script(SETUP) is True
        run_js(driver, f"return await window.join('{mint_token('walled', 'fallback')}', {{ relayFallbackMs: 3000, turn: 'fallback' }});")
        run_js(driver, "window.room.publishCamera(); window.room.publishMicrophone();")
        run_js(outside, f"return await window.join('{mint_token('open', 'fallback')}');")
        try:
            wait_until(lambda: events(driver, "reconnected"), 30, "the walled page back, relay-only")
        except AssertionError as error:
            raise AssertionError(f"{error}; the walled page's events: {events(driver)}") from None
        assert events(driver, "relayFallback"), events(driver)
        assert events(driver, "reconnected")[0]["value"] == {"resumed": False}
        wait_until(lambda: frames_from(outside, "walled") > 20, 40, "the walled page's video outside")
        stats = run_js(driver, "return await window.room.getStats();")
        assert stats["relayed"] is True, stats
    finally:
        inside.quit()
        outside.quit()
