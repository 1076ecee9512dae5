// The call: a publisher PeerConnection (we offer, sendonly) and a subscriber one (the server
// offers), as PROTOCOL.md describes. Remote tiles are keyed by the participant sid that the
// server puts in each m-line's msid.
//
// Adaptive video: the camera goes out as three simulcast layers (rids q, h, f); the server may
// turn layers off (`publisher.layers`) and pause a track it cannot fit (`track.paused`); each
// tile asks for the size it is shown at (`subscribe` with maxWidth/maxHeight).
// URL parameters: ?relay=1 (TURN only), ?publish=0 (receive only), ?simulcast=0 (one layer).
"use strict";
const media = {
  publisher: null, subscriber: null, local: null, tracks: {}, tiles: new Map(), pendingOffer: null,
  cameraSender: null, activeLayers: null, paused: new Map(), quietReplies: new Set(),
};
window.parley = media;
const params = new URLSearchParams(location.search);

// The camera's layers, lowest first (the order Chromium sends them and the server reads them).
const SIMULCAST = [
  { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150000 },
  { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500000 },
  { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 1700000 },
];

function rtcConfig(iceServers) {
  // ?relay=1: media only through TURN; ?relay=udp|tcp|tls: only through that TURN transport.
  const relay = params.get("relay");
  let servers = iceServers || [];
  if (relay === "udp" || relay === "tcp" || relay === "tls") {
    const keep = (url) => relay === "tls" ? url.startsWith("turns:") : url.startsWith("turn:") && url.endsWith(`transport=${relay}`);
    servers = servers.map((s) => ({ ...s, urls: s.urls.filter(keep) })).filter((s) => s.urls.length);
  }
  return { iceServers: servers, iceTransportPolicy: relay ? "relay" : "all", bundlePolicy: "max-bundle" };
}

function tile(sid, name) {
  let t = media.tiles.get(sid);
  if (!t) {
    const el = document.createElement("div"); el.className = "tile"; el.dataset.sid = sid;
    const video = document.createElement("video"); video.autoplay = true; video.playsInline = true;
    if (sid === "local") video.muted = true;
    const label = document.createElement("span"); label.className = "label";
    const badge = document.createElement("span"); badge.className = "badge"; badge.textContent = "paused (bandwidth)"; badge.hidden = true;
    el.append(video, label, badge); (sid === "local" ? $("self") : $("tiles")).append(el);
    t = { sid, el, video, label, badge, stream: new MediaStream(), trackSid: null, sent: null, resizeTimer: null, observer: null };
    video.srcObject = t.stream;
    media.tiles.set(sid, t);
    renderPaused(sid);
  }
  t.label.textContent = name || (people.get(sid) || {}).name || sid;
  return t;
}

function dropTile(sid) {
  const t = media.tiles.get(sid);
  if (!t) return;
  if (t.observer) t.observer.disconnect();
  clearTimeout(t.resizeTimer);
  t.el.remove(); media.tiles.delete(sid);
}

// A request whose `error` reply is expected from servers that do not know it yet: it is logged,
// not shown as the page's status.
function quietRequest(msg) {
  const id = request(msg);
  media.quietReplies.add(id);
  if (media.quietReplies.size > 200) media.quietReplies.delete(media.quietReplies.values().next().value);
  return id;
}

// Asks for the video size `t` is shown at, in device pixels; again when it changed by a fifth.
function requestSize(t, force) {
  if (!t.trackSid || !media.subscriber) return;
  const rect = t.video.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
  const w = Math.round(rect.width * dpr), h = Math.round(rect.height * dpr);
  if (!w || !h) return;
  const last = t.sent;
  const similar = last && last.track === t.trackSid && Math.abs(w - last.w) < last.w * 0.2 && Math.abs(h - last.h) < last.h * 0.2;
  if (similar && !force) return;
  t.sent = { track: t.trackSid, w, h };
  quietRequest({ type: "subscribe", tracks: [t.trackSid], subscribe: true, maxWidth: w, maxHeight: h });
}

function watchSize(t, trackSid) {
  t.trackSid = trackSid;
  if (!t.observer && window.ResizeObserver) {
    t.observer = new ResizeObserver(() => { clearTimeout(t.resizeTimer); t.resizeTimer = setTimeout(() => requestSize(t, false), 400); });
    t.observer.observe(t.video);
  }
  requestAnimationFrame(() => requestSize(t, true));
}

// `publisher.layers`: the server's choice of the camera's simulcast layers that anyone needs.
function setLayers(trackSid, active) {
  const sender = media.cameraSender, info = media.tracks.video;
  if (!sender || !Array.isArray(active) || (info && trackSid && info.sid !== trackSid)) return;
  media.layerChange = (media.layerChange || Promise.resolve()).then(async () => {
    const p = sender.getParameters();
    let changed = false;
    for (const enc of p.encodings || []) {
      if (!enc.rid) continue;
      const on = active.includes(enc.rid);
      if (enc.active !== on) { enc.active = on; changed = true; }
    }
    if (changed) await sender.setParameters(p);
    media.activeLayers = active.slice();
  }).catch((err) => console.warn("publisher.layers", err));
}

function renderPaused(sid) {
  const t = media.tiles.get(sid);
  if (t) t.badge.hidden = ![...media.paused.values()].includes(sid);
}

async function publishOneLayer() {
  const old = media.publisher.getTransceivers().find((t) => t.sender === media.cameraSender);
  if (!old) return;
  const track = old.sender.track;
  old.stop();
  const transceiver = media.publisher.addTransceiver(track, { direction: "sendonly", streams: [media.local] });
  preferVP8(transceiver);
  media.cameraSender = transceiver.sender;
  await media.publisher.setLocalDescription(await media.publisher.createOffer());
  media.publishRequest = request({ type: "offer", target: "publisher", sdp: media.publisher.localDescription.sdp });
}

function preferVP8(transceiver) {
  const caps = window.RTCRtpSender && RTCRtpSender.getCapabilities && RTCRtpSender.getCapabilities("video");
  if (!caps || !transceiver.setCodecPreferences) return;
  const isVP8 = (c) => c.mimeType.toLowerCase() === "video/vp8";
  if (!caps.codecs.some(isVP8)) return;
  try { transceiver.setCodecPreferences([...caps.codecs.filter(isVP8), ...caps.codecs.filter((c) => !isVP8(c))]); }
  catch (err) { console.warn("codec preferences", err); }
}

async function startMedia(joined) {
  stopMedia();
  // Capture first: a page with a granted capture gets host candidates instead of mDNS names.
  if (params.get("publish") === "0") $("mediaStatus").textContent = "receiving only";
  else try {
    media.local = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      video: { width: { ideal: 960 }, height: { ideal: 540 }, frameRate: { ideal: 30 } } });
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
    // The track's id is the track sid from the m-line's msid.
    if (e.track.kind === "video" && /^TR_/.test(e.track.id)) watchSize(t, e.track.id);
  };
  if (media.pendingOffer) { const offer = media.pendingOffer; media.pendingOffer = null; answerSubscriber(offer); }
  if (!media.local) return;
  const preview = tile("local", "you");
  media.local.getTracks().forEach((track) => preview.stream.addTrack(track));
  media.publisher = new RTCPeerConnection(config);
  media.publisher.onicecandidate = (e) => send({ type: "candidate", target: "publisher", candidate: e.candidate ? e.candidate.toJSON() : null });
  media.publisher.onconnectionstatechange = () => { $("mediaStatus").textContent = `sending: ${media.publisher.connectionState}`; };
  for (const track of media.local.getTracks()) {
    const init = { direction: "sendonly", streams: [media.local] };
    const simulcast = track.kind === "video" && params.get("simulcast") !== "0";
    if (simulcast) init.sendEncodings = SIMULCAST.map((e) => ({ ...e }));
    const transceiver = media.publisher.addTransceiver(track, init);
    if (track.kind === "video") { preferVP8(transceiver); media.cameraSender = transceiver.sender; }
  }
  await media.publisher.setLocalDescription(await media.publisher.createOffer());
  media.publishRequest = request({ type: "offer", target: "publisher", sdp: media.publisher.localDescription.sdp });
}

function stopMedia() {
  for (const pc of [media.publisher, media.subscriber]) if (pc) pc.close();
  if (media.local) media.local.getTracks().forEach((t) => t.stop());
  media.publisher = media.subscriber = media.local = media.cameraSender = null;
  media.tracks = {}; media.paused.clear(); media.activeLayers = null;
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
        const applied = media.publisher.setRemoteDescription({ type: "answer", sdp: msg.sdp });
        // A server that does not take simulcast answers without a=simulcast: the browser then
        // sends the lowest layer only and fails every later offer of this sender (the RID
        // extension is not negotiated), so the camera moves to a one-layer sender.
        const sender = media.cameraSender;
        if (sender && !/^a=simulcast:/m.test(msg.sdp)) {
          applied.then(() => { if (sender.getParameters().encodings.some((e) => e.rid)) return publishOneLayer(); })
            .catch((err) => console.warn("one-layer camera", err));
        }
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
    case "publisher.layers": setLayers(msg.track, msg.active); break;
    case "track.paused": media.paused.set(msg.track, msg.participant); renderPaused(msg.participant); break;
    case "track.resumed": media.paused.delete(msg.track); renderPaused(msg.participant); break;
    case "track.unpublished": if (media.paused.delete(msg.track)) renderPaused(msg.participant); break;
    case "error": if (media.quietReplies.delete(msg.re)) { msg.quiet = true; console.warn("server refused", msg.code, msg.message); } break;
    case "room.closed": stopMedia(); break;
  }
};

// What arrived, for people and for tests: frames decoded and audio bytes over inbound streams;
// `video` and `audio` list each received track (its size, frame rate, freezes, concealment) and
// `sent` each layer this page sends.
media.stats = async () => {
  const totals = { framesDecoded: 0, audioBytesReceived: 0, videoBytesReceived: 0, packetsLost: 0, candidateTypes: [], video: [], audio: [], sent: [] };
  if (media.publisher) {
    (await media.publisher.getStats()).forEach((s) => {
      if (s.type !== "outbound-rtp") return;
      totals.sent.push({ kind: s.kind, rid: s.rid || null, active: s.active !== false, frameWidth: s.frameWidth || 0, frameHeight: s.frameHeight || 0,
        framesPerSecond: s.framesPerSecond || 0, bytesSent: s.bytesSent || 0, targetBitrate: s.targetBitrate || 0,
        qualityLimitationReason: s.qualityLimitationReason || null });
    });
  }
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
  const owner = (trackId) => { for (const [sid, t] of media.tiles) if (t.stream.getTrackById(trackId)) return sid; return null; };
  (await media.subscriber.getStats()).forEach((s) => {
    if (s.type !== "inbound-rtp") return;
    const common = { track: s.trackIdentifier, participant: owner(s.trackIdentifier), mid: s.mid, bytesReceived: s.bytesReceived || 0,
      packetsReceived: s.packetsReceived || 0, packetsLost: s.packetsLost || 0 };
    if (s.kind === "video") {
      totals.framesDecoded += s.framesDecoded || 0; totals.videoBytesReceived += s.bytesReceived || 0;
      totals.video.push({ ...common, frameWidth: s.frameWidth || 0, frameHeight: s.frameHeight || 0, framesPerSecond: s.framesPerSecond || 0,
        framesDecoded: s.framesDecoded || 0, framesDropped: s.framesDropped || 0, freezeCount: s.freezeCount || 0,
        totalFreezesDuration: s.totalFreezesDuration || 0, nackCount: s.nackCount || 0, pliCount: s.pliCount || 0,
        paused: media.paused.has(s.trackIdentifier) });
    }
    if (s.kind === "audio") {
      totals.audioBytesReceived += s.bytesReceived || 0;
      totals.audio.push({ ...common, concealedSamples: s.concealedSamples || 0, totalSamplesReceived: s.totalSamplesReceived || 0,
        silentConcealedSamples: s.silentConcealedSamples || 0 });
    }
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
