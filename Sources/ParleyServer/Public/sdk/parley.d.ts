// Types for Parley's browser SDK (/sdk/parley.js). The wire contract is docs/protocol.md.

export type ConnectionState = "connecting" | "connected" | "reconnecting" | "disconnected";
export type TrackSource = "microphone" | "camera" | "screen_share" | "screen_share_audio";
export type PresenceStatus = "online" | "away" | "busy" | "dnd";
export type Quality = "low" | "medium" | "high";

export interface TrackInfo {
  sid: string;
  kind: "audio" | "video";
  source: TrackSource;
  muted: boolean;
  mid?: string;
  layers?: { rid: string; index: number }[];
}

export interface Presence { status: PresenceStatus; text: string; since?: number }

export declare class Participant {
  readonly sid: string;
  identity: string;
  name: string;
  metadata: string;
  presence: Presence;
  joinedAt: number;
  /** 0…1 while speaking (from `activeSpeakers`), else 0. */
  audioLevel?: number;
  readonly isSpeaking: boolean;
  /** Published tracks by track sid. */
  tracks: Map<string, TrackInfo>;
}

export declare class LocalTrack {
  readonly kind: "audio" | "video";
  readonly source: TrackSource;
  mediaStreamTrack: MediaStreamTrack;
  sender: RTCRtpSender;
  /** The server's track sid once published. */
  sid: string | null;
  muted: boolean;
  mute(): Promise<void>;
  unmute(): Promise<void>;
}

export interface Subscription {
  track: TrackInfo;
  participant: Participant | undefined;
  mediaStreamTrack: MediaStreamTrack;
  /** The participant's stream (its audio and video together), for a <video> element. */
  stream: MediaStream;
  /** The server paused it: not even its lowest layer fits this page's bandwidth. */
  paused: boolean;
  muted: boolean;
  /** The simulcast layer received (0 lowest), once the server told it. */
  layer?: number;
}

export interface ChatMessage {
  id: string;
  seq: number;
  from: { sid: string; identity: string; name: string };
  text: string;
  to?: string[];
  ts: number;
  clientMsgId?: string;
  system?: boolean;
}

export interface Stats {
  /** Seconds, to the server over the media path in use. */
  roundTripTime: number | null;
  /** Whether media goes through a TURN relay. */
  relayed: boolean;
  bitrateIn: number;
  bitrateOut: number;
  packetsLost: number;
  inbound: {
    trackSid: string; participant: string | null; kind: "audio" | "video"; bitrate: number; packetsLost: number; packetsReceived: number;
    jitter: number; paused: boolean; width?: number; height?: number; framesPerSecond?: number; framesDecoded?: number;
    freezeCount?: number; layer?: number | null; concealedSamples?: number; totalSamplesReceived?: number;
  }[];
  outbound: { kind: "audio" | "video"; rid: string | null; bitrate: number; active: boolean; width: number; height: number;
    framesPerSecond: number; qualityLimitationReason: string | null }[];
}

export interface RoomEvents {
  connectionStateChanged: ConnectionState;
  participantJoined: Participant;
  participantLeft: { sid: string; participant?: Participant; reason: string };
  trackPublished: { participant?: Participant; track: TrackInfo };
  trackUnpublished: { participant?: Participant; track: TrackInfo | { sid: string } };
  trackSubscribed: Subscription;
  trackUnsubscribed: Subscription;
  trackMuted: { participant?: Participant; track: TrackInfo | { sid: string }; muted: boolean };
  trackPaused: { participant?: Participant; trackSid: string };
  trackResumed: { participant?: Participant; trackSid: string };
  trackLayer: { participant?: Participant; trackSid: string; layer: number; rid: string };
  activeSpeakers: { participant: Participant | null; sid: string; level: number }[];
  chat: ChatMessage;
  presence: { participant?: Participant; sid: string; status: PresenceStatus; text: string };
  typing: { participant?: Participant; sid: string; active: boolean };
  /** The signaling connection dropped; the SDK reconnects by itself. */
  reconnecting: { code: number; movedTo: string | null };
  /** Back: `resumed` keeps the session (same sid, media untouched); otherwise a new session
   *  republished the local tracks. */
  reconnected: { resumed: boolean; node?: string };
  /** The server drains: the room moves to `url`; `reconnecting` follows. */
  moving: { reason: string; url?: string };
  /** A transport did not connect directly in time and now goes through the TURN relays. */
  relayFallback: { target: "publisher" | "subscriber" };
  mediaConnectionStateChanged: { target: "publisher" | "subscriber"; state: RTCPeerConnectionState };
  localTrackPublished: LocalTrack;
  localTrackUnpublished: LocalTrack;
  /** `byServer`: the room's host muted (or unmuted) it through the admin API. */
  localTrackMuted: { track: LocalTrack; muted: boolean; byServer?: boolean };
  deviceSwitched: { track: LocalTrack; deviceId: string };
  roomClosed: { reason: string };
  /** This participant was removed (kicked, replaced by the same identity elsewhere). */
  left: { reason: string };
  /** Left, or given up: `reason` is the code of a refusal no retry can fix (the token expired
   *  or was revoked: unauthorized, forbidden; room_full; not_found). */
  disconnected: { reason?: string; error?: ParleyError };
  error: ParleyError;
}

export declare class ParleyError extends Error {
  /** The protocol's error code (unauthorized, forbidden, room_full, not_found, unavailable, …) or
   *  the SDK's (permission_denied, no_device, device_busy, insecure_context, timeout, media). */
  code: string;
  /** The HTTP status of a refused connection. */
  status?: number;
}

export interface ConnectOptions {
  /** "relay": media only through TURN. */
  iceTransportPolicy?: RTCIceTransportPolicy;
  /** Send the camera as three simulcast layers (default true). */
  simulcast?: boolean;
  /** Follow the server's `publisher.layers` (default true). */
  adaptive?: boolean;
  /** After this long without a direct connection, go through TURN (default 6000 ms). */
  relayFallbackMs?: number;
  /** "always" (default): TURN candidates from the start, as any ICE agent gathers them.
   *  "fallback": none until the direct path failed for `relayFallbackMs` (saves relay bandwidth). */
  turn?: "always" | "fallback";
  /** Picks which of the server's ICE servers to use (say, only `turns:` ones). */
  iceServerFilter?: (servers: RTCIceServer[]) => RTCIceServer[];
}

export declare class Room {
  static connect(url: string, token: string, options?: ConnectOptions): Promise<Room>;
  readonly state: ConnectionState;
  readonly name: string;
  readonly node?: string;
  readonly localParticipant: Participant;
  /** The others, by sid. */
  readonly participants: Map<string, Participant>;
  readonly subscriptions: Map<string, Subscription>;
  readonly activeSpeakers: RoomEvents["activeSpeakers"];
  readonly localTracks: LocalTrack[];
  /** The chat history `joined` carried (the last messages, oldest first). */
  readonly chatOnJoin: { messages: ChatMessage[]; hasMore: boolean };
  readonly iceServers: RTCIceServer[];

  on<E extends keyof RoomEvents>(event: E, listener: (value: RoomEvents[E]) => void): () => void;
  once<E extends keyof RoomEvents>(event: E, listener: (value: RoomEvents[E]) => void): () => void;
  off<E extends keyof RoomEvents>(event: E, listener: (value: RoomEvents[E]) => void): void;

  publishMicrophone(options?: { deviceId?: string; echoCancellation?: boolean; noiseSuppression?: boolean; autoGainControl?: boolean }): Promise<LocalTrack>;
  publishCamera(options?: { deviceId?: string; width?: number; height?: number; frameRate?: number; simulcast?: boolean }): Promise<LocalTrack>;
  publishScreen(options?: { audio?: boolean; frameRate?: number }): Promise<LocalTrack>;
  publishTrack(track: MediaStreamTrack, source?: TrackSource): Promise<LocalTrack>;
  unpublish(track: LocalTrack): Promise<void>;
  setMuted(track: LocalTrack, muted: boolean): Promise<void>;
  switchDevice(kind: "audio" | "video", deviceId: string, constraints?: MediaTrackConstraints): Promise<LocalTrack>;

  subscribe(trackSid: string, options?: { quality?: Quality; maxWidth?: number; maxHeight?: number }): void;
  unsubscribe(trackSid: string): void;

  sendChat(text: string, options?: { to?: string[]; clientMsgId?: string; retries?: number }): Promise<ChatMessage>;
  chatHistory(options?: { before?: number; after?: number; limit?: number }): Promise<{ messages: ChatMessage[]; hasMore: boolean }>;
  setPresence(status: PresenceStatus, text?: string): Promise<unknown>;
  setTyping(active?: boolean): void;

  getStats(): Promise<Stats>;
  /** The publisher and subscriber RTCPeerConnections, for an app's own diagnostics. */
  readonly peerConnections: { publisher: RTCPeerConnection | null; subscriber: RTCPeerConnection | null };
  /** Restarts ICE on the sending side (after a network change). */
  restartIce(): Promise<void>;
  /** Any request of the protocol; resolves with its reply. */
  request(message: { type: string; [key: string]: unknown }, timeoutMs?: number): Promise<any>;
  disconnect(): void;
}

export declare function listDevices(): Promise<{ cameras: MediaDeviceInfo[]; microphones: MediaDeviceInfo[]; speakers: MediaDeviceInfo[] }>;
export declare function createLocalPreview(options?: { audio?: boolean; video?: boolean; audioDeviceId?: string; videoDeviceId?: string }): Promise<MediaStream>;
export declare function watchAudioLevel(stream: MediaStream, onLevel: (level: number) => void): () => void;
