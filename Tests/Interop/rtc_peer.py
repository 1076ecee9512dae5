"""A WebRTC participant for the interop tests, built on aiortc: it joins over Parley's signaling,
publishes a tone and a video on its publisher transport, and receives everything it is offered on
its subscriber transport, as PROTOCOL.md lays out (two transports per participant).
"""

from __future__ import annotations

import asyncio
import fractions
import json
import math
import time
from dataclasses import dataclass, field

import aioice.ice
import av
import numpy
import websockets
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp

# aioice leaves loopback out of its host candidates; the tests run on loopback only.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []

SAMPLE_RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms


class ToneTrack(MediaStreamTrack):
    """A sine tone as s16 mono frames of 20 ms, paced in real time. `muted` sends silence."""

    kind = "audio"

    def __init__(self, frequency: float, amplitude: float = 0.3):
        super().__init__()
        self.frequency = frequency
        self.amplitude = amplitude
        self._samples = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._samples / SAMPLE_RATE
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        t = (numpy.arange(FRAME_SAMPLES) + self._samples) / SAMPLE_RATE
        wave = (self.amplitude * 32767 * numpy.sin(2 * math.pi * self.frequency * t)).astype(numpy.int16)
        frame = av.AudioFrame.from_ndarray(wave.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._samples
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._samples += FRAME_SAMPLES
        return frame


class PatternTrack(MediaStreamTrack):
    """A moving colour pattern, 320x240 at 15 frames per second."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: int = 15, blue: int = 128):
        super().__init__()
        self.width, self.height, self.fps, self.blue = width, height, fps, blue
        self._count = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._count / self.fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        shift = (self._count * 4) % self.width
        x = (numpy.arange(self.width) + shift) % 256
        row = numpy.stack([x, 255 - x, numpy.full_like(x, self.blue)], axis=-1).astype(numpy.uint8)
        image = numpy.repeat(row[numpy.newaxis, :, :], self.height, axis=0)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = self._count * (90_000 // self.fps)
        frame.time_base = fractions.Fraction(1, 90_000)
        self._count += 1
        return frame


@dataclass
class ReceivedTrack:
    """What arrived on one subscribed track."""

    kind: str
    participant: str
    track: str
    samples: list = field(default_factory=list)  # int16 mono chunks
    frames: int = 0
    first_at: float | None = None

    def audio(self) -> numpy.ndarray:
        return numpy.concatenate(self.samples) if self.samples else numpy.zeros(0, dtype=numpy.int16)

    def dominant_frequency(self, last_seconds: float = 2.0) -> float:
        audio = self.audio().astype(numpy.float64)
        audio = audio[-int(last_seconds * SAMPLE_RATE):]
        if len(audio) < SAMPLE_RATE // 10:
            return 0.0
        spectrum = numpy.abs(numpy.fft.rfft(audio * numpy.hanning(len(audio))))
        return float(numpy.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)[numpy.argmax(spectrum)])

    def rms(self, last_seconds: float) -> float:
        audio = self.audio().astype(numpy.float64)[-int(last_seconds * SAMPLE_RATE):]
        return float(numpy.sqrt(numpy.mean(audio**2))) if len(audio) else 0.0


async def consume(track: MediaStreamTrack, received: ReceivedTrack, on_video=None) -> None:
    """Decodes `track` into `received` until it ends: audio as mono s16, video counted (and each
    frame handed to `on_video`)."""
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if received.first_at is None:
            received.first_at = time.monotonic()
        if track.kind == "audio":
            data = frame.to_ndarray()  # packed s16, shape (1, samples * channels)
            channels = len(frame.layout.channels)
            mono = data.reshape(-1, channels)[:, 0] if channels > 1 else data.reshape(-1)
            received.samples.append(mono.astype(numpy.int16))
        else:
            received.frames += 1
            if on_video:
                on_video(frame)


class Participant:
    """One participant: a signaling WebSocket, a publisher and a subscriber PeerConnection."""

    def __init__(self, ws_url: str, name: str, relay_transport: str | None = None):
        """With `relay_transport` ("udp", "tcp" or "tls") both PeerConnections use only relay candidates
        through the TURN server that `joined` names, over that transport."""
        self.ws_url = ws_url
        self.name = name
        self.relay_transport = relay_transport
        self.ws = None
        self.joined: dict | None = None
        self.events: list[dict] = []
        self.published: dict[str, dict] = {}  # kind -> track info from the answer
        self.received: dict[str, ReceivedTrack] = {}  # track sid -> what arrived
        self.publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.subscriber = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._replies: dict[str, asyncio.Future] = {}
        self._tasks: list[asyncio.Task] = []
        self._next_id = 0
        self.subscriber.on("track", self._on_track)

    async def connect(self) -> dict:
        self.ws = await websockets.connect(self.ws_url, max_size=2**22)
        first = json.loads(await self.ws.recv())
        assert first["type"] == "joined", first
        self.joined = first
        if self.relay_transport:
            self.publisher, self.subscriber = self._relay_only_connections(first.get("iceServers", []))
        self._tasks.append(asyncio.ensure_future(self._read()))
        return first

    def _relay_only_connections(self, ice_servers: list[dict]):
        # "tls" is TURN over TLS: the turns: URL (over TCP).
        scheme, suffix = ("turns:", "?transport=tcp") if self.relay_transport == "tls" else ("turn:", f"?transport={self.relay_transport}")
        servers = [
            RTCIceServer(urls=url, username=server.get("username"), credential=server.get("credential"))
            for server in ice_servers
            for url in server["urls"]
            if url.startswith(scheme) and url.endswith(suffix)
        ]
        assert servers, f"joined offers no TURN server over {self.relay_transport}: {ice_servers}"
        config = RTCConfiguration(iceServers=servers[:1], iceTransportPolicy=RTCIceTransportPolicy.RELAY)
        publisher, subscriber = RTCPeerConnection(config), RTCPeerConnection(config)
        subscriber.on("track", self._on_track)
        return publisher, subscriber

    @property
    def sid(self) -> str:
        return self.joined["participant"]["sid"]

    async def request(self, message: dict, timeout: float = 10.0, allow_error: bool = False) -> dict:
        self._next_id += 1
        message["id"] = f"{self.name}-{self._next_id}"
        future = asyncio.get_running_loop().create_future()
        self._replies[message["id"]] = future
        await self.ws.send(json.dumps(message))
        reply = await asyncio.wait_for(future, timeout)
        if reply.get("type") == "error" and not allow_error:
            raise RuntimeError(f"{message['type']} refused: {reply}")
        return reply

    async def publish(self, tone: float | None = 440.0, video: bool = True, video_codec: str | None = None,
                      amplitude: float = 0.3, blue: int = 128) -> dict:
        self.tone = ToneTrack(tone, amplitude) if tone else None
        if self.tone:
            self.publisher.addTransceiver(self.tone, direction="sendonly")
        if video:
            transceiver = self.publisher.addTransceiver(PatternTrack(blue=blue), direction="sendonly")
            if video_codec:
                codecs = RTCRtpSender.getCapabilities("video").codecs
                transceiver.setCodecPreferences([c for c in codecs if c.mimeType.lower() == f"video/{video_codec.lower()}"])
        await self.publisher.setLocalDescription(await self.publisher.createOffer())
        reply = await self.request({"type": "offer", "target": "publisher", "sdp": self.publisher.localDescription.sdp})
        assert reply["type"] == "answer", reply
        await self.publisher.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        for track in reply.get("tracks", []):
            self.published[track["kind"]] = track
        return reply

    async def mute(self, kind: str, muted: bool) -> dict:
        if kind == "audio" and self.tone:
            self.tone.amplitude = 0.0 if muted else 0.3
        return await self.request({"type": "mute", "track": self.published[kind]["sid"], "muted": muted})

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                message = json.loads(text)
                if "re" in message and message["re"] in self._replies:
                    future = self._replies.pop(message["re"])
                    if not future.done():
                        future.set_result(message)
                    continue
                self.events.append(message)
                if message["type"] == "offer" and message.get("target") == "subscriber":
                    await self._answer_subscriber(message)
                elif message["type"] == "candidate":
                    await self._add_candidate(message)
        except websockets.ConnectionClosed:
            pass

    async def _answer_subscriber(self, offer: dict) -> None:
        await self.subscriber.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await self.subscriber.setLocalDescription(await self.subscriber.createAnswer())
        await self.ws.send(
            json.dumps({"type": "answer", "re": offer["id"], "target": "subscriber", "sdp": self.subscriber.localDescription.sdp})
        )

    async def _add_candidate(self, message: dict) -> None:
        pc = self.publisher if message.get("target") == "publisher" else self.subscriber
        candidate = message.get("candidate")
        if candidate is None or pc.remoteDescription is None:
            return
        parsed = candidate_from_sdp(candidate["candidate"].split(":", 1)[1])
        parsed.sdpMid = candidate.get("sdpMid")
        parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
        await pc.addIceCandidate(parsed)

    def _on_track(self, track: MediaStreamTrack) -> None:
        # The server's offer carries `a=msid:<participant sid> <track sid>`; aiortc names the
        # received track after the msid's track part.
        received = ReceivedTrack(kind=track.kind, participant=self._participant_of(track.id), track=track.id)
        self.received[received.track] = received
        self._tasks.append(asyncio.ensure_future(self._consume(track, received)))

    def _participant_of(self, track_sid: str) -> str:
        sdp = self.subscriber.remoteDescription.sdp if self.subscriber.remoteDescription else ""
        for line in sdp.splitlines():
            if line.startswith("a=msid:") and line.endswith(" " + track_sid):
                return line[7:].split(" ")[0]
        return ""

    async def _consume(self, track: MediaStreamTrack, received: ReceivedTrack) -> None:
        await consume(track, received)

    def tracks_from(self, participant_sid: str, kind: str) -> list[ReceivedTrack]:
        for received in self.received.values():
            # The track event fires inside setRemoteDescription, before the offer is readable.
            if not received.participant:
                received.participant = self._participant_of(received.track)
        return [r for r in self.received.values() if r.participant == participant_sid and r.kind == kind]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.ws is not None:
            try:
                await self.ws.send(json.dumps({"type": "leave"}))
            except websockets.ConnectionClosed:
                pass
            await self.ws.close()
        await self.publisher.close()
        await self.subscriber.close()


async def wait_for(condition, timeout: float, interval: float = 0.1, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
