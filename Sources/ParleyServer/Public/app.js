// Parley's built-in client: joins a room over /v1/rtc and shows chat, typing and presence;
// media.js adds the call (camera, microphone, remote tiles).
"use strict";
const $ = (id) => document.getElementById(id);
let ws, me, oldestSeq = null, newestSeq = 0, nextId = 1, typingTimer = null;
// Set by the server's `reconnect` (its node drains): the node the call moves to.
// A retry alternates between that node and the page's own server, in case either is gone.
let movedTo = null, dropped = false, retries = 0;
const people = new Map();
const typingPeople = new Map();

function send(msg) { if (ws && ws.readyState === 1) ws.send(JSON.stringify(msg)); }
function request(msg) { msg.id = String(nextId++); send(msg); return msg.id; }

async function tokenFor(room, name) {
  const given = new URLSearchParams(location.search).get("token");
  if (given) return given;
  const identity = name.toLowerCase().replace(/[^a-z0-9_-]+/g, "-") + "-" + Math.random().toString(36).slice(2, 6);
  const res = await fetch(`/v1/dev/token?room=${encodeURIComponent(room)}&identity=${encodeURIComponent(identity)}&name=${encodeURIComponent(name)}`);
  if (!res.ok) throw new Error("no token: pass ?token= (dev tokens need parley serve --dev)");
  return (await res.json()).token;
}

function connect(token, resume) {
  const base = movedTo && retries % 2 === 0 ? movedTo.replace(/^http/, "ws") : `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;
  const url = `${base}/v1/rtc?token=${encodeURIComponent(token)}` + (resume ? `&resume=${resume}` : "");
  ws = new WebSocket(url);
  if (!dropped) $("status").textContent = "connecting…";
  ws.onmessage = (e) => handle(JSON.parse(e.data));
  ws.onclose = async () => {
    if (me) {
      dropped = true;
      if (!movedTo) $("status").textContent = "disconnected; reconnecting…";
      // A move is followed at once; a drop is retried every second until the server answers
      // (a lost node's rooms come back on another node within seconds).
      const delay = movedTo && retries === 0 ? 0 : 1000;
      setTimeout(() => { connect(token, me.sid); retries++; }, delay);
      return;
    }
    // A refused upgrade hides its status from the page; a plain GET returns the reason.
    const res = await fetch(`/v1/rtc?token=${encodeURIComponent(token)}`).catch(() => null);
    const body = res ? await res.json().catch(() => null) : null;
    $("status").textContent = body && body.error && res.status !== 400 ? `refused: ${body.error.message}` : "could not connect";
  };
}

function handle(msg) {
  if (window.mediaHandle) window.mediaHandle(msg);
  switch (msg.type) {
    case "joined": {
      const resumed = me && msg.participant.sid === me.sid;
      me = msg.participant;
      $("status").textContent = !dropped ? `in ${msg.room.name} as ${me.name}`
        : resumed ? `reconnected to ${msg.room.name}`
        : `reconnected to ${msg.room.name} on node ${msg.server.node} (a new session: your camera and microphone were published again)`;
      dropped = false; retries = 0;
      $("join").hidden = true; $("roomView").hidden = false;
      people.clear(); people.set(me.sid, me);
      for (const p of msg.participants) people.set(p.sid, p);
      renderPeople();
      if (resumed && newestSeq) request({ type: "chat.history", after: newestSeq, limit: 200 });
      else { $("messages").innerHTML = ""; for (const m of msg.chat.messages) addMessage(m, false); $("older").hidden = !msg.chat.hasMore; }
      break;
    }
    case "participant.joined": people.set(msg.participant.sid, msg.participant); renderPeople(); break;
    case "participant.left":
      people.delete(msg.participant); renderPeople();
      if (me && msg.participant === me.sid) { me = null; $("status").textContent = `left: ${msg.reason}`; }
      break;
    case "presence": {
      const p = people.get(msg.participant);
      if (p) { p.presence = { status: msg.status, text: msg.text, since: msg.since }; renderPeople(); }
      break;
    }
    case "typing":
      if (msg.active) typingPeople.set(msg.participant, Date.now()); else typingPeople.delete(msg.participant);
      renderTyping(); break;
    case "chat": typingPeople.delete(msg.message.from.sid); renderTyping(); addMessage(msg.message, false); break;
    case "chat.ack": addMessage(msg.message, false); break;
    case "chat.history": {
      const older = oldestSeq !== null && msg.messages.length && msg.messages[msg.messages.length - 1].seq < oldestSeq;
      if (older) { for (const m of msg.messages.slice().reverse()) addMessage(m, true); $("older").hidden = !msg.hasMore; }
      else for (const m of msg.messages) addMessage(m, false);
      break;
    }
    case "reconnect":
      movedTo = msg.url || null; retries = 0;
      $("status").textContent = "this server is draining; moving the call to another node…";
      break;
    case "room.closed": me = null; $("status").textContent = `room closed: ${msg.reason}`; break;
    case "error":
      // Replies to the media code's optional requests (media.js) are its own business.
      if (!msg.quiet) $("status").textContent = `error ${msg.code}: ${msg.message}`;
      break;
  }
}

function renderPeople() {
  const list = $("participants"); list.innerHTML = "";
  for (const p of people.values()) {
    const li = document.createElement("li");
    const dot = document.createElement("span");
    dot.className = "dot " + (p.presence ? p.presence.status : "online");
    li.append(dot, document.createTextNode(p.name + (p.sid === (me && me.sid) ? " (you)" : "") + (p.presence && p.presence.text ? ` — ${p.presence.text}` : "")));
    list.append(li);
  }
}

function renderTyping() {
  const names = [...typingPeople.keys()].map((sid) => (people.get(sid) || {}).name).filter(Boolean);
  $("typing").textContent = names.length ? `${names.join(", ")} typing…` : "";
}

const seen = new Set();
function addMessage(m, prepend) {
  if (seen.has(m.id)) return; seen.add(m.id);
  oldestSeq = oldestSeq === null ? m.seq : Math.min(oldestSeq, m.seq);
  newestSeq = Math.max(newestSeq, m.seq);
  const li = document.createElement("li");
  if (m.to) li.className = "dm"; if (m.system) li.className = "system";
  const from = document.createElement("span"); from.className = "from"; from.textContent = m.from.name + (m.to ? ` → ${m.to.join(", ")}` : "");
  li.append(from, document.createTextNode(m.text));
  li.title = new Date(m.ts).toLocaleString();
  const list = $("messages");
  if (prepend) list.prepend(li); else { list.append(li); list.scrollTop = list.scrollHeight; }
}

$("join").onsubmit = async (e) => {
  e.preventDefault();
  try { connect(await tokenFor($("room").value, $("name").value)); }
  catch (err) { $("status").textContent = err.message; }
};
$("send").onsubmit = (e) => {
  e.preventDefault();
  const text = $("text").value; if (!text) return;
  request({ type: "chat.send", clientMsgId: crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random(), text });
  $("text").value = ""; send({ type: "typing", active: false });
};
$("text").oninput = () => {
  if (!typingTimer) send({ type: "typing", active: true });
  clearTimeout(typingTimer);
  typingTimer = setTimeout(() => { typingTimer = null; send({ type: "typing", active: false }); }, 3000);
};
$("presence").onchange = () => request({ type: "presence.set", status: $("presence").value, text: "" });
$("older").onclick = () => request({ type: "chat.history", before: oldestSeq, limit: 50 });
