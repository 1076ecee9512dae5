"""Webhooks to a receiver written for LiveKit: livekit-api's own WebhookReceiver verifies each
request's signature (a JWT whose sha256 claim is the body's hash) and parses the body as LiveKit's
WebhookEvent. A scripted session's events arrive in order; a receiver that is down while events
happen, across a restart of the server, still gets every one once it is back."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from google.protobuf.json_format import MessageToDict
from livekit import api

from conftest import API_KEY, API_SECRET, free_port
from rtc_peer import Participant, wait_for as wait_async

pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key")


class Receiver:
    """An HTTP receiver on a fixed port that verifies like LiveKit's SDK; `status` is what it answers."""

    def __init__(self, port: int):
        self.port = port
        self.events: list[dict] = []  # as LiveKit's SDK parsed them
        self.raw: list[dict] = []  # as sent
        self.refused: list[str] = []
        self.status = 200
        self.server: ThreadingHTTPServer | None = None
        self.verifier = api.WebhookReceiver(api.TokenVerifier(API_KEY, API_SECRET))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "Receiver":
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                try:
                    event = outer.verifier.receive(body, self.headers.get("Authorization", ""))
                    if outer.status == 200:
                        outer.events.append(MessageToDict(event))
                        outer.raw.append(json.loads(body))
                except Exception as err:  # a signature or body LiveKit's SDK refuses
                    outer.refused.append(f"{err}: {body[:200]}")
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def names(self, room: str) -> list[str]:
        return [e["event"] for e in self.events if e.get("room", {}).get("name") == room]

    def wait(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"no {what} within {timeout}s: {[(e['event'], e.get('room', {}).get('name')) for e in self.events]}"
                             f" refused {self.refused}")


@pytest.fixture
def receiver():
    r = Receiver(free_port()).start()
    yield r
    r.stop()


def session(server, room: str, record: bool = False):
    async def run():
        alice = Participant(server.rtc_url(server.token("alice", room, record=record)), "alice")
        await alice.connect()
        await alice.publish(tone=440.0, video=False)
        await wait_async(lambda: any(e["type"] == "answer" or e.get("tracks") for e in alice.events) or alice.published, 10,
                         what="the publish answer")
        if record:
            started = await alice.request({"type": "recording.start", "mode": "tracks"})
            await asyncio.sleep(1.5)
            await alice.request({"type": "recording.stop", "recording": started["recording"]["id"]})
        await asyncio.sleep(0.5)
        await alice.close()

    asyncio.run(asyncio.wait_for(run(), 60))


def test_a_sessions_events_arrive_signed_and_in_order(server_factory, receiver):
    server = server_factory({"webhook.urls": receiver.url, "room.emptyTimeout": "1s"})
    session(server, "hooks", record=True)
    expected = ["room_started", "participant_joined", "track_published", "egress_started", "egress_ended",
                "track_unpublished", "participant_left", "room_finished"]
    receiver.wait(lambda: receiver.names("hooks")[-1:] == ["room_finished"], 15, "room_finished")
    assert receiver.names("hooks") == expected, receiver.names("hooks")
    assert not receiver.refused, receiver.refused
    by_name = {e["event"]: e for e in receiver.events}
    assert by_name["participant_joined"]["participant"]["identity"] == "alice"
    assert by_name["track_published"]["track"]["source"] == "MICROPHONE"
    by_name = {e["event"]: e for e in receiver.raw}  # enums at their default are left out of MessageToDict
    assert by_name["track_published"]["track"]["type"] == "AUDIO" and by_name["track_published"]["track"]["source"] == "MICROPHONE"
    assert by_name["egress_ended"]["egressInfo"]["status"] == "EGRESS_COMPLETE"
    assert by_name["room_started"]["room"]["sid"].startswith("RM_")
    assert all(e["id"].startswith("EV_") and int(e["createdAt"]) > 1_700_000_000 for e in receiver.events)
    assert len({e["id"] for e in receiver.events}) == len(receiver.events)
    metrics = server.http("GET", "/metrics").text
    assert "parley_webhook_deliveries_total 8" in metrics, [l for l in metrics.splitlines() if "webhook" in l]


def test_events_while_the_receiver_is_down_arrive_after_a_restart(server_factory, receiver):
    server = server_factory({"webhook.urls": receiver.url, "room.emptyTimeout": "1s"})
    session(server, "first")
    receiver.wait(lambda: "room_finished" in receiver.names("first"), 15, "the first session")
    receiver.stop()
    down_at = time.monotonic()
    session(server, "while-down")
    time.sleep(2)  # room_finished after the empty timeout
    # Answers 500 for a while, then not there at all across a restart of the server.
    server.restart()
    assert time.monotonic() - down_at < 10 + 5
    time.sleep(max(0, 10 - (time.monotonic() - down_at)))
    receiver.start()
    receiver.wait(lambda: "room_finished" in receiver.names("while-down"), 70, "the events from while it was down")
    names = receiver.names("while-down")
    # At least once, in order: duplicates allowed, none missing.
    deduplicated = list(dict.fromkeys(e["id"] for e in receiver.events if e.get("room", {}).get("name") == "while-down"))
    assert [next(e["event"] for e in receiver.events if e["id"] == i) for i in deduplicated] == [
        "room_started", "participant_joined", "track_published", "track_unpublished", "participant_left", "room_finished"], names
    assert not receiver.refused, receiver.refused


def test_a_receiver_that_answers_500_is_retried_and_nothing_is_lost(server_factory, receiver):
    receiver.status = 500
    server = server_factory({"webhook.urls": receiver.url, "room.emptyTimeout": "1s"})
    session(server, "flaky")
    time.sleep(2)
    failures = [l for l in server.http("GET", "/metrics").text.splitlines() if l.startswith("parley_webhook_failures_total")]
    assert failures and float(failures[0].split()[-1]) >= 1, failures
    pending = [l for l in server.http("GET", "/metrics").text.splitlines() if l.startswith("parley_webhook_pending")]
    assert pending and float(pending[0].split()[-1]) >= 1, pending
    receiver.status = 200
    receiver.wait(lambda: "room_finished" in receiver.names("flaky"), 30, "every event after the receiver recovered")
    assert receiver.names("flaky")[0] == "room_started"
