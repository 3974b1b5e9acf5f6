// The Parley meeting page. Join with /?token=…, or with the form on a node in
// development mode; publish camera, microphone and screen; see and hear the
// others; chat; take part in the stage (requests to speak, moderation).
// The protocol is described in docs/protocol.md.
//
// Modules, no build step: state.js (shared state, `window.parley`),
// signal.js (the socket), subscriber.js / publisher.js (the two peer
// connections), publishing.js (own media), roster.js (who is shown where),
// grid.js (tiles), tilesize.js (tile sizes for the node), chat.js, stage.js,
// lobby.js (before joining), media.js (devices, screen), messages.js (error
// codes as sentences). This file connects, reacts to the node's events,
// reconnects when the socket drops and takes a new subscribe connection when
// the node replaces a failed one.

import { Chat } from "./chat.js";
import { CloseCode } from "./codes.js";
import { Grid } from "./grid.js";
import { Devices, developmentMode, devToken, preview } from "./lobby.js";
import {
  mutedByModerator, publisherFailed, releaseLocal, retryDevices, startPreview, startPublishing,
  stopPublishing, switchDevice, toggleCamera, toggleMic, toggleScreen,
} from "./publishing.js";
import { bindRemote, moderate, refresh, unbindRemote } from "./roster.js";
import { RequestError, Signal } from "./signal.js";
import { StageUI } from "./stage.js";
import { act, fault, isMine, meeting, nameOf, parley, view } from "./state.js";
import { Subscriber } from "./subscriber.js";
import { TileSizes } from "./tilesize.js";

const $ = (id) => document.getElementById(id);
const RETRY_DELAYS = [500, 1000, 2000, 4000, 8000]; // ms; 8 s for every further attempt
const RECONNECT_SOON = 250; // ms, at most (random): the node asked for a reconnection
const JOIN_TIMEOUT = 10000; // ms
const QUIET_RECOVERY = 5000; // ms: a new subscribe connection is set up without a word
const NODE_GRACE = 35000; // ms the node is given to replace a subscribe connection this
                          // browser saw fail (its consent window is 30 s) before rejoining
const JOIN_REFUSED = {
  room_full: "The meeting is full.",
  stage_full: "The stage is full; ask for a listener link instead.",
  removed_from_room: "You were removed from this meeting.",
};
const AUTH_FAILED = {
  token_expired: "Your meeting link has expired. Ask for a new one.",
  token_not_yet_valid: "Your meeting link is not valid yet.",
};

// -- the page's widgets and test hooks ---------------------------------------------------
view.grid = new Grid($("grid"), moderate);
view.grid.sizes = new TileSizes((message) => !!meeting.signal && meeting.signal.send(message));
view.chat = new Chat({ list: $("messages"), form: $("chat"), input: $("chat-text") }, sendData);
view.stage = new StageUI({
  request: () => act({ type: "request-to-speak" }, (r) => view.stage.setRequest(r.status)),
  cancel: () => act({ type: "cancel-speaker-request" }, () => view.stage.setRequest("cancelled")),
  approve: (pid) => act({ type: "approve-speaker", participant: pid }, () => view.stage.dropRequest(pid)),
  deny: (pid) => act({ type: "deny-speaker", participant: pid }, () => view.stage.dropRequest(pid)),
  invite: (pid) => act({ type: "invite-to-stage", participant: pid },
    () => view.chat.notice(`You invited ${nameOf(pid)} on stage.`)),
  respond: (accept) => act({ type: "respond-to-invite", accept }),
});
view.devices = new Devices(switchDevice);
view.refresh = refresh;

Object.assign(parley, {
  /** framesDecoded of the video received from each remote participant (all sources summed). */
  async stats() {
    const out = {};
    if (!meeting.sub) return out;
    for (const { participant, frames } of (await meeting.sub.decoded()).values()) {
      out[participant] = (out[participant] || 0) + frames;
    }
    return out;
  },
  /** framesDecoded by "participant/source" (camera or screen). */
  async decoded() {
    const out = {};
    if (!meeting.sub) return out;
    for (const [track, { participant, frames }] of await meeting.sub.decoded()) {
      const info = meeting.tracks.get(track);
      out[`${participant}/${info ? info.source : "camera"}`] = frames;
    }
    return out;
  },
  /** track id -> {participant, frames, width, height} of each received video (decoded). */
  async received() {
    return meeting.sub ? Object.fromEntries(await meeting.sub.decoded()) : {};
  },
  /** What the browser sends: [{source, kind, scalabilityMode, codec, framesEncoded, bytesSent}]. */
  async outbound() { return meeting.pub ? meeting.pub.outbound() : []; },
  /** Number of m-lines on the subscriber connection (they are reused, not added per track). */
  transceivers() { return meeting.sub ? meeting.sub.pc.getTransceivers().length : 0; },
  /** mid -> {participant, track, kind} of what the subscribe connection receives now. */
  receiving() {
    if (!meeting.sub) return {};
    return Object.fromEntries([...meeting.sub.bindings].map(([mid, b]) =>
      [mid, { participant: b.participant, track: b.track, kind: b.kind }]));
  },
  /** track id -> {state, layer, encoding}: the last stream-state of each received video. */
  streams() { return Object.fromEntries(meeting.streams); },
  /** track id -> {width, height}: the tile sizes last reported to the node (track-size). */
  tileSizes() { return view.grid.sizes.reported(); },
  /** What each tile shows: [{participant, source, name, video, micMuted, cameraOff, …}]. */
  tiles() { return view.grid.describe(); },
  /** The chat: [{from, name, text, time, self}]. */
  chatLog() { return view.chat.log.map(({ from, name, text, time, self }) => ({ from, name, text, time, self })); },
  /** none | pending | approved | denied | timeout | cancelled */
  requestState() { return view.stage.requestState; },
});
window.parley = parley;
window.addEventListener("error", (e) => parley.errors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => parley.errors.push(String(e.reason)));

// -- state and status -------------------------------------------------------------------
function setState(state, status) {
  parley.state = state;
  document.body.dataset.state = state;
  if (status !== undefined) $("status").textContent = status;
  parley.history.push({ state, status: $("status").textContent, at: Date.now() });
}

function show(which) {
  for (const id of ["lobby", "meeting", "ended"]) $(id).hidden = id !== which;
  document.body.dataset.view = which;
}

function banner(text) {
  $("banner").textContent = text || "";
  $("banner").hidden = !text;
}

// -- connecting and reconnecting ----------------------------------------------------------
async function connect() {
  clearTimeout(meeting.retryTimer);
  const gen = ++meeting.gen;
  Object.assign(meeting, { leaving: false, disconnect: null, removedBy: null, refusal: null });
  if (meeting.attempt === 0) setState("connecting", "Connecting…");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const signal = new Signal(`${scheme}://${location.host}/rtc`, {
    onEvent: (m) => { if (gen === meeting.gen) onEvent(m); },
    onClose: (code, reason) => { if (gen === meeting.gen) socketClosed(code, reason); },
  });
  meeting.signal = signal;
  try {
    await signal.open();
    const join = { type: "join", token: meeting.token, version: 1, media: true };
    const resume = resumeToken();
    if (resume) join.resume = resume;
    const joined = await signal.request(join, JOIN_TIMEOUT);
    if (gen === meeting.gen) await onJoined(joined, gen);
  } catch (err) {
    if (gen !== meeting.gen) return;
    // Refusals and lost sockets end in socketClosed(), which decides whether to retry.
    if (err instanceof RequestError) {
      meeting.refusal = err.code;
    } else if (!signal.closed) {
      fault("join", err);
      signal.close(4000, "join failed");
    }
  }
}

function socketClosed(code, reason) {
  teardownMedia();
  parley.ready = false;
  const end = ending(code, reason);
  if (end) {
    finish(end);
    return;
  }
  const attempt = ++meeting.attempt;
  const soon = attempt === 1 && (meeting.soon || code === CloseCode.RECONNECT);
  meeting.soon = false;
  const base = RETRY_DELAYS[Math.min(attempt - 1, RETRY_DELAYS.length - 1)];
  parley.reconnects += 1;
  setState("reconnecting", `Reconnecting… (attempt ${attempt})`);
  banner(soon ? "Moving the meeting. Reconnecting…" : "Connection lost. Reconnecting…");
  const wait = soon ? Math.random() * RECONNECT_SOON : base * (0.8 + Math.random() * 0.4);
  meeting.retryTimer = setTimeout(connect, Math.round(wait));
}

/** The last resume token while it is valid: the join then takes this page's participant
 *  back (its id, its place on stage) instead of joining as new. */
function resumeToken() {
  const { token, expiresAt } = meeting.resume;
  return token && expiresAt * 1000 - 200 > Date.now() ? token : null;
}

function keepResumeToken(m) {
  meeting.resume = { token: m.resume_token || null, expiresAt: m.resume_expires_at || 0 };
}

/** Why the meeting is over for this page, or null when it should reconnect. */
function ending(code, reason) {
  const why = meeting.disconnect ? meeting.disconnect.reason : null;
  const refusal = meeting.refusal || reason;
  if (meeting.leaving) return { state: "closed", title: "You left the meeting.", rejoin: true };
  if (why === "removed" || code === CloseCode.REMOVED) {
    const removed = meeting.removedBy || {};
    const by = removed.by ? nameOf(removed.by) : "";
    return { state: "removed", title: "You were removed from the meeting.",
             text: `${by ? `${by} removed you` : "A moderator removed you"}${removed.reason ? ` (${removed.reason})` : ""}.` };
  }
  if (why === "room_closed" || code === CloseCode.ROOM_CLOSED) {
    return { state: "ended", title: "The meeting has ended.", text: "The room was closed." };
  }
  if (why === "duplicate_identity" || code === CloseCode.REPLACED) {
    return { state: "closed", title: "You joined from somewhere else.", rejoin: true,
             text: "This meeting is open in another tab or device, so this page stopped." };
  }
  if (code === CloseCode.AUTH_FAILED) {
    return { state: "failed", title: "Could not join.",
             text: AUTH_FAILED[refusal] || `The meeting link was refused (${refusal}).` };
  }
  if (code === CloseCode.JOIN_REFUSED && JOIN_REFUSED[refusal]) {
    return { state: refusal === "removed_from_room" ? "removed" : "failed", title: "Could not join.",
             text: JOIN_REFUSED[refusal] };
  }
  return null; // node_draining, room_closed while joining, a lost socket: try again
}

function finish({ state, title, text = "", rejoin = false }) {
  clearTimeout(meeting.retryTimer);
  meeting.resume = { token: null, expiresAt: 0 }; // the session is over: a rejoin is new
  releaseLocal();
  view.grid.clear();
  banner("");
  $("ended-title").textContent = title;
  $("ended-text").textContent = text;
  $("rejoin").hidden = !rejoin;
  show("ended");
  setState(state, title);
  $("ended-title").focus();
}

async function onJoined(joined, gen) {
  meeting.attempt = 0;
  keepResumeToken(joined);
  if (joined.resumed) parley.resumed += 1;
  meeting.self = joined.participant;
  meeting.iceServers = joined.ice_servers || [];
  parley.participantId = joined.participant.id;
  parley.grants = joined.grants;
  resetRoom();
  for (const p of joined.participants) upsert(p);
  openSubscriber(gen);
  for (const m of meeting.heldOffers.splice(0)) offer(m);
  $("room").textContent = joined.room;
  document.title = `${joined.room} · Parley`;
  view.stage.reset();
  view.stage.setGrants(joined.grants);
  for (const r of joined.speaker_requests || []) view.stage.addRequest(r.participant, r.message);
  view.chat.enable(true);
  banner("");
  setState("joined", "Connected");
  show("meeting");
  refresh();
  if (joined.grants.can_publish) await startPublishing(gen);
  else releaseLocal();
  if (gen === meeting.gen) parley.ready = true;
}

/** A new subscribe connection; the node's next offer goes to it. */
function openSubscriber(gen) {
  const sub = new Subscriber(meeting.signal, meeting.iceServers, {
    bind: bindRemote,
    unbind: unbindRemote,
    data: (m) => view.chat.receive(m, nameOf),
    channel: () => {},
    failed: () => subscriberLost(gen, sub),
  });
  meeting.sub = sub;
  return sub;
}

/** This browser saw the subscribe connection fail: the node notices too (its consent
 *  window) and sends `connection-failed` with a new offer; only if it does not, rejoin. */
function subscriberLost(gen, sub) {
  setTimeout(() => {
    if (gen === meeting.gen && meeting.sub === sub) rejoin("the media connection was lost");
  }, NODE_GRACE);
}

/** The node closed the subscribe connection and is offering a new one: take it, and
 *  say so only if media is not back within QUIET_RECOVERY. */
function subscriberFailed(gen) {
  if (gen !== meeting.gen || !meeting.sub) return;
  parley.subscribeFailures += 1;
  meeting.sub.close();
  const sub = openSubscriber(gen);
  let noticed = false;
  const slow = setTimeout(() => {
    if (meeting.sub !== sub || gen !== meeting.gen) return;
    noticed = true;
    view.chat.notice("Video and sound from the others are not reaching you. Trying again…");
  }, QUIET_RECOVERY);
  sub.pc.addEventListener("connectionstatechange", () => {
    if (sub.pc.connectionState !== "connected") return;
    clearTimeout(slow);
    if (noticed && meeting.sub === sub) view.chat.notice("Video and sound from the others are back.");
    noticed = false;
  });
}

/** Drop the session and join again (a new session replaces the old one by identity). */
function rejoin(why) {
  view.chat.notice(`Reconnecting: ${why}.`);
  if (meeting.signal) meeting.signal.close(4000, "rejoin");
}

function resetRoom() {
  parley.participants.clear();
  for (const map of [meeting.tracks, meeting.quality, meeting.streams, meeting.bound]) map.clear();
  meeting.speaking = new Set();
  meeting.departed = new Set();
}

function teardownMedia() {
  if (meeting.sub) meeting.sub.close();
  if (meeting.pub) meeting.pub.close();
  meeting.sub = meeting.pub = null;
  meeting.heldOffers = [];
  parley.publishing = false;
  view.chat.enable(false);
  resetRoom();
  refresh();
}

function leave() {
  meeting.leaving = true;
  clearTimeout(meeting.retryTimer);
  $("leave").disabled = true;
  const signal = meeting.signal;
  if (!signal || signal.closed) {
    socketClosed(CloseCode.NORMAL, "left");
    return;
  }
  signal.request({ type: "leave" }, 3000).catch(() => {}).finally(() => signal.close(CloseCode.NORMAL, "left"));
}

// -- events from the node -----------------------------------------------------------------
function offer(m) {
  if (!meeting.sub) {
    meeting.heldOffers.push(m);
    return;
  }
  const { gen, sub } = { gen: meeting.gen, sub: meeting.sub };
  sub.offer(m).catch((err) => {
    if (gen !== meeting.gen || sub.closed) return;
    fault("subscriber offer", err);
    rejoin("the media offer could not be applied");
  });
}

function participantLeft(m) {
  const name = nameOf(m.participant) || m.identity;
  meeting.departed.add(m.participant);
  parley.participants.delete(m.participant);
  if (meeting.sub) meeting.sub.unbindWhere((b) => b.participant === m.participant);
  for (const [id, t] of [...meeting.tracks]) if (t.participant === m.participant) meeting.tracks.delete(id);
  view.stage.dropRequest(m.participant);
  view.chat.notice(`${name} left.`);
}

function permissionChanged(m) {
  parley.grants = m.grants;
  if (meeting.self) meeting.self = { ...meeting.self, grants: m.grants };
  view.stage.setGrants(m.grants);
  const by = m.by ? ` by ${nameOf(m.by)}` : "";
  if (m.grants.can_publish) {
    view.chat.notice(`You are on stage (${m.reason}${by}).`);
    startPublishing(meeting.gen);
  } else {
    view.chat.notice(`You are in the audience now (${m.reason}${by}).`);
    stopPublishing();
  }
}

const handlers = {
  "offer": (m) => { if (m.target === "subscriber") offer(m); },
  "participant-joined": (m) => {
    upsert(m.participant);
    view.chat.notice(`${nameOf(m.participant.id)} joined.`);
  },
  "participant-updated": (m) => {
    if (meeting.self && m.participant.id === meeting.self.id) meeting.self = m.participant;
    else upsert(m.participant);
  },
  "participant-left": participantLeft,
  "track-published": (m) => { meeting.tracks.set(m.track.id, m.track); },
  "track-unpublished": (m) => {
    meeting.tracks.delete(m.track.id);
    meeting.streams.delete(m.track.id);
    if (meeting.sub) meeting.sub.unbindWhere((b) => b.track === m.track.id);
  },
  "track-updated": (m) => { if (!isMine(m.track)) meeting.tracks.set(m.track.id, m.track); },
  "track-muted": mutedByModerator,
  "active-speakers": (m) => { meeting.speaking = new Set(m.speakers.map((s) => s.participant)); },
  "connection-quality": (m) => { for (const u of m.updates) meeting.quality.set(u.participant, u.quality); },
  "stream-state": (m) => {
    meeting.streams.set(m.track, { state: m.state, layer: m.layer, encoding: m.encoding ?? null });
  },
  "connection-failed": (m) => {
    if (m.target === "subscriber") subscriberFailed(meeting.gen);
    else publisherFailed(meeting.gen);
  },
  "data": (m) => view.chat.receive(m, nameOf),
  "permission-changed": permissionChanged,
  "speaker-request": (m) => {
    view.stage.addRequest(m.participant, m.message);
    view.chat.notice(`${m.participant.name || m.participant.identity} asks to speak.`);
  },
  "speaker-request-result": (m) => {
    if (meeting.self && m.participant === meeting.self.id) view.stage.setRequest(m.outcome);
    else view.stage.dropRequest(m.participant);
  },
  "stage-invite": (m) => view.stage.showInvite(nameOf(m.by), m.message),
  "stage-invite-result": (m) => {
    if (meeting.self && m.participant === meeting.self.id) {
      view.stage.hideInvite();
      return;
    }
    const what = { accepted: "accepted", declined: "declined" }[m.outcome] || "did not answer";
    view.chat.notice(`${nameOf(m.participant)} ${what} the invitation.`);
  },
  "removed": (m) => { meeting.removedBy = m; },
  "disconnect": (m) => { meeting.disconnect = m; },
  "resume-token": keepResumeToken,
  "reconnect": () => { meeting.soon = true; },
  "error": (m) => { parley.errors.push(`${m.code}: ${m.message}`); }, // never shown as is
};

function onEvent(m) {
  const handle = handlers[m.type];
  if (handle) handle(m);
  refresh();
}

function upsert(p) {
  if (meeting.self && p.id === meeting.self.id) return;
  parley.participants.set(p.id, p);
  for (const t of p.tracks || []) meeting.tracks.set(t.id, t);
}

// -- data ---------------------------------------------------------------------------------
function sendData(message) {
  if (meeting.sub && meeting.sub.sendData(message)) return true;
  return !!meeting.signal && meeting.signal.send({ type: "data", ...message });
}

// -- start --------------------------------------------------------------------------------
function startMeeting(token) {
  meeting.token = token;
  meeting.resume = { token: null, expiresAt: 0 };
  meeting.attempt = 0;
  $("settings-panel").append($("devices"));
  show("meeting");
  connect();
}

async function start() {
  const params = new URLSearchParams(location.search);
  if (params.get("token")) {
    startMeeting(params.get("token"));
    return;
  }
  show("lobby");
  setState("lobby", "Not connected");
  if (!(await developmentMode())) {
    $("join-form").hidden = true;
    $("no-token").hidden = false;
    return;
  }
  $("join-room").value = params.get("room") || "demo";
  $("join-name").focus();
  await startPreview();
}

$("join-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const button = $("join-button");
  button.disabled = true;
  $("join-error").textContent = "";
  try {
    const { token } = await devToken($("join-room").value.trim(), $("join-name").value.trim(),
                                     $("join-role").value);
    history.replaceState(null, "", `?token=${encodeURIComponent(token)}`);
    preview(null);
    startMeeting(token);
  } catch (err) {
    $("join-error").textContent = `Could not join: ${err.message || err}`;
  } finally {
    button.disabled = false;
  }
});
$("mic").addEventListener("click", toggleMic);
$("camera").addEventListener("click", toggleCamera);
$("screen").addEventListener("click", toggleScreen);
$("leave").addEventListener("click", leave);
$("devices-retry").addEventListener("click", () => retryDevices().catch((err) => fault("devices", err)));
$("rejoin").addEventListener("click", () => {
  meeting.attempt = 0;
  show("meeting");
  connect();
});

start().catch((err) => setState("failed", `Error: ${fault("start", err)}`));
