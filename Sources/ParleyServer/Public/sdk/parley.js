// Parley's browser SDK: one ES module, no dependency, no build step. Served at /sdk/parley.js;
// types at /sdk/parley.d.ts; guide in docs/sdk-js.md.
//
//   import { Room } from "/sdk/parley.js";
//   const room = await Room.connect("https://parley.example", token);
//   room.on("trackSubscribed", ({ track, participant }) => attach(track, participant));
//   await room.publishCamera(); await room.publishMicrophone();
//
// The wire contract is docs/protocol.md: one WebSocket for signaling, a publisher
// RTCPeerConnection (we offer) and a subscriber one (the server offers).

const SIMULCAST = [
  { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150000 },
  { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500000 },
  { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 1700000 },
];
const STATES = ["connecting", "connected", "reconnecting", "disconnected"];
// A retry cannot fix these: the token is refused or the room will not take us.
const FINAL_REFUSALS = new Set(["unauthorized", "forbidden", "room_full", "not_found"]);

/** A small event emitter: `on` returns a function that removes the listener. */
class Emitter {
  #listeners = new Map();
  on(event, listener) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(listener);
    return () => this.off(event, listener);
  }
  once(event, listener) {
    const off = this.on(event, (value) => { off(); listener(value); });
    return off;
  }
  off(event, listener) { this.#listeners.get(event)?.delete(listener); }
  emit(event, value) {
    for (const listener of [...(this.#listeners.get(event) || [])]) {
      try { listener(value); } catch (error) { console.error(`parley: a "${event}" listener threw`, error); }
    }
  }
}

/** An error the server or the SDK reports: `code` is the protocol's (`forbidden`, `not_found`, …). */
export class ParleyError extends Error {
  constructor(code, message, status) {
    super(message);
    this.name = "ParleyError";
    this.code = code;
    this.status = status;
  }
}

/** A participant as the room knows it; `tracks` by track sid. */
export class Participant {
  constructor(info) {
    this.sid = info.sid;
    this.tracks = new Map();
    this.update(info);
  }
  update(info) {
    this.identity = info.identity;
    this.name = info.name || info.identity;
    this.metadata = info.metadata || "";
    this.presence = info.presence || { status: "online", text: "" };
    this.joinedAt = info.joinedAt;
    for (const track of info.tracks || []) this.tracks.set(track.sid, { ...this.tracks.get(track.sid), ...track });
  }
  get isSpeaking() { return (this.audioLevel || 0) > 0; }
}

/** A track this page publishes. */
export class LocalTrack {
  constructor(room, kind, source, mediaTrack, sender) {
    this.room = room;
    this.kind = kind;
    this.source = source;
    this.mediaStreamTrack = mediaTrack;
    this.sender = sender;
    this.sid = null;
    this.muted = false;
  }
  mute() { return this.room.setMuted(this, true); }
  unmute() { return this.room.setMuted(this, false); }
}

export class Room extends Emitter {
  /** Connects and resolves once joined (`joined` received), or rejects with a ParleyError. */
  static async connect(url, token, options = {}) {
    const room = new Room(url, token, options);
    await room.#open(null);
    return room;
  }

  #url; #token; #options; #ws = null; #nextId = 1; #pending = new Map();
  #publisher = null; #subscriber = null; #pendingSubscriberOffer = null; #queuedCandidates = [];
  #local = []; #retry = 0; #retryTimer = null; #movedTo = null; #leaving = false; #relayOnly = false;
  #typingTimer = null; #lastStats = null;
  // Each transport's pending relay-fallback check.
  #fallbackTimers = new Map();
  // Once joined, every later join (a resume, a move, the relay fallback) is a reconnection.
  #joinedOnce = false;
  // A move or the relay fallback needs a new session: its retries must not resume the old one.
  #needsNewSession = false;
  // Publisher offers run one at a time: two at once would race on the signaling state.
  #offerChain = Promise.resolve();
  // When each transport first had a remote description.
  #negotiatedAt = new WeakMap();

  constructor(url, token, options = {}) {
    super();
    this.#url = url.replace(/\/+$/, "");
    this.#token = token;
    this.#options = { adaptive: true, simulcast: true, relayFallbackMs: 6000, turn: "always", ...options };
    this.#relayOnly = this.#options.iceTransportPolicy === "relay";
    /** connecting, connected, reconnecting or disconnected. */
    this.state = "connecting";
    this.participants = new Map();
    this.localParticipant = null;
    this.name = null;
    this.iceServers = [];
    this.activeSpeakers = [];
    /** Remote tracks received: track sid → {track, participant, mediaStreamTrack, paused, muted}. */
    this.subscriptions = new Map();
  }

  // MARK: Connection

  #signalingURL(resume) {
    const base = this.#movedTo || this.#url;
    const ws = base.replace(/^http/, "ws");
    // The token goes as a subprotocol, not in the URL: URLs end up in proxies' logs. Only a
    // token a subprotocol can carry (a JWT can) goes that way.
    const query = [];
    if (!this.#tokenAsSubprotocol()) query.push(`token=${encodeURIComponent(this.#token)}`);
    if (resume) query.push(`resume=${encodeURIComponent(resume)}`);
    return `${ws}/v1/rtc` + (query.length ? `?${query.join("&")}` : "");
  }

  #tokenAsSubprotocol() { return /^[A-Za-z0-9._~-]+$/.test(this.#token); }

  #subprotocols() {
    return this.#tokenAsSubprotocol() ? ["parley", `access_token.${this.#token}`] : [];
  }

  #setState(state) {
    if (this.state === state || !STATES.includes(state)) return;
    this.state = state;
    this.emit("connectionStateChanged", state);
  }

  #open(resume) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.#signalingURL(resume), this.#subprotocols());
      this.#ws = ws;
      let joined = false;
      // A room that refuses the join (full, say) says why in an error frame, then closes.
      let refusedWith = null;
      ws.onmessage = (event) => {
        let message;
        try { message = JSON.parse(event.data); } catch { return; }
        if (message.type === "joined" && !joined) {
          joined = true;
          this.#onJoined(message).then(resolve, reject);
          return;
        }
        if (!joined && message.type === "error") { refusedWith = new ParleyError(message.code, message.message); return; }
        this.#handle(message);
      };
      ws.onclose = async (event) => {
        if (this.#ws !== ws) return;
        if (!joined) {
          const reason = refusedWith || await this.#refusal(event);
          if (!this.#joinedOnce) { this.#setState("disconnected"); reject(reason); return; }
          if (FINAL_REFUSALS.has(reason.code)) { this.#leaving = true; this.#teardown(reason); reject(reason); return; }
          this.#scheduleReconnect();
          return;
        }
        this.#onClose(event);
      };
    });
  }

  /** A refused upgrade hides its status from the page; a plain GET returns the reason. */
  async #refusal(event) {
    try {
      const base = (this.#movedTo || this.#url).replace(/^ws/, "http");
      const res = await fetch(`${base}/v1/rtc`, { headers: { Authorization: `Bearer ${this.#token}` } });
      const body = await res.json();
      if (body && body.error && res.status !== 400) return new ParleyError(body.error.code, body.error.message, res.status);
    } catch { /* the server is unreachable */ }
    return new ParleyError("unavailable", `could not connect (${event.code || "network"})`, 0);
  }

  async #onJoined(message) {
    const wasReconnecting = this.#joinedOnce;
    this.#joinedOnce = true;
    this.#needsNewSession = false;
    const resumed = Boolean(message.resumed) && this.localParticipant && message.participant.sid === this.localParticipant.sid;
    this.localParticipant = new Participant(message.participant);
    this.name = message.room.name;
    this.roomInfo = message.room;
    this.node = message.server && message.server.node;
    this.iceServers = message.iceServers || [];
    this.#retry = 0;
    if (!resumed) {
      const previous = new Set(this.participants.keys());
      this.participants.clear();
      for (const info of message.participants) this.participants.set(info.sid, new Participant(info));
      // After a new session: who left meanwhile has gone; who is there now has joined.
      if (wasReconnecting) {
        for (const sid of previous) if (!this.participants.has(sid)) this.emit("participantLeft", { sid, reason: "disconnected" });
        for (const [sid, p] of this.participants) if (!previous.has(sid)) this.emit("participantJoined", p);
      }
      this.#resetMedia();
      this.#createSubscriber();
      if (this.#local.length) await this.#republish();
    } else {
      for (const info of message.participants) {
        const known = this.participants.get(info.sid);
        if (known) known.update(info); else { const p = new Participant(info); this.participants.set(info.sid, p); this.emit("participantJoined", p); }
      }
      // A transport that failed while the signaling was down restarts its ICE.
      if (this.#publisher && ["failed", "disconnected"].includes(this.#publisher.connectionState)) await this.#offer({ iceRestart: true });
    }
    this.chatOnJoin = message.chat;
    this.#setState("connected");
    if (wasReconnecting) this.emit("reconnected", { resumed, node: this.node });
    return this;
  }

  #onClose(event) {
    for (const { reject } of this.#pending.values()) reject(new ParleyError("unavailable", "the connection closed"));
    this.#pending.clear();
    if (this.#leaving || this.state === "disconnected") { this.#teardown(); return; }
    this.#setState("reconnecting");
    this.emit("reconnecting", { code: event.code, movedTo: this.#movedTo });
    this.#scheduleReconnect(this.#movedTo && this.#retry === 0 ? 0 : undefined);
  }

  #scheduleReconnect(delay) {
    clearTimeout(this.#retryTimer);
    if (this.#leaving) return;
    const wait = delay ?? Math.min(1000 * 2 ** Math.min(this.#retry, 3), 5000);
    this.#retryTimer = setTimeout(() => {
      this.#retry += 1;
      // A move (`reconnect` with a url) is a new session there; a drop resumes the held one.
      const resume = this.#movedTo || this.#needsNewSession ? null : this.localParticipant && this.localParticipant.sid;
      // A retry alternates between the node the room moved to and the original server.
      if (this.#movedTo && this.#retry % 2 === 0) this.#movedTo = null;
      // A failed attempt schedules the next one itself (or ends on a final refusal).
      this.#open(resume).catch(() => {});
    }, wait);
  }

  /** Leaves the room; `disconnected` follows. */
  disconnect() {
    this.#leaving = true;
    clearTimeout(this.#retryTimer);
    if (this.#ws && this.#ws.readyState === WebSocket.OPEN) this.#send({ type: "leave" });
    if (this.#ws) this.#ws.close();
    this.#teardown();
  }

  /** `reason`: the ParleyError that ended the connection, when it was not the app's choice. */
  #teardown(reason) {
    clearTimeout(this.#retryTimer);
    if (this.state === "disconnected" && !this.#local.length) return;
    this.#resetMedia();
    for (const track of this.#local) track.mediaStreamTrack.stop();
    this.#local = [];
    this.#setState("disconnected");
    this.emit("disconnected", reason ? { reason: reason.code, error: reason } : {});
  }

  // MARK: Requests

  #send(message) {
    if (this.#ws && this.#ws.readyState === WebSocket.OPEN) { this.#ws.send(JSON.stringify(message)); return true; }
    return false;
  }

  /** Sends a request and resolves with its reply (rejects with the `error` reply). */
  request(message, timeoutMs = 10000) {
    const id = String(this.#nextId++);
    return new Promise((resolve, reject) => {
      if (!this.#send({ ...message, id })) { reject(new ParleyError("unavailable", "not connected")); return; }
      const timer = setTimeout(() => { this.#pending.delete(id); reject(new ParleyError("timeout", `no reply to ${message.type}`)); }, timeoutMs);
      this.#pending.set(id, {
        resolve: (reply) => { clearTimeout(timer); resolve(reply); },
        reject: (error) => { clearTimeout(timer); reject(error); },
      });
    });
  }

  // MARK: Events from the server

  #handle(message) {
    if (message.re && this.#pending.has(message.re) && message.type !== "offer") {
      const { resolve, reject } = this.#pending.get(message.re);
      this.#pending.delete(message.re);
      if (message.type === "error") reject(new ParleyError(message.code, message.message));
      else resolve(message);
      return;
    }
    switch (message.type) {
      case "participant.joined": {
        const p = new Participant(message.participant);
        this.participants.set(p.sid, p);
        this.emit("participantJoined", p);
        break;
      }
      case "participant.left": {
        if (this.localParticipant && message.participant === this.localParticipant.sid) {
          this.#leaving = true;
          this.emit("left", { reason: message.reason });
          break;
        }
        const p = this.participants.get(message.participant);
        this.participants.delete(message.participant);
        for (const [trackSid, sub] of this.subscriptions) if (sub.participant.sid === message.participant) this.#dropSubscription(trackSid);
        this.emit("participantLeft", { sid: message.participant, participant: p, reason: message.reason });
        break;
      }
      case "track.published": {
        const p = this.participants.get(message.participant);
        if (p) p.tracks.set(message.track.sid, message.track);
        this.emit("trackPublished", { participant: p, track: message.track });
        break;
      }
      case "track.unpublished": {
        const p = this.participants.get(message.participant);
        const track = p && p.tracks.get(message.track);
        if (p) p.tracks.delete(message.track);
        this.#dropSubscription(message.track);
        this.emit("trackUnpublished", { participant: p, track: track || { sid: message.track } });
        break;
      }
      case "track.muted": {
        // One of ours, muted or unmuted by the server (the admin API): follow it, so the page
        // shows it and stops sending what nobody receives.
        if (this.localParticipant && message.participant === this.localParticipant.sid) {
          const local = this.#local.find((l) => l.sid === message.track);
          if (local && local.muted !== message.muted) {
            local.muted = message.muted;
            local.mediaStreamTrack.enabled = !message.muted;
            this.emit("localTrackMuted", { track: local, muted: message.muted, byServer: true });
          }
          break;
        }
        const p = this.participants.get(message.participant);
        const track = p && p.tracks.get(message.track);
        if (track) track.muted = message.muted;
        const sub = this.subscriptions.get(message.track);
        if (sub) sub.muted = message.muted;
        this.emit("trackMuted", { participant: p, track: track || { sid: message.track }, muted: message.muted });
        break;
      }
      case "track.paused": case "track.resumed": {
        const paused = message.type === "track.paused";
        const sub = this.subscriptions.get(message.track);
        if (sub) sub.paused = paused;
        this.emit(paused ? "trackPaused" : "trackResumed", { participant: this.participants.get(message.participant), trackSid: message.track });
        break;
      }
      case "speakers": {
        for (const p of this.participants.values()) p.audioLevel = 0;
        if (this.localParticipant) this.localParticipant.audioLevel = 0;
        this.activeSpeakers = message.speakers.map(({ participant, level }) => {
          const p = this.participants.get(participant) || (this.localParticipant && this.localParticipant.sid === participant ? this.localParticipant : null);
          if (p) p.audioLevel = level;
          return { participant: p, sid: participant, level };
        });
        this.emit("activeSpeakers", this.activeSpeakers);
        break;
      }
      case "chat": this.emit("chat", message.message); break;
      case "presence": {
        const p = this.participants.get(message.participant);
        if (p) p.presence = { status: message.status, text: message.text, since: message.since };
        this.emit("presence", { participant: p, sid: message.participant, status: message.status, text: message.text });
        break;
      }
      case "typing":
        this.emit("typing", { participant: this.participants.get(message.participant), sid: message.participant, active: message.active });
        break;
      case "offer": if (message.target === "subscriber") this.#answerSubscriber(message); break;
      case "candidate": this.#addCandidate(message); break;
      case "publisher.layers": this.#setLayers(message.track, message.active); break;
      case "track.layer": {
        const sub = this.subscriptions.get(message.track);
        if (sub) sub.layer = message.layer;
        this.emit("trackLayer", { participant: this.participants.get(message.participant), trackSid: message.track, layer: message.layer, rid: message.rid });
        break;
      }
      case "reconnect":
        this.#movedTo = message.url || null;
        this.#needsNewSession = true;
        this.#retry = 0;
        this.emit("moving", { reason: message.reason, url: message.url });
        break;
      case "room.closed":
        // A server going down may come back (a restart, another node of a cluster): the SDK
        // reconnects, as for a dropped connection, and joins afresh.
        if (message.reason === "server_shutdown") break;
        this.#leaving = true;
        this.emit("roomClosed", { reason: message.reason });
        break;
      case "error": this.emit("error", new ParleyError(message.code, message.message)); break;
    }
  }

  // MARK: Media transports

  #rtcConfiguration() {
    let servers = this.#options.iceServerFilter ? this.#options.iceServerFilter(this.iceServers) : this.iceServers;
    // `turn: "fallback"`: relays cost the operator bandwidth, so they are used only once the
    // direct path has failed (the fallback's new session is relay-only).
    if (this.#options.turn === "fallback" && !this.#relayOnly) {
      servers = servers.map((s) => ({ ...s, urls: [].concat(s.urls).filter((u) => !u.startsWith("turn")) })).filter((s) => s.urls.length);
    }
    return { iceServers: servers, iceTransportPolicy: this.#relayOnly ? "relay" : "all", bundlePolicy: "max-bundle" };
  }

  /** The two RTCPeerConnections (for an app's own getStats or diagnostics). */
  get peerConnections() { return { publisher: this.#publisher, subscriber: this.#subscriber }; }

  /** Restarts ICE on the sending side (after a network change): new credentials both ways. */
  async restartIce() { if (this.#publisher) await this.#offer({ iceRestart: true }); }

  #resetMedia() {
    for (const timer of this.#fallbackTimers.values()) clearTimeout(timer);
    this.#fallbackTimers.clear();
    for (const pc of [this.#publisher, this.#subscriber]) if (pc) pc.close();
    this.#publisher = this.#subscriber = null;
    for (const trackSid of [...this.subscriptions.keys()]) this.#dropSubscription(trackSid);
  }

  /** TURN fallback: a transport that does not connect in time (UDP blocked, a strict NAT) makes
   *  the SDK join again with media only through the relays: the subscriber transport's offers
   *  come from the server, so a new session is the one way to move both. */
  #watchConnection(pc, target) {
    pc.onconnectionstatechange = () => this.emit("mediaConnectionStateChanged", { target, state: pc.connectionState });
    this.#armFallback(pc, target);
  }

  #armFallback(pc, target, wait = this.#options.relayFallbackMs) {
    const timer = setTimeout(() => {
      if (pc.connectionState === "connected" || pc.signalingState === "closed" || this.#relayOnly || this.state !== "connected") return;
      // A transport with nothing negotiated yet (nobody publishes) is not trying to connect:
      // its time counts from its first negotiation.
      const since = this.#negotiatedAt.get(pc);
      const left = since === undefined ? this.#options.relayFallbackMs : since + this.#options.relayFallbackMs - performance.now();
      if (left > 0) { this.#armFallback(pc, target, left); return; }
      if (!this.iceServers.some((s) => [].concat(s.urls).some((u) => u.startsWith("turn")))) return;
      this.#relayOnly = true;
      this.#needsNewSession = true;
      this.emit("relayFallback", { target });
      const old = this.#ws;
      this.#ws = null;  // its close is not a drop
      if (old) old.close();
      this.#setState("reconnecting");
      this.emit("reconnecting", { code: 0, movedTo: null });
      this.#open(null).catch(() => {});
    }, wait);
    this.#fallbackTimers.set(pc, timer);
  }

  #createSubscriber() {
    const pc = new RTCPeerConnection(this.#rtcConfiguration());
    this.#subscriber = pc;
    pc.onicecandidate = (e) => this.#send({ type: "candidate", target: "subscriber", candidate: e.candidate ? e.candidate.toJSON() : null });
    pc.ontrack = (event) => this.#onRemoteTrack(event);
    this.#watchConnection(pc, "subscriber");
    if (this.#pendingSubscriberOffer) {
      const offer = this.#pendingSubscriberOffer;
      this.#pendingSubscriberOffer = null;
      this.#answerSubscriber(offer);
    }
  }

  #ensurePublisher() {
    if (this.#publisher) return this.#publisher;
    const pc = new RTCPeerConnection(this.#rtcConfiguration());
    this.#publisher = pc;
    pc.onicecandidate = (e) => this.#send({ type: "candidate", target: "publisher", candidate: e.candidate ? e.candidate.toJSON() : null });
    this.#watchConnection(pc, "publisher");
    return pc;
  }

  async #answerSubscriber(offer) {
    const pc = this.#subscriber;
    if (!pc) { this.#pendingSubscriberOffer = offer; return; }
    try {
      await pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
      if (!this.#negotiatedAt.has(pc)) this.#negotiatedAt.set(pc, performance.now());
      await pc.setLocalDescription(await pc.createAnswer());
      this.#send({ type: "answer", re: offer.id, target: "subscriber", sdp: pc.localDescription.sdp });
      for (const candidate of this.#queuedCandidates.splice(0)) await pc.addIceCandidate(candidate).catch(() => {});
    } catch (error) {
      this.emit("error", new ParleyError("media", `could not answer the server's offer: ${error}`));
    }
  }

  async #addCandidate(message) {
    const pc = message.target === "publisher" ? this.#publisher : this.#subscriber;
    if (!pc) return;
    if (!pc.remoteDescription) { if (message.target === "subscriber") this.#queuedCandidates.push(message.candidate || null); return; }
    try { await pc.addIceCandidate(message.candidate || null); } catch { /* Parley is ICE-lite: its candidates are in the SDP too */ }
  }

  /** msid names the publisher's sid and the track sid: `a=msid:<participant> <track>`. */
  #onRemoteTrack(event) {
    const participantSid = event.streams[0] ? event.streams[0].id : "";
    const trackSid = event.track.id;
    const participant = this.participants.get(participantSid);
    const info = (participant && participant.tracks.get(trackSid)) || { sid: trackSid, kind: event.track.kind };
    const stream = event.streams[0] || new MediaStream([event.track]);
    const subscription = { track: info, participant, mediaStreamTrack: event.track, stream, paused: false, muted: Boolean(info.muted), transceiver: event.transceiver };
    this.subscriptions.set(trackSid, subscription);
    event.track.onended = () => this.#dropSubscription(trackSid);
    this.emit("trackSubscribed", subscription);
  }

  #dropSubscription(trackSid) {
    const sub = this.subscriptions.get(trackSid);
    if (!sub) return;
    this.subscriptions.delete(trackSid);
    this.emit("trackUnsubscribed", sub);
  }

  // MARK: Publishing

  #offer(options = {}) {
    const run = this.#offerChain.then(() => this.#offerNow(options));
    this.#offerChain = run.catch(() => {});
    return run;
  }

  async #offerNow(options = {}) {
    const pc = this.#ensurePublisher();
    await pc.setLocalDescription(await pc.createOffer(options));
    const sources = {};
    for (const local of this.#local) {
      const transceiver = pc.getTransceivers().find((t) => t.sender === local.sender);
      if (transceiver && transceiver.mid != null) sources[transceiver.mid] = local.source;
    }
    const reply = await this.request({ type: "offer", target: "publisher", sdp: pc.localDescription.sdp, sources });
    await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
    if (!this.#negotiatedAt.has(pc)) this.#negotiatedAt.set(pc, performance.now());
    for (const track of reply.tracks || []) {
      const transceiver = pc.getTransceivers().find((t) => t.mid === track.mid);
      const local = this.#local.find((l) => transceiver && l.sender === transceiver.sender);
      if (local) local.sid = track.sid;
    }
    // A server that does not take simulcast answers without a=simulcast: the browser then sends
    // only the lowest layer and fails later offers of that sender, so the camera goes one-layer.
    const camera = this.#local.find((l) => l.source === "camera");
    if (camera && !/^a=simulcast:/m.test(reply.sdp) && camera.sender.getParameters().encodings.some((e) => e.rid)) {
      await this.#republishTrack(camera, { simulcast: false });
    }
    if (this.localParticipant) for (const track of reply.tracks || []) this.localParticipant.tracks.set(track.sid, track);
    return reply;
  }

  /** `existing`: the app's handle of a track published again in a new session, kept so its
   *  mute() and sid stay current. */
  async #publish(mediaTrack, source, options = {}, existing = null) {
    const pc = this.#ensurePublisher();
    const init = { direction: "sendonly", streams: [new MediaStream([mediaTrack])] };
    const simulcast = mediaTrack.kind === "video" && source === "camera" && this.#options.simulcast && options.simulcast !== false;
    if (simulcast) init.sendEncodings = SIMULCAST.map((e) => ({ ...e }));
    const transceiver = pc.addTransceiver(mediaTrack, init);
    if (mediaTrack.kind === "video") preferVP8(transceiver);
    const local = existing || new LocalTrack(this, mediaTrack.kind, source, mediaTrack, transceiver.sender);
    local.sender = transceiver.sender;
    local.sid = null;
    this.#local.push(local);
    await this.#offer();
    this.emit("localTrackPublished", local);
    if (!existing) mediaTrack.addEventListener("ended", () => { if (this.#local.includes(local)) this.unpublish(local).catch(() => {}); });
    return local;
  }

  async #republishTrack(local, options) {
    const pc = this.#publisher;
    const transceiver = pc.getTransceivers().find((t) => t.sender === local.sender);
    if (transceiver) transceiver.stop();
    const next = pc.addTransceiver(local.mediaStreamTrack, { direction: "sendonly", streams: [new MediaStream([local.mediaStreamTrack])],
      sendEncodings: options.simulcast ? SIMULCAST.map((e) => ({ ...e })) : undefined });
    if (local.kind === "video") preferVP8(next);
    local.sender = next.sender;
    // Called from within an offer: a queued one would wait for itself.
    await this.#offerNow();
  }

  /** A new session (after a move or a lost node): the same local tracks, published again. */
  async #republish() {
    const tracks = this.#local;
    this.#local = [];
    for (const local of tracks) {
      if (local.mediaStreamTrack.readyState !== "live") continue;
      await this.#publish(local.mediaStreamTrack, local.source, {}, local);
      if (local.muted) await this.setMuted(local, true);
    }
  }

  /** Publishes the microphone (`deviceId` to pick one). Resolves with its LocalTrack. */
  async publishMicrophone(options = {}) {
    const stream = await getMedia({ audio: { deviceId: options.deviceId ? { exact: options.deviceId } : undefined,
      echoCancellation: options.echoCancellation ?? true, noiseSuppression: options.noiseSuppression ?? true, autoGainControl: options.autoGainControl ?? true } });
    return this.#publish(stream.getAudioTracks()[0], "microphone");
  }

  /** Publishes the camera in three simulcast layers (`simulcast: false` for one). */
  async publishCamera(options = {}) {
    const stream = await getMedia({ video: { deviceId: options.deviceId ? { exact: options.deviceId } : undefined,
      width: { ideal: options.width || 1280 }, height: { ideal: options.height || 720 }, frameRate: { ideal: options.frameRate || 30 } } });
    return this.#publish(stream.getVideoTracks()[0], "camera", options);
  }

  /** Shares the screen (source `screen_share`), shown large by the web client. */
  async publishScreen(options = {}) {
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: options.frameRate || 15 } }, audio: Boolean(options.audio) });
    const video = await this.#publish(stream.getVideoTracks()[0], "screen_share", { simulcast: false });
    if (options.audio && stream.getAudioTracks()[0]) await this.#publish(stream.getAudioTracks()[0], "screen_share_audio");
    return video;
  }

  /** Publishes a track the app made (a canvas, a processed camera). */
  publishTrack(mediaTrack, source) { return this.#publish(mediaTrack, source || (mediaTrack.kind === "audio" ? "microphone" : "camera")); }

  /** Stops publishing a track: the others get `trackUnpublished`. */
  async unpublish(local) {
    this.#local = this.#local.filter((l) => l !== local);
    const transceiver = this.#publisher && this.#publisher.getTransceivers().find((t) => t.sender === local.sender);
    if (transceiver) transceiver.stop();
    local.mediaStreamTrack.stop();
    if (this.#publisher) await this.#offer();
    this.emit("localTrackUnpublished", local);
  }

  /** Mutes or unmutes a published track: the browser stops sending and the server tells the others. */
  async setMuted(local, muted) {
    local.muted = muted;
    local.mediaStreamTrack.enabled = !muted;
    if (local.sid) await this.request({ type: "mute", track: local.sid, muted });
    this.emit("localTrackMuted", { track: local, muted });
  }

  /** Moves a published track to another device without renegotiating; `constraints` add to
   *  the device choice (a size, audio processing). */
  async switchDevice(kind, deviceId, constraints = {}) {
    const local = this.#local.find((l) => l.kind === kind && (l.source === "camera" || l.source === "microphone"));
    if (!local) throw new ParleyError("not_found", `no published ${kind}`);
    const chosen = { ...constraints, deviceId: { exact: deviceId } };
    const request = kind === "audio" ? { audio: chosen } : { video: chosen };
    const stream = await getMedia(request);
    const next = kind === "audio" ? stream.getAudioTracks()[0] : stream.getVideoTracks()[0];
    next.enabled = !local.muted;
    await local.sender.replaceTrack(next);
    local.mediaStreamTrack.stop();
    local.mediaStreamTrack = next;
    this.emit("deviceSwitched", { track: local, deviceId });
    return local;
  }

  get localTracks() { return [...this.#local]; }

  // MARK: Receiving

  /** Receives a track again, or caps it: `quality` (low, medium, high) or the tile's size in device pixels. */
  subscribe(trackSid, options = {}) {
    return this.#sendSubscribe([trackSid], true, options);
  }

  /** Stops receiving a track (its m-line goes inactive); `subscribe` brings it back. */
  unsubscribe(trackSid) { return this.#sendSubscribe([trackSid], false, {}); }

  #sendSubscribe(tracks, subscribe, { quality, maxWidth, maxHeight }) {
    const message = { type: "subscribe", tracks, subscribe };
    if (quality) message.quality = quality;
    if (maxWidth) message.maxWidth = Math.round(maxWidth);
    if (maxHeight) message.maxHeight = Math.round(maxHeight);
    // `subscribe` has no reply on success; an error names the request.
    this.#send({ ...message, id: String(this.#nextId++) });
  }

  // MARK: Chat, presence, typing

  /** Sends a chat message (`to`: identities for a direct message); resolves with the stored
   *  message once the server acked it. A store that is briefly unavailable is retried with the
   *  same clientMsgId, so the message is never doubled. */
  async sendChat(text, options = {}) {
    const clientMsgId = options.clientMsgId || (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`);
    const message = { type: "chat.send", text, clientMsgId };
    if (options.to) message.to = options.to;
    for (let attempt = 0; ; attempt++) {
      try {
        const ack = await this.request(message);
        this.setTyping(false);
        return ack.message;
      } catch (error) {
        if (error.code !== "unavailable" || attempt >= (options.retries ?? 5)) throw error;
        await new Promise((r) => setTimeout(r, 500 * (attempt + 1)));
        if (this.state !== "connected") await new Promise((r) => this.once("connectionStateChanged", r));
      }
    }
  }

  /** A page of chat history, oldest first: `before` a seq for older, `after` for newer. */
  async chatHistory(options = {}) {
    const reply = await this.request({ type: "chat.history", ...options });
    return { messages: reply.messages, hasMore: reply.hasMore };
  }

  /** online, away, busy or dnd, with an optional text. */
  async setPresence(status, text = "") {
    return this.request({ type: "presence.set", status, text });
  }

  /** Says you are typing; it stops by itself after 3 s without another call. */
  setTyping(active = true) {
    clearTimeout(this.#typingTimer);
    if (active) {
      if (!this.typing) this.#send({ type: "typing", active: true });
      this.typing = true;
      this.#typingTimer = setTimeout(() => this.setTyping(false), 3000);
    } else if (this.typing) {
      this.typing = false;
      this.#send({ type: "typing", active: false });
    }
  }

  // MARK: Adaptive video

  #setLayers(trackSid, active) {
    const local = this.#local.find((l) => l.sid === trackSid);
    if (!local || !Array.isArray(active) || !this.#options.adaptive) return;
    const parameters = local.sender.getParameters();
    let changed = false;
    for (const encoding of parameters.encodings || []) {
      if (!encoding.rid) continue;
      const on = active.includes(encoding.rid);
      if (encoding.active !== on) { encoding.active = on; changed = true; }
    }
    if (changed) local.sender.setParameters(parameters).catch(() => {});
  }

  // MARK: Stats

  /** What flows now: per received track its bitrate, loss, size, frame rate and layer; per sent
   *  track its bitrate; the round trip to the server; totals. Rates are since the last call. */
  async getStats() {
    const now = performance.now();
    const previous = this.#lastStats;
    const bytes = {};
    const result = { roundTripTime: null, inbound: [], outbound: [], bitrateIn: 0, bitrateOut: 0, packetsLost: 0, relayed: false };
    const rate = (key, value) => {
      bytes[key] = value;
      if (!previous || previous.bytes[key] === undefined) return 0;
      return Math.max(0, ((value - previous.bytes[key]) * 8) / ((now - previous.at) / 1000));
    };
    for (const [target, pc] of [["publisher", this.#publisher], ["subscriber", this.#subscriber]]) {
      if (!pc) continue;
      const report = await pc.getStats();
      report.forEach((s) => {
        if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
          if (s.currentRoundTripTime != null) result.roundTripTime = s.currentRoundTripTime;
          const local = report.get(s.localCandidateId);
          if (local && local.candidateType === "relay") result.relayed = true;
        }
        if (s.type === "inbound-rtp" && target === "subscriber") {
          const sub = this.subscriptions.get(s.trackIdentifier);
          const entry = { trackSid: s.trackIdentifier, participant: sub && sub.participant ? sub.participant.sid : null, kind: s.kind,
            bitrate: rate(`in:${s.ssrc}`, s.bytesReceived || 0), packetsLost: s.packetsLost || 0, packetsReceived: s.packetsReceived || 0,
            jitter: s.jitter || 0, paused: Boolean(sub && sub.paused) };
          if (s.kind === "video") Object.assign(entry, { width: s.frameWidth || 0, height: s.frameHeight || 0, framesPerSecond: s.framesPerSecond || 0,
            framesDecoded: s.framesDecoded || 0, freezeCount: s.freezeCount || 0, layer: sub && sub.layer != null ? sub.layer : null });
          if (s.kind === "audio") Object.assign(entry, { concealedSamples: s.concealedSamples || 0, totalSamplesReceived: s.totalSamplesReceived || 0 });
          result.inbound.push(entry);
          result.bitrateIn += entry.bitrate;
          result.packetsLost += entry.packetsLost;
        }
        if (s.type === "outbound-rtp" && target === "publisher") {
          const entry = { kind: s.kind, rid: s.rid || null, bitrate: rate(`out:${s.ssrc}`, s.bytesSent || 0), active: s.active !== false,
            width: s.frameWidth || 0, height: s.frameHeight || 0, framesPerSecond: s.framesPerSecond || 0,
            qualityLimitationReason: s.qualityLimitationReason || null };
          result.outbound.push(entry);
          result.bitrateOut += entry.bitrate;
        }
      });
    }
    this.#lastStats = { at: now, bytes };
    return result;
  }
}

function preferVP8(transceiver) {
  const caps = window.RTCRtpSender && RTCRtpSender.getCapabilities && RTCRtpSender.getCapabilities("video");
  if (!caps || !transceiver.setCodecPreferences) return;
  const isVP8 = (c) => c.mimeType.toLowerCase() === "video/vp8";
  if (!caps.codecs.some(isVP8)) return;
  try { transceiver.setCodecPreferences([...caps.codecs.filter(isVP8), ...caps.codecs.filter((c) => !isVP8(c))]); } catch { /* keep the default order */ }
}

/** getUserMedia with the errors an app shows: denied, no device, device busy. */
async function getMedia(constraints) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new ParleyError("insecure_context", "camera and microphone need a secure page (https, or localhost)");
  }
  try {
    return await navigator.mediaDevices.getUserMedia(constraints);
  } catch (error) {
    const code = { NotAllowedError: "permission_denied", NotFoundError: "no_device", OverconstrainedError: "no_device", NotReadableError: "device_busy" }[error.name] || "media";
    throw new ParleyError(code, `${error.name}: ${error.message}`);
  }
}

/** The cameras, microphones and speakers the browser lists (names once permission was given). */
export async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  return {
    cameras: devices.filter((d) => d.kind === "videoinput"),
    microphones: devices.filter((d) => d.kind === "audioinput"),
    speakers: devices.filter((d) => d.kind === "audiooutput"),
  };
}

/** A local preview stream for a pre-join screen (camera and microphone, before connecting). */
export async function createLocalPreview(options = {}) {
  return getMedia({ audio: options.audio === false ? false : (options.audioDeviceId ? { deviceId: { exact: options.audioDeviceId } } : true),
    video: options.video === false ? false : (options.videoDeviceId ? { deviceId: { exact: options.videoDeviceId } } : { width: { ideal: 1280 }, height: { ideal: 720 } }) });
}

/** A microphone level meter over a stream: calls `onLevel(0…1)` about 20 times a second; returns stop(). */
export function watchAudioLevel(stream, onLevel) {
  const context = new AudioContext();
  const source = context.createMediaStreamSource(stream);
  const analyser = context.createAnalyser();
  analyser.fftSize = 512;
  source.connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const timer = setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const v of samples) sum += v * v;
    onLevel(Math.min(1, Math.sqrt(sum / samples.length) * 4));
  }, 50);
  return () => { clearInterval(timer); context.close(); };
}
