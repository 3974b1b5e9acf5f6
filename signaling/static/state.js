// The meeting's state, shared by the page's modules. app.js owns the
// connection and fills `view` with the page's widgets at start-up.

import { hooks } from "./media.js";
import { sentence } from "./messages.js";

/** What tests (tests/e2e) and a curious person in the console can read: `window.parley`. */
export const parley = {
  state: "idle", // idle | lobby | connecting | joined | reconnecting | closed | removed | ended | failed
  participantId: null,
  grants: null,
  publishing: false, // the publish connection carries this page's tracks
  ready: false, // joined, and published if allowed to
  reconnects: 0,
  publishFailures: 0, // publish connections that failed (connection-failed, or the browser's)
  publishRecoveries: 0, // … and were replaced by a connected one, the socket kept
  subscribeFailures: 0, // subscribe connections the node replaced (connection-failed)
  resumed: 0, // joins that took this page's participant back (joined.resumed)
  history: [], // [{state, status, at}] every state change
  errors: [], // uncaught page errors and server errors
  hooks, // test hooks (media.js)
  participants: new Map(), // participant id -> Participant (the others)
};

export const meeting = {
  token: null,
  gen: 0, // bumped on every connection attempt; stale callbacks compare theirs
  attempt: 0,
  retryTimer: null,
  signal: null,
  sub: null,
  pub: null,
  iceServers: [],
  heldOffers: [], // subscriber offers that came before the subscriber existed
  self: null, // this page's participant
  leaving: false,
  refusal: null, // the error code of a refused join
  disconnect: null, // the last `disconnect` event
  removedBy: null, // the `removed` event
  resume: { token: null, expiresAt: 0 }, // the last resume token (joined, resume-token)
  soon: false, // the node asked for a reconnection (`reconnect`, close 4010): no back-off
  tracks: new Map(), // track id -> Track (others' tracks)
  quality: new Map(), // participant id -> connection quality
  streams: new Map(), // track id -> {state, layer, encoding} of its last stream-state
  speaking: new Set(),
  departed: new Set(),
  bound: new Map(), // mid -> {key, participant, kind, track, source}
};

/** This page's own media. Mute and camera choices survive reconnecting. */
export const local = { audio: null, video: null, screen: null, micMuted: false, cameraOff: false };

/** The page's widgets (grid, chat, stage, devices) and refresh(), set by app.js. */
export const view = { grid: null, chat: null, stage: null, devices: null, refresh: () => {} };

export function nameOf(pid) {
  if (!pid) return "";
  if (meeting.self && pid === meeting.self.id) return meeting.self.name || meeting.self.identity;
  const p = parley.participants.get(pid);
  return p ? (p.name || p.identity) : "";
}

export function isMine(track) { return !!meeting.self && track.participant === meeting.self.id; }

export function fault(what, err) {
  const text = `${what}: ${err && err.message ? err.message : err}`;
  parley.errors.push(text);
  return text;
}

/** Send a request; a refusal becomes a sentence in the chat and an entry in parley.errors. */
export function act(message, then) {
  if (!meeting.signal) return Promise.resolve();
  return meeting.signal.request(message).then((reply) => { if (then) then(reply); }).catch((err) => {
    fault(message.type, err);
    view.chat.notice(sentence(err));
  });
}
