// The call: a publisher PeerConnection (we offer, sendonly) and a subscriber one (the server
// offers), as PROTOCOL.md describes. Remote tiles are keyed by the participant sid that the
// server puts in each m-line's msid.
"use strict";
const media = { publisher: null, subscriber: null, local: null, tracks: {}, tiles: new Map(), pendingOffer: null };
window.parley = media;

function rtcConfig(iceServers) {
  const relayOnly = new URLSearchParams(location.search).get("relay") === "1";
  return { iceServers: iceServers || [], iceTransportPolicy: relayOnly ? "relay" : "all", bundlePolicy: "max-bundle" };
}

function tile(sid, name) {
  let t = media.tiles.get(sid);
  if (!t) {
    const el = document.createElement("div"); el.className = "tile"; el.dataset.sid = sid;
    const video = document.createElement("video"); video.autoplay = true; video.playsInline = true;
    if (sid === "local") video.muted = true;
    const label = document.createElement("span"); label.className = "label";
    el.append(video, label); $("tiles").append(el);
    t = { el, video, label, stream: new MediaStream() };
    video.srcObject = t.stream;
    media.tiles.set(sid, t);
  }
  t.label.textContent = name || (people.get(sid) || {}).name || sid;
  return t;
}

function dropTile(sid) {
  const t = media.tiles.get(sid);
  if (t) { t.el.remove(); media.tiles.delete(sid); }
}

async function startMedia(joined) {
  stopMedia();
  // Capture first: a page with a granted capture gets host candidates instead of mDNS names.
  try {
    media.local = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false }, video: { width: 640, height: 480 } });
  } catch (err) {
    $("mediaStatus").textContent = `no camera or microphone (${err.name}); receiving only`;
  }
  const config = rtcConfig(joined.iceServers);
  media.subscriber = new RTCPeerConnection(config);
  media.subscriber.onicecandidate = (e) => send({ type: "candidate", target: "subscriber", candidate: e.candidate ? e.candidate.toJSON() : null });
  media.subscriber.ontrack = (e) => {
    const sid = e.streams[0] ? e.streams[0].id : "unknown";
    const t = tile(sid);
    t.stream.addTrack(e.track);
    e.track.onended = () => t.stream.removeTrack(e.track);
  };
  if (media.pendingOffer) { const offer = media.pendingOffer; media.pendingOffer = null; answerSubscriber(offer); }
  if (!media.local) return;
  const preview = tile("local", "you");
  media.local.getTracks().forEach((track) => preview.stream.addTrack(track));
  media.publisher = new RTCPeerConnection(config);
  media.publisher.onicecandidate = (e) => send({ type: "candidate", target: "publisher", candidate: e.candidate ? e.candidate.toJSON() : null });
  media.publisher.onconnectionstatechange = () => { $("mediaStatus").textContent = `sending: ${media.publisher.connectionState}`; };
  for (const track of media.local.getTracks()) media.publisher.addTransceiver(track, { direction: "sendonly", streams: [media.local] });
  await media.publisher.setLocalDescription(await media.publisher.createOffer());
  media.publishRequest = request({ type: "offer", target: "publisher", sdp: media.publisher.localDescription.sdp });
}

function stopMedia() {
  for (const pc of [media.publisher, media.subscriber]) if (pc) pc.close();
  if (media.local) media.local.getTracks().forEach((t) => t.stop());
  media.publisher = media.subscriber = media.local = null;
  media.tracks = {};
  for (const sid of [...media.tiles.keys()]) dropTile(sid);
}

async function answerSubscriber(offer) {
  if (!media.subscriber) { media.pendingOffer = offer; return; }
  await media.subscriber.setRemoteDescription({ type: "offer", sdp: offer.sdp });
  await media.subscriber.setLocalDescription(await media.subscriber.createAnswer());
  send({ type: "answer", re: offer.id, target: "subscriber", sdp: media.subscriber.localDescription.sdp });
}

async function addCandidate(msg) {
  const pc = msg.target === "publisher" ? media.publisher : media.subscriber;
  if (!pc || !pc.remoteDescription) return;
  try { await pc.addIceCandidate(msg.candidate || null); } catch (err) { console.warn("candidate", err); }
}

function setMuted(kind, muted) {
  if (!media.local) return;
  for (const track of media.local.getTracks()) if (track.kind === kind) track.enabled = !muted;
  const info = media.tracks[kind];
  if (info) request({ type: "mute", track: info.sid, muted });
}

window.mediaHandle = (msg) => {
  switch (msg.type) {
    case "joined":
      if (!media.joinedSid || media.joinedSid !== msg.participant.sid) { media.joinedSid = msg.participant.sid; startMedia(msg); }
      break;
    case "answer":
      if (msg.target === "publisher" && media.publisher) {
        media.publisher.setRemoteDescription({ type: "answer", sdp: msg.sdp });
        for (const t of msg.tracks || []) media.tracks[t.kind] = t;
      }
      break;
    case "offer": if (msg.target === "subscriber") answerSubscriber(msg); break;
    case "candidate": addCandidate(msg); break;
    case "participant.left": dropTile(msg.participant); break;
    case "participant.joined": if (media.tiles.has(msg.participant.sid)) tile(msg.participant.sid, msg.participant.name); break;
    case "speakers": {
      const speaking = new Set((msg.speakers || []).map((s) => s.participant));
      for (const [sid, t] of media.tiles) t.el.classList.toggle("speaking", speaking.has(sid) || (sid === "local" && me && speaking.has(me.sid)));
      break;
    }
    case "room.closed": stopMedia(); break;
  }
};

// What arrived, for people and for tests: frames decoded and audio bytes over inbound streams.
media.stats = async () => {
  const totals = { framesDecoded: 0, audioBytesReceived: 0, videoBytesReceived: 0, packetsLost: 0, candidateTypes: [] };
  if (!media.subscriber) return totals;
  // The local candidate types of the pairs in use, on both connections ("relay" through TURN).
  for (const pc of [media.publisher, media.subscriber]) {
    if (!pc) continue;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type !== "candidate-pair" || !s.nominated || s.state !== "succeeded") return;
      const local = report.get(s.localCandidateId);
      if (local && !totals.candidateTypes.includes(local.candidateType)) totals.candidateTypes.push(local.candidateType);
    });
  }
  (await media.subscriber.getStats()).forEach((s) => {
    if (s.type !== "inbound-rtp") return;
    if (s.kind === "video") { totals.framesDecoded += s.framesDecoded || 0; totals.videoBytesReceived += s.bytesReceived || 0; }
    if (s.kind === "audio") totals.audioBytesReceived += s.bytesReceived || 0;
    totals.packetsLost += s.packetsLost || 0;
  });
  return totals;
};

// ICE restart of the sending side (network change): new credentials both ways, same tracks.
media.restartIce = async () => {
  if (!media.publisher) return;
  media.publisher.restartIce();
  await media.publisher.setLocalDescription(await media.publisher.createOffer({ iceRestart: true }));
  media.publishRequest = request({ type: "offer", target: "publisher", sdp: media.publisher.localDescription.sdp });
};

let micMuted = false, camMuted = false;
$("micButton").onclick = () => { micMuted = !micMuted; setMuted("audio", micMuted); $("micButton").textContent = micMuted ? "Unmute mic" : "Mute mic"; };
$("camButton").onclick = () => { camMuted = !camMuted; setMuted("video", camMuted); $("camButton").textContent = camMuted ? "Start camera" : "Stop camera"; };
