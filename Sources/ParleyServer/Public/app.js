// Parley's web client, on the browser SDK (/sdk/parley.js): a pre-join screen, a grid or speaker
// view, screen sharing, people and chat. URL parameters: ?room=R&name=N (&autojoin=1 skips the
// pre-join screen), ?token= (else a dev token), ?relay=1|udp|tcp|tls (media only through TURN,
// or only that TURN transport), ?publish=0 (watch and listen only), ?simulcast=0 (one layer),
// ?camera=180p|360p|540p|720p (the capture size).
import { Room, listDevices, watchAudioLevel } from "/sdk/parley.js";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const publishing = params.get("publish") !== "0";
// The capture: 540p by default (what the adaptive-video figures were measured with), or
// ?camera=180p|360p|720p (a slow machine or link, a kiosk).
const CAMERA_SIZES = { "180p": [320, 180], "360p": [640, 360], "540p": [960, 540], "720p": [1280, 720] };
const [cameraWidth, cameraHeight] = CAMERA_SIZES[params.get("camera")] || CAMERA_SIZES["540p"];
const CAMERA = { width: { ideal: cameraWidth }, height: { ideal: cameraHeight }, frameRate: { ideal: 30 } };
const MICROPHONE = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };

let room = null;
let preview = null;        // the pre-join stream, published as it is on joining
let stopMeter = null;
let layout = "grid";
let panelTab = null;       // "people", "chat" or null (closed)
let unread = 0;
let oldestSeq = null, newestSeq = 0;
const seenMessages = new Set();
const typingPeople = new Map();
const tiles = new Map();   // key: participant sid, "local", or "<sid>:screen"
const quality = new Map(); // participant sid → 1…3

// MARK: Pre-join

function setNote(text) { $("previewNote").textContent = text; }

function mediaError(error) {
  switch (error.code) {
    case "permission_denied": return "Camera and microphone are blocked for this site. Allow them in the browser's site settings, or join to watch and listen.";
    case "no_device": return "No camera or microphone found. You can still join to watch and listen.";
    case "device_busy": return "The camera or microphone is in use by another application.";
    case "insecure_context": return "Camera and microphone need a secure page (https, or localhost). You can still join to watch and listen.";
    default: return `No camera or microphone: ${error.message}`;
  }
}

async function startPreview() {
  stopPreview();
  // Another device was chosen: release the one shown until now (its light goes off).
  if (preview) { for (const track of preview.getTracks()) track.stop(); preview = null; }
  if (!publishing) { setNote("Joining to watch and listen only."); return; }
  if (!navigator.mediaDevices) { setNote(mediaError({ code: "insecure_context" })); return; }
  const cameraId = $("cameraSelect").value, micId = $("micSelect").value;
  try {
    preview = await navigator.mediaDevices.getUserMedia({
      audio: { ...MICROPHONE, ...(micId ? { deviceId: { exact: micId } } : {}) },
      video: { ...CAMERA, ...(cameraId ? { deviceId: { exact: cameraId } } : {}) },
    });
  } catch (error) {
    const code = !navigator.mediaDevices ? "insecure_context"
      : { NotAllowedError: "permission_denied", NotFoundError: "no_device", OverconstrainedError: "no_device", NotReadableError: "device_busy" }[error.name];
    setNote(mediaError({ code, message: `${error.name}: ${error.message}` }));
    preview = null;
    await fillDevices().catch(() => {});
    return;
  }
  $("previewVideo").srcObject = preview;
  setNote("");
  stopMeter = preview.getAudioTracks().length ? watchAudioLevel(preview, (level) => { $("meterLevel").style.width = `${Math.round(level * 100)}%`; }) : null;
  await fillDevices();
}

function stopPreview() {
  if (stopMeter) { stopMeter(); stopMeter = null; }
  $("meterLevel").style.width = "0";
}

async function fillDevices() {
  const { cameras, microphones } = await listDevices();
  for (const [select, devices, kind] of [[$("cameraSelect"), cameras, "video"], [$("micSelect"), microphones, "audio"]]) {
    const current = preview && preview.getTracks().find((t) => t.kind === kind);
    const chosen = current && current.getSettings().deviceId;
    select.replaceChildren(...devices.map((d, i) => new Option(d.label || `${kind === "video" ? "Camera" : "Microphone"} ${i + 1}`, d.deviceId, false, d.deviceId === chosen)));
    select.disabled = devices.length === 0;
  }
}

async function tokenFor(roomName, name) {
  if (params.get("token")) return params.get("token");
  const identity = name.toLowerCase().replace(/[^a-z0-9_-]+/g, "-") + "-" + Math.random().toString(36).slice(2, 6);
  const res = await fetch(`/v1/dev/token?room=${encodeURIComponent(roomName)}&identity=${encodeURIComponent(identity)}&name=${encodeURIComponent(name)}`);
  if (!res.ok) throw Object.assign(new Error("No token: open this page with ?token= (dev tokens need parley serve --dev)."), { code: "unauthorized" });
  return (await res.json()).token;
}

function connectOptions() {
  const relay = params.get("relay");
  const options = { simulcast: params.get("simulcast") !== "0" };
  if (relay) options.iceTransportPolicy = "relay";
  if (relay === "udp" || relay === "tcp" || relay === "tls") {
    const keep = (url) => relay === "tls" ? url.startsWith("turns:") : url.startsWith("turn:") && url.endsWith(`transport=${relay}`);
    options.iceServerFilter = (servers) => servers.map((s) => ({ ...s, urls: [].concat(s.urls).filter(keep) })).filter((s) => s.urls.length);
  }
  return options;
}

async function join(event) {
  if (event) event.preventDefault();
  const roomName = $("room").value.trim(), name = $("name").value.trim();
  if (!roomName || !name) return;
  $("joinError").textContent = "";
  $("status").textContent = "connecting…";
  localStorage.setItem("parley.name", name);
  try {
    room = await Room.connect(location.origin, await tokenFor(roomName, name), connectOptions());
  } catch (error) {
    const text = error.code === "unauthorized" ? `The server refused the token: ${error.message}`
      : error.code === "room_full" ? "This room is full. Try again later."
      : error.code === "forbidden" ? `Not allowed: ${error.message}` : `Could not connect: ${error.message}`;
    $("joinError").textContent = text;
    $("status").textContent = `refused: ${error.message}`;
    room = null;
    return;
  }
  history.replaceState(null, "", `?${new URLSearchParams({ ...Object.fromEntries(params), room: roomName }).toString()}`);
  enterCall();
  if (preview && publishing) {
    stopPreview();
    const audio = preview.getAudioTracks()[0], video = preview.getVideoTracks()[0];
    try {
      if (audio) { const mic = await room.publishTrack(audio, "microphone"); if ($("joinMuted").checked) await room.setMuted(mic, true); }
      if (video) { const cam = await room.publishTrack(video, "camera"); if ($("joinCameraOff").checked) await room.setMuted(cam, true); }
    } catch (error) {
      $("mediaStatus").textContent = `could not publish: ${error.message}`;
    }
    preview = null;
  } else if (publishing) {
    $("mediaStatus").textContent = "no camera or microphone: watching and listening";
  } else {
    $("mediaStatus").textContent = "receiving only";
  }
  renderControls();
  renderLocalTile();
}

// MARK: The call

function enterCall() {
  $("prejoin").hidden = true;
  $("call").hidden = false;
  $("roomTitle").textContent = room.name;
  $("status").textContent = `in ${room.name} as ${room.localParticipant.name}`;
  exposeForTests();
  for (const p of room.participants.values()) tileFor(p.sid, p.name);
  renderPeople();
  resetChat(room.chatOnJoin);
  renderRecipients();

  room.on("participantJoined", (p) => { tileFor(p.sid, p.name); renderPeople(); renderRecipients(); layoutTiles(); });
  room.on("participantLeft", ({ sid }) => { dropTile(sid); dropTile(`${sid}:screen`); typingPeople.delete(sid); renderTyping(); renderPeople(); renderRecipients(); layoutTiles(); });
  room.on("trackSubscribed", onTrackSubscribed);
  room.on("trackUnsubscribed", onTrackUnsubscribed);
  room.on("trackMuted", ({ participant, track, muted }) => {
    if (!participant) return;
    const key = track.source === "screen_share" ? `${participant.sid}:screen` : participant.sid;
    const t = tiles.get(key);
    if (!t) return;
    if (track.kind === "audio") t.micOff.hidden = !muted;
    else t.el.classList.toggle("has-video", !muted && t.stream.getVideoTracks().length > 0);
  });
  room.on("trackPaused", ({ participant }) => participant && setPaused(participant.sid, true));
  room.on("trackResumed", ({ participant }) => participant && setPaused(participant.sid, false));
  room.on("activeSpeakers", (speakers) => {
    const speaking = new Set(speakers.map((s) => s.sid));
    for (const [key, t] of tiles) t.el.classList.toggle("speaking", speaking.has(key === "local" ? room.localParticipant.sid : key));
    if (layout === "speaker") layoutTiles();
  });
  room.on("presence", renderPeople);
  room.on("typing", ({ sid, active }) => { if (active) typingPeople.set(sid, Date.now()); else typingPeople.delete(sid); renderTyping(); });
  room.on("chat", (message) => { typingPeople.delete(message.from.sid); renderTyping(); addMessage(message, false); countUnread(); });
  room.on("reconnecting", () => { showBanner("Connection lost. Reconnecting…"); $("status").textContent = "disconnected; reconnecting…"; });
  room.on("moving", () => showBanner("This server is draining; moving the call to another node…"));
  room.on("reconnected", async ({ resumed }) => {
    hideBanner();
    $("status").textContent = resumed ? `reconnected to ${room.name}`
      : `reconnected to ${room.name} on node ${room.node} (a new session: your camera and microphone were published again)`;
    if (resumed && newestSeq) {
      const page = await room.chatHistory({ after: newestSeq, limit: 200 }).catch(() => null);
      if (page) for (const m of page.messages) addMessage(m, false);
    } else {
      resetChat(room.chatOnJoin);
      for (const p of room.participants.values()) tileFor(p.sid, p.name);
    }
    renderPeople();
    renderRecipients();
    renderLocalTile();
  });
  room.on("roomClosed", ({ reason }) => leaveCall(`room closed: ${reason}`));
  room.on("left", ({ reason }) => leaveCall(`left: ${reason}`));
  room.on("localTrackPublished", () => { renderControls(); renderLocalTile(); });
  room.on("localTrackMuted", ({ byServer, muted, track }) => {
    renderControls();
    renderLocalTile();
    if (byServer) $("mediaStatus").textContent = `${track.kind === "audio" ? "Your microphone" : "Your camera"} was ${muted ? "muted" : "unmuted"} by the host`;
  });
  // The SDK gave up (the token expired, the room is now full): say why instead of a dead call.
  room.on("disconnected", ({ reason, error }) => { if (reason && room) leaveCall(`disconnected: ${error ? error.message : reason}`); });
  room.on("localTrackUnpublished", () => { renderControls(); renderLocalTile(); });
  room.on("error", (error) => console.warn("parley", error.code, error.message));
  layoutTiles();
  qualityTimer = setInterval(updateQuality, 2000);
}

let qualityTimer = null;

function leaveCall(text) {
  clearInterval(qualityTimer);
  for (const key of [...tiles.keys()]) dropTile(key);
  if (room) { const leaving = room; room = null; leaving.disconnect(); }
  hideBanner();
  $("call").hidden = true;
  $("prejoin").hidden = false;
  $("status").textContent = text;
  $("roomTitle").textContent = "";
  startPreview();
}

function showBanner(text) { $("banner").textContent = text; $("banner").hidden = false; }
function hideBanner() { $("banner").hidden = true; }

// MARK: Tiles

function initials(name) { return (name || "?").split(/\s+/).map((w) => w[0]).join("").slice(0, 2).toUpperCase(); }

function tileFor(key, name) {
  let t = tiles.get(key);
  if (!t) {
    const el = document.createElement("div");
    el.className = "tile" + (key.endsWith(":screen") ? " screen" : "");
    el.dataset.sid = key;
    const video = document.createElement("video");
    video.autoplay = true; video.playsInline = true;
    if (key.startsWith("local")) video.muted = true;
    const avatar = document.createElement("div"); avatar.className = "avatar"; avatar.setAttribute("aria-hidden", "true");
    const label = document.createElement("div"); label.className = "label";
    const micOff = document.createElement("span"); micOff.className = "mic-off"; micOff.textContent = "muted"; micOff.hidden = true;
    const nameEl = document.createElement("span"); nameEl.className = "name";
    label.append(nameEl, micOff);
    const mark = document.createElement("div"); mark.className = "quality"; mark.dataset.level = "3";
    mark.append(document.createElement("i"), document.createElement("i"), document.createElement("i"));
    const paused = document.createElement("span"); paused.className = "paused"; paused.textContent = "paused: low bandwidth"; paused.hidden = true;
    el.append(video, avatar, label, mark, paused);
    const stream = new MediaStream();
    video.srcObject = stream;
    t = { key, el, video, stream, avatar, nameEl, micOff, mark, paused, videoTrackSid: null, sent: null, observer: null, timer: null };
    tiles.set(key, t);
    $("tiles").append(el);
    layoutTiles();
  }
  if (name) {
    const shown = key.endsWith(":screen") ? `${name} (screen)` : name;
    t.nameEl.textContent = shown;
    t.avatar.textContent = initials(name);
    t.mark.setAttribute("aria-label", `connection quality of ${shown}`);
    t.video.setAttribute("aria-label", `video of ${shown}`);
  }
  return t;
}

function dropTile(key) {
  const t = tiles.get(key);
  if (!t) return;
  if (t.observer) t.observer.disconnect();
  clearTimeout(t.timer);
  t.el.remove();
  tiles.delete(key);
  layoutTiles();
}

function onTrackSubscribed({ participant, mediaStreamTrack, track }) {
  const sid = participant ? participant.sid : "unknown";
  const screen = track.source === "screen_share" || track.source === "screen_share_audio";
  const t = tileFor(screen ? `${sid}:screen` : sid, participant && participant.name);
  t.stream.addTrack(mediaStreamTrack);
  if (mediaStreamTrack.kind === "video") {
    t.el.classList.toggle("has-video", !track.muted);
    watchSize(t, track.sid);
  } else {
    t.micOff.hidden = !track.muted;
  }
  layoutTiles();
}

function onTrackUnsubscribed({ participant, mediaStreamTrack, track }) {
  const sid = participant ? participant.sid : "unknown";
  const screen = track.source === "screen_share" || track.source === "screen_share_audio";
  const t = tiles.get(screen ? `${sid}:screen` : sid);
  if (!t) return;
  t.stream.removeTrack(mediaStreamTrack);
  if (mediaStreamTrack.kind === "video") t.el.classList.remove("has-video");
  if (screen && t.stream.getTracks().length === 0) dropTile(t.key);
}

function setPaused(sid, paused) { const t = tiles.get(sid); if (t) t.paused.hidden = !paused; }

// Each tile asks for the video size it is shown at, in device pixels, again when it changed by a fifth.
function watchSize(t, trackSid) {
  t.videoTrackSid = trackSid;
  if (!t.observer && window.ResizeObserver) {
    t.observer = new ResizeObserver(() => { clearTimeout(t.timer); t.timer = setTimeout(() => requestSize(t, false), 400); });
    t.observer.observe(t.video);
  }
  requestAnimationFrame(() => requestSize(t, true));
}

function requestSize(t, force) {
  if (!t.videoTrackSid || !room) return;
  const rect = t.video.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
  const w = Math.round(rect.width * dpr), h = Math.round(rect.height * dpr);
  if (!w || !h) return;
  const last = t.sent;
  const similar = last && last.track === t.videoTrackSid && Math.abs(w - last.w) < last.w * 0.2 && Math.abs(h - last.h) < last.h * 0.2;
  if (similar && !force) return;
  t.sent = { track: t.videoTrackSid, w, h };
  room.subscribe(t.videoTrackSid, { maxWidth: w, maxHeight: h });
}

function renderLocalTile() {
  if (!room) return;
  const tracks = room.localTracks;
  const camera = tracks.find((l) => l.source === "camera"), mic = tracks.find((l) => l.source === "microphone");
  const screen = tracks.find((l) => l.source === "screen_share");
  if (camera || mic) {
    const t = tileFor("local", `${room.localParticipant.name} (you)`);
    for (const old of t.stream.getTracks()) t.stream.removeTrack(old);
    if (camera) t.stream.addTrack(camera.mediaStreamTrack);
    t.el.classList.toggle("has-video", Boolean(camera && !camera.muted));
    t.micOff.hidden = !(mic && mic.muted);
  } else {
    dropTile("local");
  }
  if (screen) {
    const t = tileFor("local:screen", `${room.localParticipant.name} (you)`);
    if (!t.stream.getVideoTracks().length) t.stream.addTrack(screen.mediaStreamTrack);
    t.el.classList.add("has-video");
  } else {
    dropTile("local:screen");
  }
  layoutTiles();
}

// Grid: as square as the count allows. Speaker view (or anyone sharing a screen): the screen, or
// else the active speaker, large; the others in a strip.
function layoutTiles() {
  const stage = $("stage");
  const all = [...tiles.values()];
  const screen = all.find((t) => t.key.endsWith(":screen"));
  const speaker = screen || (layout === "speaker" ? all.find((t) => t.el.classList.contains("speaking") && t.key !== "local") || all.find((t) => t.key !== "local") : null);
  const focused = screen || speaker;
  stage.classList.toggle("speaker", Boolean(focused));
  $("focus").hidden = !focused;
  for (const t of all) {
    const parent = t === focused ? $("focus") : $("tiles");
    if (t.el.parentElement !== parent) parent.append(t.el);
  }
  const count = all.length - (focused ? 1 : 0);
  const narrow = window.innerWidth <= 700;
  const columns = narrow ? (count <= 2 ? 1 : 2) : Math.max(1, Math.ceil(Math.sqrt(count)));
  $("tiles").style.setProperty("--columns", String(columns));
  // The grid fits the stage without scrolling: as wide as its rows of 16:9 tiles allow.
  const rows = Math.max(1, Math.ceil(count / columns)), gap = 8;
  const height = stage.clientHeight - 16;
  const fit = focused ? Infinity : ((height - gap * (rows - 1)) / rows) * (16 / 9) * columns + gap * (columns - 1);
  $("tiles").style.maxWidth = Number.isFinite(fit) && fit > 0 ? `${Math.floor(fit)}px` : "";
  $("layoutButton").textContent = layout === "grid" ? "Speaker view" : "Grid view";
}

async function updateQuality() {
  if (!room) return;
  const stats = await room.getStats().catch(() => null);
  if (!stats) return;
  const bySid = new Map();
  for (const s of stats.inbound) {
    if (!s.participant) continue;
    const entry = bySid.get(s.participant) || { lost: 0, received: 0, freezes: 0 };
    entry.lost += s.packetsLost; entry.received += s.packetsReceived; entry.freezes += s.freezeCount || 0;
    bySid.set(s.participant, entry);
  }
  // A video that decodes frames is not paused, whatever event was missed.
  for (const s of stats.inbound) if (s.kind === "video" && s.participant && s.framesPerSecond > 0) setPaused(s.participant, false);
  for (const [sid, e] of bySid) {
    const previous = quality.get(sid) || { lost: 0, received: 0, freezes: 0 };
    const lost = e.lost - previous.lost, received = e.received - previous.received;
    const loss = received + lost > 0 ? lost / (received + lost) : 0;
    const level = loss > 0.1 || e.freezes > previous.freezes + 1 ? 1 : loss > 0.02 ? 2 : 3;
    quality.set(sid, e);
    const t = tiles.get(sid);
    if (t) t.mark.dataset.level = String(level);
  }
  const local = tiles.get("local");
  if (local) {
    const limited = stats.outbound.some((o) => o.qualityLimitationReason === "bandwidth");
    const rtt = stats.roundTripTime || 0;
    local.mark.dataset.level = String(rtt > 0.4 ? 1 : limited || rtt > 0.2 ? 2 : 3);
  }
}

// MARK: Controls

function localTrack(source) { return room && room.localTracks.find((l) => l.source === source); }

function renderControls() {
  const mic = localTrack("microphone"), cam = localTrack("camera"), screen = localTrack("screen_share");
  $("micButton").disabled = !mic;
  $("camButton").disabled = !cam;
  $("micButton").textContent = mic && mic.muted ? "Unmute" : "Mute";
  $("micButton").setAttribute("aria-pressed", String(Boolean(mic && mic.muted)));
  $("camButton").textContent = cam && cam.muted ? "Start camera" : "Stop camera";
  $("camButton").setAttribute("aria-pressed", String(Boolean(cam && cam.muted)));
  $("screenButton").textContent = screen ? "Stop sharing" : "Share screen";
  $("screenButton").setAttribute("aria-pressed", String(Boolean(screen)));
  $("screenButton").disabled = !publishing || !navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia;
  $("devicesButton").disabled = !mic && !cam;
}

async function toggle(source) {
  const track = localTrack(source);
  if (!track) return;
  await room.setMuted(track, !track.muted).catch((error) => { $("mediaStatus").textContent = error.message; });
  renderControls();
  renderLocalTile();
}

async function toggleScreen() {
  const screen = localTrack("screen_share");
  try {
    if (screen) await room.unpublish(screen);
    else await room.publishScreen();
  } catch (error) {
    $("mediaStatus").textContent = error.name === "NotAllowedError" || error.code === "permission_denied" ? "screen sharing was not allowed" : `screen sharing failed: ${error.message}`;
  }
  renderControls();
  renderLocalTile();
}

// In the call: another camera or microphone, switched without renegotiating.
async function toggleDevices() {
  const form = $("devices"), open = form.hidden;
  form.hidden = !open;
  $("devicesButton").setAttribute("aria-expanded", String(open));
  if (!open) return;
  const { cameras, microphones } = await listDevices();
  for (const [select, devices, source] of [[$("callCamera"), cameras, "camera"], [$("callMic"), microphones, "microphone"]]) {
    const track = localTrack(source);
    const current = track && track.mediaStreamTrack.getSettings().deviceId;
    select.replaceChildren(...devices.map((d, i) => new Option(d.label || `${source} ${i + 1}`, d.deviceId, false, d.deviceId === current)));
    select.disabled = !track || devices.length < 2;
  }
}

async function switchTo(kind, deviceId) {
  try {
    await room.switchDevice(kind, deviceId, kind === "video" ? CAMERA : MICROPHONE);
    renderLocalTile();
  } catch (error) {
    $("mediaStatus").textContent = `could not switch: ${error.message}`;
  }
}

function openPanel(tab) {
  panelTab = panelTab === tab ? null : tab;
  $("panel").hidden = !panelTab;
  $("people").hidden = panelTab !== "people";
  $("chat").hidden = panelTab !== "chat";
  $("peopleTab").setAttribute("aria-selected", String(panelTab === "people"));
  $("chatTab").setAttribute("aria-selected", String(panelTab === "chat"));
  if (panelTab === "chat") { unread = 0; renderUnread(); $("messages").scrollTop = $("messages").scrollHeight; }
  layoutTiles();
}

function countUnread() { if (panelTab !== "chat") { unread += 1; renderUnread(); } }
function renderUnread() { $("unread").hidden = unread === 0; $("unread").textContent = unread ? String(unread) : ""; }

// MARK: People and chat

function renderPeople() {
  if (!room) return;
  const everyone = [room.localParticipant, ...room.participants.values()];
  $("peopleCount").textContent = `(${everyone.length})`;
  $("participants").replaceChildren(...everyone.map((p) => {
    const li = document.createElement("li");
    const dot = document.createElement("span");
    const status = p.presence ? p.presence.status : "online";
    dot.className = `dot ${status}`;
    dot.title = status;
    const text = `${p.name}${p === room.localParticipant ? " (you)" : ""}${p.presence && p.presence.text ? ` — ${p.presence.text}` : ""}`;
    li.append(dot, document.createTextNode(`${text} · ${status}`));
    return li;
  }));
}

function renderRecipients() {
  if (!room) return;
  const select = $("recipient"), chosen = select.value;
  select.replaceChildren(new Option("Everyone", ""), ...[...room.participants.values()].map((p) => new Option(p.name, p.identity, false, p.identity === chosen)));
}

function renderTyping() {
  const names = [...typingPeople.keys()].map((sid) => room && room.participants.get(sid)).filter(Boolean).map((p) => p.name);
  $("typing").textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
}

function resetChat(page) {
  $("messages").replaceChildren();
  seenMessages.clear();
  oldestSeq = null; newestSeq = 0;
  for (const m of (page && page.messages) || []) addMessage(m, false);
  $("older").hidden = !(page && page.hasMore);
}

function addMessage(m, prepend) {
  if (seenMessages.has(m.id)) return;
  seenMessages.add(m.id);
  oldestSeq = oldestSeq === null ? m.seq : Math.min(oldestSeq, m.seq);
  newestSeq = Math.max(newestSeq, m.seq);
  const li = document.createElement("li");
  if (m.to) li.className = "dm";
  if (m.system) li.className = "system";
  const from = document.createElement("span");
  from.className = "from";
  from.textContent = m.from.name + (m.to ? ` → ${m.to.join(", ")}` : "");
  const time = document.createElement("time");
  time.dateTime = new Date(m.ts).toISOString();
  time.title = new Date(m.ts).toLocaleString();
  li.append(from, document.createTextNode(" " + m.text), time);
  const list = $("messages");
  if (prepend) list.prepend(li); else { list.append(li); list.scrollTop = list.scrollHeight; }
}

async function loadOlder() {
  const page = await room.chatHistory({ before: oldestSeq, limit: 50 });
  for (const m of page.messages.slice().reverse()) addMessage(m, true);
  $("older").hidden = !page.hasMore;
}

async function sendChat(event) {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text || !room) return;
  const to = $("recipient").value;
  $("text").value = "";
  try {
    addMessage(await room.sendChat(text, to ? { to: [to] } : {}), false);
  } catch (error) {
    $("text").value = text;
    $("typing").textContent = `not sent: ${error.message}`;
  }
}

// MARK: Tests and diagnostics

// `window.parley`: the peer connections, an ICE restart and what arrived (frames decoded, bytes,
// per received track its size, frame rate, freezes and concealment; per sent layer its state), as
// the interop tests and people debugging read them.
function exposeForTests() {
  window.parley = {
    get room() { return room; },
    get publisher() { return room && room.peerConnections.publisher; },
    get subscriber() { return room && room.peerConnections.subscriber; },
    restartIce: () => room && room.restartIce(),
    stats: rawStats,
  };
}

async function rawStats() {
  const totals = { framesDecoded: 0, audioBytesReceived: 0, videoBytesReceived: 0, packetsLost: 0, candidateTypes: [], video: [], audio: [], sent: [] };
  if (!room) return totals;
  const { publisher, subscriber } = room.peerConnections;
  if (publisher) {
    (await publisher.getStats()).forEach((s) => {
      if (s.type !== "outbound-rtp") return;
      totals.sent.push({ kind: s.kind, rid: s.rid || null, active: s.active !== false, frameWidth: s.frameWidth || 0, frameHeight: s.frameHeight || 0,
        framesPerSecond: s.framesPerSecond || 0, bytesSent: s.bytesSent || 0, targetBitrate: s.targetBitrate || 0,
        qualityLimitationReason: s.qualityLimitationReason || null });
    });
  }
  if (!subscriber) return totals;
  for (const pc of [publisher, subscriber]) {
    if (!pc) continue;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type !== "candidate-pair" || !s.nominated || s.state !== "succeeded") return;
      const local = report.get(s.localCandidateId);
      if (local && !totals.candidateTypes.includes(local.candidateType)) totals.candidateTypes.push(local.candidateType);
    });
  }
  (await subscriber.getStats()).forEach((s) => {
    if (s.type !== "inbound-rtp") return;
    const sub = room.subscriptions.get(s.trackIdentifier);
    const common = { track: s.trackIdentifier, participant: sub && sub.participant ? sub.participant.sid : null, mid: s.mid,
      bytesReceived: s.bytesReceived || 0, packetsReceived: s.packetsReceived || 0, packetsLost: s.packetsLost || 0 };
    if (s.kind === "video") {
      totals.framesDecoded += s.framesDecoded || 0; totals.videoBytesReceived += s.bytesReceived || 0;
      totals.video.push({ ...common, frameWidth: s.frameWidth || 0, frameHeight: s.frameHeight || 0, framesPerSecond: s.framesPerSecond || 0,
        framesDecoded: s.framesDecoded || 0, framesDropped: s.framesDropped || 0, freezeCount: s.freezeCount || 0,
        totalFreezesDuration: s.totalFreezesDuration || 0, nackCount: s.nackCount || 0, pliCount: s.pliCount || 0,
        paused: Boolean(sub && sub.paused) });
    }
    if (s.kind === "audio") {
      totals.audioBytesReceived += s.bytesReceived || 0;
      totals.audio.push({ ...common, concealedSamples: s.concealedSamples || 0, totalSamplesReceived: s.totalSamplesReceived || 0,
        silentConcealedSamples: s.silentConcealedSamples || 0 });
    }
    totals.packetsLost += s.packetsLost || 0;
  });
  return totals;
}

// MARK: Wiring

$("join").onsubmit = join;
$("cameraSelect").onchange = startPreview;
$("micSelect").onchange = startPreview;
$("micButton").onclick = () => toggle("microphone");
$("camButton").onclick = () => toggle("camera");
$("screenButton").onclick = toggleScreen;
$("layoutButton").onclick = () => { layout = layout === "grid" ? "speaker" : "grid"; layoutTiles(); };
$("devicesButton").onclick = toggleDevices;
$("callCamera").onchange = () => switchTo("video", $("callCamera").value);
$("callMic").onchange = () => switchTo("audio", $("callMic").value);
$("peopleButton").onclick = () => openPanel("people");
$("chatButton").onclick = () => openPanel("chat");
$("peopleTab").onclick = () => openPanel("people");
$("chatTab").onclick = () => openPanel("chat");
$("closePanel").onclick = () => openPanel(panelTab);
$("linkButton").onclick = async () => {
  const link = `${location.origin}/?room=${encodeURIComponent(room ? room.name : $("room").value)}`;
  try { await navigator.clipboard.writeText(link); $("mediaStatus").textContent = "link copied"; } catch { $("mediaStatus").textContent = link; }
};
$("leaveButton").onclick = () => leaveCall("left the room");
$("send").onsubmit = sendChat;
$("text").oninput = () => room && room.setTyping(true);
$("older").onclick = loadOlder;
$("presence").onchange = () => room && room.setPresence($("presence").value, "").then(renderPeople);
if (window.ResizeObserver) new ResizeObserver(() => layoutTiles()).observe($("stage"));
else window.addEventListener("resize", () => layoutTiles());
// Shortcuts, outside text fields: M microphone, V camera, S screen, L layout, C chat, P people.
document.addEventListener("keydown", (event) => {
  if (!room || event.ctrlKey || event.metaKey || event.altKey || /^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement.tagName)) return;
  const action = { m: () => toggle("microphone"), v: () => toggle("camera"), s: toggleScreen, l: () => $("layoutButton").click(),
    c: () => openPanel("chat"), p: () => openPanel("people") }[event.key.toLowerCase()];
  if (action) { event.preventDefault(); action(); }
});

if (params.get("room")) $("room").value = params.get("room");
$("name").value = params.get("name") || localStorage.getItem("parley.name") || "";
exposeForTests();
await startPreview();
if (params.get("autojoin") === "1" && $("room").value && $("name").value) join();
