// The Parley meeting page. Join with /?token=…, or with the form on a node in
// development mode; publish camera, microphone and screen; see and hear the
// others; chat; take part in the stage (requests to speak, moderation).
// The protocol is described in docs/protocol.md.
//
// Modules: signal.js (the socket), publisher.js / subscriber.js (the two peer
// connections), grid.js (tiles), chat.js, stage.js, lobby.js (before joining),
// media.js (devices, screen). This file holds the meeting's state, reacts to
// the node's events and reconnects when the socket or the media connection
// drops. `window.parley` exposes the state to tests (tests/e2e).

import { Chat } from "./chat.js";
import { Grid } from "./grid.js";
import { Devices, developmentMode, devToken, preview } from "./lobby.js";
import { hooks, openDevice, openDevices, describeMediaError, screenTrack } from "./media.js";
import { Publisher } from "./publisher.js";
import { RequestError, Signal } from "./signal.js";
import { StageUI } from "./stage.js";
import { Subscriber } from "./subscriber.js";

const $ = (id) => document.getElementById(id);
const RETRY_DELAYS = [500, 1000, 2000, 4000, 8000]; // ms, then 8 s on every further attempt
const JOIN_REFUSED = {
  room_full: "The meeting is full.",
  stage_full: "The stage is full; ask for a listener link instead.",
  removed_from_room: "You were removed from this meeting.",
};
const AUTH_FAILED = {
  token_expired: "Your meeting link has expired. Ask for a new one.",
  token_not_yet_valid: "Your meeting link is not valid yet.",
};

const parley = {
  state: "idle", // idle | lobby | connecting | joined | reconnecting | closed | removed | ended | failed
  participantId: null,
  grants: null,
  publishing: false, // the publish connection carries this page's tracks
  ready: false, // joined, and published if allowed to
  reconnects: 0,
  history: [], // [{state, status, at}] every state change, for tests
  errors: [], // uncaught page errors and server errors
  hooks, // test hooks (media.js)
  participants: new Map(),
  /** framesDecoded of the video received from each remote participant (all sources summed). */
  async stats() {
    const out = {};
    if (!meeting.sub) return out;
    for (const { participant, frames } of (await meeting.sub.decoded()).values()) {
      out[participant] = (out[participant] || 0) + frames;
    }
    return out;
  },
  /** framesDecoded by "participant/source" (source camera or screen). */
  async decoded() {
    const out = {};
    if (!meeting.sub) return out;
    for (const [track, { participant, frames }] of await meeting.sub.decoded()) {
      const info = meeting.tracks.get(track);
      out[`${participant}/${info ? info.source : "camera"}`] = frames;
    }
    return out;
  },
  /** What the browser sends: [{source, kind, scalabilityMode, codec, framesEncoded}]. */
  async outbound() { return meeting.pub ? meeting.pub.outbound() : []; },
  /** Number of m-lines on the subscriber connection (they are reused, not added per track). */
  transceivers() { return meeting.sub ? meeting.sub.pc.getTransceivers().length : 0; },
  /** mid -> {participant, track, kind} of what the subscribe connection receives now. */
  receiving() {
    if (!meeting.sub) return {};
    return Object.fromEntries([...meeting.sub.bindings].map(([mid, b]) =>
      [mid, { participant: b.participant, track: b.track, kind: b.kind }]));
  },
  tiles() { return grid.describe(); },
  chatLog() { return chat.log.map(({ from, name, text, time, self }) => ({ from, name, text, time, self })); },
  requestState() { return stage.requestState; },
};
window.parley = parley;
window.addEventListener("error", (e) => parley.errors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => parley.errors.push(String(e.reason)));

const meeting = {
  token: null,
  room: "",
  gen: 0, // bumped on every connection attempt; stale callbacks compare theirs
  attempt: 0,
  retryTimer: null,
  signal: null,
  sub: null,
  pub: null,
  iceServers: [],
  self: null, // this page's participant
  leaving: false,
  disconnect: null, // the last `disconnect` event
  removedBy: null, // the `removed` event
  tracks: new Map(), // track id -> Track (others' tracks)
  quality: new Map(), // participant id -> quality
  streams: new Map(), // track id -> stream-state
  speaking: new Set(),
  departed: new Set(),
  bound: new Map(), // mid -> {key, participant, kind, track}
};
const local = { audio: null, video: null, screen: null, micMuted: false, cameraOff: false };

const grid = new Grid($("grid"), (pid, action) => moderate(pid, action));
const chat = new Chat({ list: $("messages"), form: $("chat"), input: $("chat-text") }, sendData);
const stage = new StageUI({
  request: () => act({ type: "request-to-speak" }, (r) => stage.setRequest(r.status)),
  cancel: () => act({ type: "cancel-speaker-request" }, () => stage.setRequest("cancelled")),
  approve: (pid) => act({ type: "approve-speaker", participant: pid }, () => stage.dropRequest(pid)),
  deny: (pid) => act({ type: "deny-speaker", participant: pid }, () => stage.dropRequest(pid)),
  invite: (pid) => act({ type: "invite-to-stage", participant: pid },
    () => chat.notice(`You invited ${nameOf(pid)} on stage.`)),
  respond: (accept) => act({ type: "respond-to-invite", accept }),
});
const devices = new Devices((kind, id) => switchDevice(kind, id));

// -- state and status -------------------------------------------------------------
function setState(state, status) {
  parley.state = state;
  document.body.dataset.state = state;
  if (status !== undefined) $("status").textContent = status;
  parley.history.push({ state, status: $("status").textContent, at: Date.now() });
}

function show(view) {
  for (const id of ["lobby", "meeting", "ended"]) $(id).hidden = id !== view;
  document.body.dataset.view = view;
}

function banner(text) {
  $("banner").textContent = text || "";
  $("banner").hidden = !text;
}

function nameOf(pid) {
  if (!pid) return "";
  if (meeting.self && pid === meeting.self.id) return meeting.self.name || meeting.self.identity;
  const p = parley.participants.get(pid);
  return p ? (p.name || p.identity) : "";
}

/** Send a request; failures become a notice and an entry in parley.errors. */
function act(message, then) {
  if (!meeting.signal) return Promise.resolve();
  return meeting.signal.request(message).then((reply) => { if (then) then(reply); }).catch((err) => {
    parley.errors.push(String(err.message || err));
    chat.notice(`${message.type} failed: ${err.message || err}`);
  });
}

// -- connecting and reconnecting ----------------------------------------------------
function wsUrl() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/rtc`;
}

async function connect() {
  clearTimeout(meeting.retryTimer);
  const gen = ++meeting.gen;
  meeting.leaving = false;
  meeting.disconnect = null;
  meeting.removedBy = null;
  if (meeting.attempt === 0) setState("connecting", "Connecting…");
  const signal = new Signal(wsUrl(), {
    onEvent: (m) => { if (gen === meeting.gen) onEvent(m); },
    onClose: (code, reason) => { if (gen === meeting.gen) socketClosed(code, reason); },
  });
  meeting.signal = signal;
  try {
    await signal.open();
    const joined = await signal.request({ type: "join", token: meeting.token, version: 1, media: true }, 10000);
    if (gen !== meeting.gen) return;
    await onJoined(joined, gen);
  } catch (err) {
    if (gen !== meeting.gen) return;
    // Refusals and lost sockets end in socketClosed(), which decides whether to retry.
    if (err instanceof RequestError) meeting.refusal = err.code;
    else if (!signal.closed) signal.close(4000, "join failed");
    if (!(err instanceof RequestError) && !/signalling closed/.test(String(err.message))) {
      parley.errors.push(String(err.message || err));
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
  const base = RETRY_DELAYS[Math.min(attempt - 1, RETRY_DELAYS.length - 1)];
  const delay = Math.round(base * (0.8 + Math.random() * 0.4));
  parley.reconnects += 1;
  setState("reconnecting", `Reconnecting… (attempt ${attempt})`);
  banner("Connection lost. Reconnecting…");
  meeting.retryTimer = setTimeout(connect, delay);
}

/** Why the meeting is over for this page, or null when it should reconnect. */
function ending(code, reason) {
  const why = meeting.disconnect ? meeting.disconnect.reason : null;
  const refusal = meeting.refusal || reason;
  meeting.refusal = null;
  if (meeting.leaving) return { state: "closed", title: "You left the meeting.", rejoin: true };
  if (why === "removed" || code === 4006) {
    const by = meeting.removedBy && meeting.removedBy.by ? nameOf(meeting.removedBy.by) : "";
    const because = meeting.removedBy && meeting.removedBy.reason ? ` (${meeting.removedBy.reason})` : "";
    return { state: "removed", title: "You were removed from the meeting.",
             text: `${by ? `${by} removed you` : "A moderator removed you"}${because}.` };
  }
  if (why === "room_closed" || code === 4007) return { state: "ended", title: "The meeting has ended.", text: "The room was closed." };
  if (why === "duplicate_identity" || code === 4005) {
    return { state: "closed", title: "You joined from somewhere else.",
             text: "This meeting is open in another tab or device, so this page stopped.", rejoin: true };
  }
  if (code === 4001) {
    return { state: "failed", title: "Could not join.", text: AUTH_FAILED[refusal] || `The meeting link was refused (${refusal}).` };
  }
  if (code === 4009 && JOIN_REFUSED[refusal]) {
    return { state: refusal === "removed_from_room" ? "removed" : "failed", title: "Could not join.", text: JOIN_REFUSED[refusal] };
  }
  return null;
}

function finish({ state, title, text = "", rejoin = false }) {
  clearTimeout(meeting.retryTimer);
  releaseLocal();
  grid.clear();
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
  meeting.self = joined.participant;
  meeting.room = joined.room;
  meeting.iceServers = joined.ice_servers || [];
  parley.participantId = joined.participant.id;
  parley.grants = joined.grants;
  resetRoom();
  for (const p of joined.participants) upsert(p);
  meeting.sub = new Subscriber(meeting.signal, meeting.iceServers, {
    bind: bindRemote, unbind: unbindRemote,
    data: (m) => chat.receive(m, nameOf),
    channel: () => chat.enable(true),
    failed: () => { if (gen === meeting.gen) rejoin("media connection lost"); },
  });
  for (const m of meeting.heldOffers.splice(0)) offer(m);
  $("room").textContent = joined.room;
  document.title = `${joined.room} · Parley`;
  stage.reset();
  stage.setGrants(joined.grants);
  for (const r of joined.speaker_requests || []) stage.addRequest(r.participant, r.message);
  chat.enable(true);
  banner("");
  setState("joined", `In ${joined.room}`);
  show("meeting");
  refresh();
  if (joined.grants.can_publish) await startPublishing(gen);
  else releaseLocal();
  if (gen === meeting.gen) parley.ready = true;
}
meeting.heldOffers = [];

/** Drop the session and join again (a new session replaces the old one by identity). */
function rejoin(why) {
  chat.notice(`Reconnecting: ${why}.`);
  if (meeting.signal) meeting.signal.close(4000, why);
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
  chat.enable(false);
  resetRoom();
  refresh();
}

function leave() {
  meeting.leaving = true;
  $("leave").disabled = true;
  const signal = meeting.signal;
  if (!signal) return;
  signal.request({ type: "leave" }, 3000).catch(() => {}).finally(() => signal.close(1000, "left"));
}

// -- events from the node -------------------------------------------------------------
function offer(m) {
  if (!meeting.sub) { meeting.heldOffers.push(m); return; }
  const gen = meeting.gen;
  meeting.sub.offer(m).catch((err) => {
    if (gen !== meeting.gen || meeting.sub === null || meeting.sub.closed) return;
    parley.errors.push(`subscriber offer: ${err.message || err}`);
    rejoin("could not apply the media offer");
  });
}

const handlers = {
  "offer": (m) => { if (m.target === "subscriber") offer(m); },
  "participant-joined": (m) => { upsert(m.participant); chat.notice(`${nameOf(m.participant.id)} joined.`); },
  "participant-updated": (m) => {
    if (meeting.self && m.participant.id === meeting.self.id) meeting.self = m.participant;
    else upsert(m.participant);
  },
  "participant-left": (m) => {
    const name = nameOf(m.participant) || m.identity;
    meeting.departed.add(m.participant);
    parley.participants.delete(m.participant);
    if (meeting.sub) meeting.sub.unbindWhere((b) => b.participant === m.participant);
    for (const [id, t] of [...meeting.tracks]) if (t.participant === m.participant) meeting.tracks.delete(id);
    stage.dropRequest(m.participant);
    chat.notice(`${name} left.`);
  },
  "track-published": (m) => { meeting.tracks.set(m.track.id, m.track); },
  "track-unpublished": (m) => {
    meeting.tracks.delete(m.track.id);
    meeting.streams.delete(m.track.id);
    if (meeting.sub) meeting.sub.unbindWhere((b) => b.track === m.track.id);
  },
  "track-updated": (m) => { if (!isMine(m.track)) meeting.tracks.set(m.track.id, m.track); },
  "track-muted": (m) => mutedByModerator(m),
  "active-speakers": (m) => { meeting.speaking = new Set(m.speakers.map((s) => s.participant)); },
  "connection-quality": (m) => { for (const u of m.updates) meeting.quality.set(u.participant, u.quality); },
  "stream-state": (m) => { meeting.streams.set(m.track, m.state); },
  "connection-failed": (m) => {
    if (m.target === "subscriber") rejoin("media connection failed");
    else publisherFailed(meeting.gen);
  },
  "data": (m) => chat.receive(m, nameOf),
  "permission-changed": (m) => permissionChanged(m),
  "speaker-request": (m) => {
    stage.addRequest(m.participant, m.message);
    chat.notice(`${nameOf(m.participant.id) || m.participant.identity} asks to speak.`);
  },
  "speaker-request-result": (m) => {
    if (meeting.self && m.participant === meeting.self.id) stage.setRequest(m.outcome);
    else stage.dropRequest(m.participant);
  },
  "stage-invite": (m) => stage.showInvite(nameOf(m.by), m.message),
  "stage-invite-result": (m) => {
    if (meeting.self && m.participant === meeting.self.id) stage.hideInvite();
    else chat.notice(`${nameOf(m.participant)} ${m.outcome === "accepted" ? "accepted" : m.outcome === "declined" ? "declined" : "did not answer"} the invitation.`);
  },
  "removed": (m) => { meeting.removedBy = m; },
  "disconnect": (m) => { meeting.disconnect = m; },
  "error": (m) => { parley.errors.push(`${m.code}: ${m.message}`); },
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

function isMine(track) { return meeting.self && track.participant === meeting.self.id; }

function permissionChanged(m) {
  parley.grants = m.grants;
  if (meeting.self) meeting.self = { ...meeting.self, grants: m.grants };
  stage.setGrants(m.grants);
  const by = m.by ? ` by ${nameOf(m.by)}` : "";
  if (m.grants.can_publish) {
    chat.notice(`You are on stage (${m.reason}${by}).`);
    startPublishing(meeting.gen);
  } else {
    chat.notice(`You are in the audience now (${m.reason}${by}).`);
    stopPublishing();
  }
}

function mutedByModerator(m) {
  const source = meeting.pub ? meeting.pub.sourceOf(m.track.id) : null;
  const by = m.by ? nameOf(m.by) : "A moderator";
  if (source === "microphone") {
    local.micMuted = m.track.muted;
    if (local.audio) local.audio.enabled = !m.track.muted;
    chat.notice(`${by} ${m.track.muted ? "muted" : "unmuted"} your microphone.`);
  } else if (source === "camera" && m.track.muted && !local.cameraOff) {
    local.cameraOff = true;
    if (meeting.pub) meeting.pub.replace("camera", null);
    if (local.video) { local.video.stop(); local.video = null; }
    chat.notice(`${by} turned your camera off.`);
  } else if (source === "screen" && m.track.muted) {
    chat.notice(`${by} hid your shared screen.`);
  }
  updateControls();
}

// -- receiving ----------------------------------------------------------------------------
function keyFor(participant, source) {
  return source === "screen" ? `${participant}/screen` : participant;
}

function bindRemote(mid, b, media) {
  if (meeting.departed.has(b.participant)) return false;
  const info = meeting.tracks.get(b.track);
  const source = info ? info.source : b.kind === "audio" ? "microphone" : "camera";
  const key = keyFor(b.participant, source);
  meeting.bound.set(mid, { key, participant: b.participant, kind: b.kind, track: b.track, source });
  refresh();
  grid.attach(key, mid, b.kind, media, b.track);
  return true;
}

function unbindRemote(mid) {
  meeting.bound.delete(mid);
  grid.detach(mid);
  refresh();
}

// -- the grid ---------------------------------------------------------------------------
function onStage(p) { return !!(p.grants && p.grants.can_publish) || (p.tracks || []).length > 0; }

function trackOf(pid, source) {
  for (const t of meeting.tracks.values()) if (t.participant === pid && t.source === source) return t;
  return null;
}

function menuFor(p) {
  if (!parley.grants || !parley.grants.room_admin) return null;
  const items = [];
  const mic = trackOf(p.id, "microphone");
  const cam = trackOf(p.id, "camera");
  if (mic && !mic.muted) items.push({ label: "Mute microphone", action: "mute-mic" });
  if (cam && !cam.muted) items.push({ label: "Turn camera off", action: "mute-camera" });
  if (p.grants && p.grants.can_publish) items.push({ label: "Move to audience", action: "move-to-audience" });
  items.push({ label: "Remove from meeting", action: "remove" });
  return items;
}

function remoteModel(pid, p) {
  const cam = trackOf(pid, "camera");
  const mic = trackOf(pid, "microphone");
  return {
    key: pid, participant: pid, source: "camera", name: p ? (p.name || p.identity) : "Guest",
    micMuted: !mic || mic.muted, cameraOff: !!(cam && cam.muted),
    speaking: meeting.speaking.has(pid), quality: meeting.quality.get(pid),
    paused: !!cam && meeting.streams.get(cam.id) === "paused_bandwidth", stalled: !!(cam && cam.stalled),
    menu: p ? menuFor(p) : null,
  };
}

function models() {
  const selfId = meeting.self ? meeting.self.id : null;
  const selfName = meeting.self ? (meeting.self.name || meeting.self.identity) : "You";
  const screens = [];
  const people = [];
  if (local.screen) screens.push({ key: "local/screen", participant: "local", source: "screen", name: selfName, local: true });
  if (parley.grants && parley.grants.can_publish && meeting.sub) {
    people.push({ key: "local", participant: "local", source: "camera", name: selfName, local: true,
                  micMuted: local.micMuted || !local.audio, cameraOff: local.cameraOff || !local.video,
                  speaking: meeting.speaking.has(selfId), quality: meeting.quality.get(selfId) });
  }
  const remote = [...parley.participants.values()].sort((a, b) => a.joined_at - b.joined_at);
  const seen = new Set();
  for (const p of remote) {
    if (!onStage(p)) continue;
    seen.add(p.id);
    people.push(remoteModel(p.id, p));
  }
  for (const b of meeting.bound.values()) {
    if (b.source === "screen") continue;
    if (!seen.has(b.participant)) { seen.add(b.participant); people.push(remoteModel(b.participant, null)); }
  }
  for (const t of meeting.tracks.values()) {
    if (t.source !== "screen" || isMine(t)) continue;
    const p = parley.participants.get(t.participant);
    screens.push({ key: keyFor(t.participant, "screen"), participant: t.participant, source: "screen",
                   name: p ? (p.name || p.identity) : "Guest", paused: meeting.streams.get(t.id) === "paused_bandwidth",
                   stalled: t.stalled });
  }
  return [...screens, ...people];
}

function refresh() {
  if (!meeting.sub) {
    grid.render([]);
  } else {
    grid.render(models());
    syncLocalMedia();
  }
  const audience = [...parley.participants.values()].filter((p) => !onStage(p));
  if (meeting.self && parley.grants && !parley.grants.can_publish) audience.unshift({ ...meeting.self, self: true });
  stage.renderAudience(audience, !!(parley.grants && parley.grants.room_admin));
  updateControls();
}

function syncLocalMedia() {
  const attached = (mid) => grid.media.get(mid);
  const video = local.cameraOff ? null : local.video;
  const cam = attached("local-camera");
  if (video && (!cam || cam.element.srcObject.getTracks()[0] !== video)) grid.attach("local", "local-camera", "video", video);
  else if (!video && cam) grid.detach("local-camera");
  const screen = attached("local-screen");
  if (local.screen && (!screen || screen.element.srcObject.getTracks()[0] !== local.screen)) {
    grid.attach("local/screen", "local-screen", "video", local.screen);
  } else if (!local.screen && screen) grid.detach("local-screen");
}

// -- publishing -------------------------------------------------------------------------
async function openMissing({ audio = true, video = true } = {}) {
  const want = { audio: audio && !local.audio, video: video && !local.video && !local.cameraOff };
  if (!want.audio && !want.video) return;
  const got = await openDevices({ ...want, audioId: devices.audioId, videoId: devices.videoId });
  if (got.audio) local.audio = got.audio;
  if (got.video) local.video = got.video;
  devices.using(got.audio);
  devices.using(got.video);
  devices.showProblems(got.problems);
  if (got.problems.length) chat.notice(got.problems.join(" "));
  await devices.fill();
}

async function startPublishing(gen) {
  if (meeting.pub || !meeting.signal) return;
  const pub = new Publisher(meeting.signal, meeting.iceServers, () => publisherFailed(gen));
  meeting.pub = pub;
  try {
    await openMissing();
    if (gen !== meeting.gen || meeting.pub !== pub) return;
    if (local.audio) local.audio.enabled = !local.micMuted;
    const items = [];
    if (local.audio) items.push({ track: local.audio, source: "microphone" });
    if (local.video && !local.cameraOff) items.push({ track: local.video, source: "camera" });
    if (local.screen) items.push({ track: local.screen, source: "screen" });
    if (items.length) await pub.add(items);
    if (local.micMuted && pub.has("microphone")) {
      await meeting.signal.request({ type: "mute-track", track: pub.trackId("microphone"), muted: true });
    }
    if (meeting.pub === pub) parley.publishing = true;
  } catch (err) {
    if (gen !== meeting.gen || meeting.pub !== pub) return;
    parley.errors.push(`publish: ${err.message || err}`);
    chat.notice(`Could not publish: ${err.message || err}`);
    pub.close();
    meeting.pub = null;
  }
  refresh();
}

function publisherFailed(gen) {
  if (gen !== meeting.gen || !meeting.pub) return;
  meeting.pub.close();
  meeting.pub = null;
  parley.publishing = false;
  if (parley.grants && parley.grants.can_publish) {
    chat.notice("Sending media failed; starting again.");
    startPublishing(gen);
  }
}

function stopPublishing() {
  if (meeting.pub) meeting.pub.close();
  meeting.pub = null;
  parley.publishing = false;
  releaseLocal();
  refresh();
}

/** Stop every local device (camera light off). Mute and camera choices are kept. */
function releaseLocal() {
  for (const kind of ["audio", "video", "screen"]) {
    if (local[kind]) local[kind].stop();
    local[kind] = null;
  }
  preview(null);
}

async function toggleMic() {
  local.micMuted = !local.micMuted;
  if (local.audio) local.audio.enabled = !local.micMuted;
  updateControls();
  const pub = meeting.pub;
  if (!pub) return;
  if (!pub.has("microphone") && !local.micMuted) {
    await openMissing({ video: false });
    if (local.audio && meeting.pub === pub) await pub.add([{ track: local.audio, source: "microphone" }]).catch(reportPublish);
  } else if (pub.has("microphone")) {
    await act({ type: "mute-track", track: pub.trackId("microphone"), muted: local.micMuted });
  }
  refresh();
}

async function toggleCamera() {
  const pub = meeting.pub;
  if (!local.cameraOff) {
    local.cameraOff = true;
    updateControls();
    if (pub && pub.has("camera")) {
      await act({ type: "mute-track", track: pub.trackId("camera"), muted: true });
      await pub.replace("camera", null);
    }
    if (local.video) local.video.stop();
    local.video = null;
  } else {
    local.cameraOff = false;
    updateControls();
    try {
      local.video = await openDevice("video", devices.videoId);
    } catch (err) {
      local.cameraOff = true;
      devices.showProblems([describeMediaError(err, "Camera")]);
      refresh();
      return;
    }
    if (pub && meeting.pub === pub) {
      if (pub.has("camera")) {
        await pub.replace("camera", local.video);
        await act({ type: "mute-track", track: pub.trackId("camera"), muted: false });
      } else {
        await pub.add([{ track: local.video, source: "camera" }]).catch(reportPublish);
      }
    }
  }
  refresh();
}

async function toggleScreen() {
  const pub = meeting.pub;
  if (local.screen) {
    const track = local.screen;
    local.screen = null;
    track.stop();
    refresh();
    if (pub && pub.has("screen")) await pub.remove("screen").catch(reportPublish);
    return;
  }
  let track;
  try {
    track = await screenTrack();
  } catch (err) {
    if (err.name !== "NotAllowedError") chat.notice(`Screen sharing is not available: ${err.message || err}`);
    return;
  }
  local.screen = track;
  track.addEventListener("ended", () => { if (local.screen === track) toggleScreen(); });
  refresh();
  if (pub && meeting.pub === pub) await pub.add([{ track, source: "screen" }]).catch(reportPublish);
  refresh();
}

function reportPublish(err) {
  parley.errors.push(`publish: ${err.message || err}`);
  chat.notice(`Could not publish: ${err.message || err}`);
}

async function switchDevice(kind, deviceId) {
  if (document.body.dataset.view === "lobby") {
    await startPreview({ [kind === "audio" ? "video" : "audio"]: false });
    return;
  }
  if (!local[kind] || (kind === "video" && local.cameraOff)) return;
  let track;
  try {
    track = await openDevice(kind, deviceId);
  } catch (err) {
    devices.showProblems([describeMediaError(err, kind === "audio" ? "Microphone" : "Camera")]);
    return;
  }
  const old = local[kind];
  local[kind] = track;
  if (kind === "audio") track.enabled = !local.micMuted;
  if (meeting.pub) await meeting.pub.replace(kind === "audio" ? "microphone" : "camera", track);
  old.stop();
  devices.showProblems([]);
  refresh();
}

function updateControls() {
  const canPublish = !!(parley.grants && parley.grants.can_publish);
  const mic = $("mic");
  mic.textContent = local.micMuted ? "Unmute microphone" : "Mute microphone";
  mic.classList.toggle("off", local.micMuted);
  const camera = $("camera");
  camera.textContent = local.cameraOff ? "Turn camera on" : "Turn camera off";
  camera.classList.toggle("off", local.cameraOff);
  const screen = $("screen");
  screen.textContent = local.screen ? "Stop sharing" : "Share screen";
  screen.classList.toggle("on", !!local.screen);
  for (const b of [mic, camera, screen]) {
    b.hidden = !canPublish;
    b.disabled = !meeting.pub;
  }
  $("leave").disabled = parley.state !== "joined" && parley.state !== "reconnecting";
}

// -- moderation ----------------------------------------------------------------------------
function moderate(pid, action) {
  const name = nameOf(pid);
  if (action === "mute-mic" || action === "mute-camera") {
    const track = trackOf(pid, action === "mute-mic" ? "microphone" : "camera");
    if (track) act({ type: "mute-track", track: track.id, muted: true });
  } else if (action === "move-to-audience") {
    act({ type: "move-to-audience", participant: pid }, () => chat.notice(`${name} moved to the audience.`));
  } else if (action === "remove") {
    if (window.confirm(`Remove ${name} from the meeting?`)) {
      act({ type: "remove-participant", participant: pid }, () => chat.notice(`${name} was removed.`));
    }
  }
}

// -- data ------------------------------------------------------------------------------------
function sendData(message) {
  if (meeting.sub && meeting.sub.sendData(message)) return true;
  return !!meeting.signal && meeting.signal.send({ type: "data", ...message });
}

// -- start -----------------------------------------------------------------------------------
async function startPreview({ audio = true, video = true } = {}) {
  for (const kind of ["audio", "video"]) {
    if ((kind === "audio" ? audio : video) && local[kind]) { local[kind].stop(); local[kind] = null; }
  }
  const got = await openDevices({ audio: audio, video: video, audioId: devices.audioId, videoId: devices.videoId });
  if (audio) local.audio = got.audio;
  if (video) local.video = got.video;
  devices.using(got.audio);
  devices.using(got.video);
  devices.showProblems(got.problems);
  preview(local.video);
  await devices.fill();
}

function startMeeting(token) {
  meeting.token = token;
  $("settings-panel").append($("devices"));
  show("meeting");
  meeting.attempt = 0;
  connect();
}

async function start() {
  const token = new URLSearchParams(location.search).get("token");
  if (token) {
    startMeeting(token);
    return;
  }
  show("lobby");
  setState("lobby", "Not connected");
  if (!(await developmentMode())) {
    $("join-form").hidden = true;
    $("no-token").hidden = false;
    return;
  }
  $("join-room").value = new URLSearchParams(location.search).get("room") || "demo";
  $("join-name").focus();
  await startPreview();
}

$("join-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const button = $("join-button");
  button.disabled = true;
  $("join-error").textContent = "";
  try {
    const { token } = await devToken($("join-room").value.trim(), $("join-name").value.trim(), $("join-role").value);
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
$("rejoin").addEventListener("click", () => { meeting.attempt = 0; show("meeting"); connect(); });

start().catch((err) => {
  parley.errors.push(String(err.message || err));
  setState("failed", `Error: ${err.message || err}`);
});
