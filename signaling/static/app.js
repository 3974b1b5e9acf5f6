// The Parley meeting page: join with ?token=…, publish camera and microphone,
// show every other participant. The protocol is described in docs/protocol.md.
//
// Two peer connections: "publisher" (this page offers, the node answers) and
// "subscriber" (the node offers whenever what this page receives changes, this
// page answers). Subscriber m-lines are reused: the `tracks` map of the latest
// offer says which participant's track each mid carries.

const $ = (id) => document.getElementById(id);

const parley = {
  state: "idle", // idle | connecting | joined | closed | failed
  participantId: null,
  participants: new Map(), // remote participant id -> participant info
  grants: null,
  publishing: false,
  offersAnswered: 0,
  errors: [], // uncaught page errors and server errors
  /** framesDecoded of the video received from each remote participant, by participant id. */
  async stats() {
    const out = {};
    if (!sub) return out;
    const report = await sub.getStats();
    report.forEach((s) => {
      if (s.type !== "inbound-rtp" || s.kind !== "video") return;
      const binding = bindings.get(s.mid);
      if (!binding) return;
      out[binding.participant] = (out[binding.participant] || 0) + (s.framesDecoded || 0);
    });
    return out;
  },
  /** Number of m-lines on the subscriber connection (they are reused, not added per track). */
  transceivers() { return sub ? sub.getTransceivers().length : 0; },
  /** mid -> {participant, track, kind} of what the subscriber connection currently receives. */
  receiving() {
    return Object.fromEntries([...bindings].map(([mid, b]) =>
      [mid, { participant: b.participant, track: b.track, kind: b.kind }]));
  },
};
window.parley = parley;
window.addEventListener("error", (e) => parley.errors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => parley.errors.push(String(e.reason)));

let ws = null;
let nextId = 1;
const pending = new Map(); // request id -> {resolve, reject}
let iceServers = [];
let pub = null; // publisher RTCPeerConnection
let sub = null; // subscriber RTCPeerConnection
let channel = null; // the "parley" data channel (created by the node)
let mapping = {}; // mid -> {track, participant, kind} from the latest subscriber offer
const bindings = new Map(); // mid -> {participant, track, kind, element, media}
const tiles = new Map(); // participant id -> tile element
const departed = new Set(); // participants that left (an offer in flight may still list them)
const local = { stream: null, published: new Map() }; // kind -> {trackId, media}
const held = { publisher: [], subscriber: [] }; // candidates before the remote side can use them
const ready = { publisher: false, subscriber: false };
let offers = Promise.resolve();

function setStatus(text) { $("status").textContent = text; }

function note(text) {
  const li = document.createElement("li");
  li.textContent = text;
  $("messages").append(li);
  li.scrollIntoView({ block: "nearest" });
}

// -- signalling ----------------------------------------------------------------
function send(message) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
}

function request(message) {
  const id = String(nextId++);
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    send({ ...message, id });
  });
}

function connect(token) {
  parley.state = "connecting";
  ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/rtc`);
  ws.onopen = () => join(token).catch(fail);
  ws.onmessage = (ev) => onMessage(JSON.parse(ev.data));
  ws.onclose = (ev) => {
    for (const { reject } of pending.values()) reject(new Error("signalling closed"));
    pending.clear();
    if (parley.state !== "failed") parley.state = "closed";
    setStatus(`disconnected${ev.reason ? ` (${ev.reason})` : ""}`);
    teardown();
  };
}

async function join(token) {
  const joined = await request({ type: "join", token, version: 1, media: true });
  parley.participantId = joined.participant.id;
  parley.grants = joined.grants;
  iceServers = joined.ice_servers || [];
  $("room").textContent = joined.room;
  for (const p of joined.participants) addParticipant(p);
  subscriber();
  parley.state = "joined";
  setStatus("joined");
  $("leave").disabled = false;
  if (joined.grants.can_publish) await publish();
}

function onMessage(m) {
  if (m.id !== undefined && pending.has(m.id)) {
    const { resolve, reject } = pending.get(m.id);
    pending.delete(m.id);
    if (m.type === "error") reject(new Error(`${m.code}: ${m.message}`));
    else resolve(m);
    return;
  }
  switch (m.type) {
    case "offer":
      if (m.target === "subscriber") offers = offers.then(() => applyOffer(m)).catch(fail);
      break;
    case "participant-joined": case "participant-updated": addParticipant(m.participant); break;
    case "participant-left": removeParticipant(m.participant); break;
    case "track-unpublished": unbindTrack(m.track.id); break;
    case "active-speakers": showSpeakers(m.speakers.map((s) => s.participant)); break;
    case "data": showData(m); break;
    case "disconnect": setStatus(`disconnected: ${m.message || m.reason}`); break;
    case "connection-failed": setStatus(`media connection failed (${m.target})`); break;
    case "error": parley.errors.push(`${m.code}: ${m.message}`); break;
  }
}

function fail(err) {
  parley.state = "failed";
  parley.errors.push(String(err && err.message ? err.message : err));
  setStatus(`error: ${err && err.message ? err.message : err}`);
}

// -- ICE -------------------------------------------------------------------------
function trickle(target, c) {
  const candidate = c && c.candidate
    ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } : null;
  if (ready[target]) send({ type: "candidate", target, candidate });
  else held[target].push(candidate);
}

function release(target) {
  ready[target] = true;
  for (const candidate of held[target].splice(0)) send({ type: "candidate", target, candidate });
}

// -- receiving -------------------------------------------------------------------
function subscriber() {
  if (sub) return sub;
  sub = new RTCPeerConnection({ iceServers });
  sub.onicecandidate = (e) => trickle("subscriber", e.candidate);
  sub.ontrack = (e) => {
    // Fires again when a reused m-line starts sending another participant's track.
    const mid = e.transceiver.mid;
    if (mapping[mid]) bind(mid, mapping[mid], e.transceiver.receiver.track);
  };
  sub.ondatachannel = (e) => { if (e.channel.label === "parley") openChannel(e.channel); };
  sub.onconnectionstatechange = () => {
    if (sub && sub.connectionState === "failed") setStatus("media connection failed");
  };
  return sub;
}

async function applyOffer(m) {
  const pc = subscriber();
  mapping = m.tracks || {};
  await pc.setRemoteDescription({ type: "offer", sdp: m.sdp });
  await pc.setLocalDescription(await pc.createAnswer());
  const accepted = request({ type: "answer", sdp: pc.localDescription.sdp });
  release("subscriber");
  reconcile(pc);
  await accepted;
  parley.offersAnswered += 1;
}

/** Make the tiles match what each transceiver receives now. */
function reconcile(pc) {
  const live = new Set();
  for (const t of pc.getTransceivers()) {
    const info = t.mid === null ? undefined : mapping[t.mid];
    const receiving = t.currentDirection === "recvonly" || t.currentDirection === "sendrecv";
    if (info && receiving) {
      bind(t.mid, info, t.receiver.track);
      live.add(t.mid);
    }
  }
  for (const mid of [...bindings.keys()]) if (!live.has(mid)) unbind(mid);
}

function bind(mid, info, media) {
  if (departed.has(info.participant)) return;
  const current = bindings.get(mid);
  if (current && current.track === info.track && current.media === media) return;
  if (current) unbind(mid);
  const tile = ensureTile(info.participant);
  const element = document.createElement(info.kind === "video" ? "video" : "audio");
  element.autoplay = true;
  element.playsInline = true;
  element.dataset.mid = mid;
  element.dataset.track = info.track;
  if (info.kind === "video") {
    element.muted = true; // sound plays through the participant's audio element
    element.setAttribute("aria-label", `Video of ${displayName(info.participant)}`);
    tile.querySelector(".media").prepend(element);
  } else {
    tile.querySelector(".media").append(element);
  }
  element.srcObject = new MediaStream([media]);
  play(element);
  bindings.set(mid, { participant: info.participant, track: info.track, kind: info.kind,
                      element, media });
  updatePlaceholder(tile);
}

function unbind(mid) {
  const binding = bindings.get(mid);
  if (!binding) return;
  bindings.delete(mid);
  binding.element.srcObject = null;
  binding.element.remove();
  const tile = tiles.get(binding.participant);
  if (tile) updatePlaceholder(tile);
}

function unbindTrack(trackId) {
  for (const [mid, b] of [...bindings]) if (b.track === trackId) unbind(mid);
}

function play(element) {
  element.play().catch(() => {
    // Autoplay with sound needs a user gesture: offer one.
    const button = $("sound");
    button.hidden = false;
    button.onclick = () => {
      button.hidden = true;
      for (const b of bindings.values()) b.element.play().catch(() => {});
    };
  });
}

// -- participants ----------------------------------------------------------------
function displayName(pid) {
  const p = parley.participants.get(pid);
  return p ? (p.name || p.identity) : pid;
}

function addParticipant(p) {
  if (p.id === parley.participantId) return;
  parley.participants.set(p.id, p);
  const tile = ensureTile(p.id);
  tile.querySelector("figcaption").textContent = displayName(p.id);
  tile.setAttribute("aria-label", displayName(p.id));
}

function removeParticipant(pid) {
  departed.add(pid);
  parley.participants.delete(pid);
  for (const [mid, b] of [...bindings]) if (b.participant === pid) unbind(mid);
  const tile = tiles.get(pid);
  if (tile) tile.remove();
  tiles.delete(pid);
}

function ensureTile(pid) {
  let tile = tiles.get(pid);
  if (tile) return tile;
  tile = document.createElement("li");
  tile.className = "tile";
  tile.dataset.participant = pid;
  const figure = document.createElement("figure");
  figure.style.margin = "0";
  const media = document.createElement("div");
  media.className = "media";
  const placeholder = document.createElement("div");
  placeholder.className = "placeholder";
  placeholder.textContent = "no video";
  const caption = document.createElement("figcaption");
  caption.textContent = displayName(pid);
  figure.append(media, placeholder, caption);
  tile.append(figure);
  tile.setAttribute("aria-label", displayName(pid));
  if (pid === "local") $("grid").prepend(tile); else $("grid").append(tile);
  tiles.set(pid, tile);
  return tile;
}

function updatePlaceholder(tile) {
  tile.querySelector(".placeholder").hidden = !!tile.querySelector("video");
}

function showSpeakers(ids) {
  for (const [pid, tile] of tiles) tile.classList.toggle("speaking", ids.includes(pid));
}

// -- publishing ------------------------------------------------------------------
async function publish() {
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: true, video: { width: { ideal: 640 }, height: { ideal: 360 } } });
  } catch (err) {
    setStatus(`joined; camera/microphone unavailable (${err.name})`);
    return;
  }
  local.stream = stream;
  showSelf(stream);
  pub = new RTCPeerConnection({ iceServers });
  pub.onicecandidate = (e) => trickle("publisher", e.candidate);
  const added = stream.getTracks().map((media) => ({
    media, transceiver: pub.addTransceiver(media, { direction: "sendonly", streams: [stream] }),
  }));
  await pub.setLocalDescription(await pub.createOffer());
  const reply = await request({
    type: "offer", sdp: pub.localDescription.sdp,
    tracks: added.map(({ media, transceiver }) => ({
      mid: transceiver.mid, source: media.kind === "video" ? "camera" : "microphone",
      name: media.label.slice(0, 200) })),
  });
  await pub.setRemoteDescription({ type: "answer", sdp: reply.sdp });
  release("publisher");
  for (const track of reply.tracks) {
    const entry = added.find(({ transceiver }) => transceiver.mid === track.mid);
    if (entry) local.published.set(entry.media.kind, { trackId: track.id, media: entry.media });
  }
  parley.publishing = true;
  $("mic").disabled = !local.published.has("audio");
  $("camera").disabled = !local.published.has("video");
}

function showSelf(stream) {
  const tile = ensureTile("local");
  tile.querySelector("figcaption").textContent = "You";
  tile.setAttribute("aria-label", "You");
  const video = document.createElement("video");
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true;
  video.setAttribute("aria-label", "Your camera");
  video.srcObject = new MediaStream(stream.getVideoTracks());
  tile.querySelector(".media").append(video);
  updatePlaceholder(tile);
}

/** A toggle button: its label stays, aria-pressed says whether the track is muted. */
async function toggle(kind, button) {
  const entry = local.published.get(kind);
  if (!entry) return;
  const muted = entry.media.enabled;
  entry.media.enabled = !muted;
  button.setAttribute("aria-pressed", String(muted));
  await request({ type: "mute-track", track: entry.trackId, muted }).catch(fail);
}

// -- data ------------------------------------------------------------------------
function openChannel(ch) {
  channel = ch;
  const enable = () => {
    $("chat-text").disabled = false;
    $("chat").querySelector("button").disabled = false;
  };
  ch.onopen = enable;
  if (ch.readyState === "open") enable();
  ch.onmessage = (e) => showData(JSON.parse(e.data));
}

function showData(m) {
  const text = m.payload && typeof m.payload.text === "string"
    ? m.payload.text : JSON.stringify(m.payload);
  note(`${m.identity || m.from}: ${text}`);
}

function sendChat(event) {
  event.preventDefault();
  const input = $("chat-text");
  const text = input.value.trim();
  if (!text) return;
  const message = { payload: { text }, topic: "chat" };
  if (channel && channel.readyState === "open") channel.send(JSON.stringify(message));
  else send({ type: "data", ...message });
  note(`you: ${text}`);
  input.value = "";
}

// -- leaving ---------------------------------------------------------------------
function teardown() {
  for (const pc of [pub, sub]) if (pc) pc.close();
  pub = sub = channel = null;
  if (local.stream) for (const t of local.stream.getTracks()) t.stop();
  for (const mid of [...bindings.keys()]) unbind(mid);
  for (const button of ["mic", "camera", "leave"]) $(button).disabled = true;
  $("chat-text").disabled = true;
}

function leave() {
  $("leave").disabled = true;
  request({ type: "leave" }).catch(() => {});
}

// -- start -----------------------------------------------------------------------
$("leave").addEventListener("click", leave);
$("mic").addEventListener("click", () => toggle("audio", $("mic")));
$("camera").addEventListener("click", () => toggle("video", $("camera")));
$("chat").addEventListener("submit", sendChat);

const token = new URLSearchParams(location.search).get("token");
if (token) connect(token);
else setStatus("no token in the URL (add ?token=…)");
