// This page's own media and the publish connection: open the camera and the
// microphone, publish them (and a screen), mute, turn the camera off, switch
// devices, and stop when the page goes back to the audience. When the publish
// connection fails (the node's `connection-failed`, or the browser's own), the
// same tracks are published again on a new one, quietly for a few seconds; a
// screen share that is not back within SCREEN_GIVE_UP ends.

import { preview } from "./lobby.js";
import { describeMediaError, openDevice, openDevices, screenTrack } from "./media.js";
import { sentence } from "./messages.js";
import { Publisher } from "./publisher.js";
import { act, fault, local, meeting, nameOf, parley, view } from "./state.js";

const $ = (id) => document.getElementById(id);
const QUIET_RECOVERY = 5000; // ms: publishing again without telling the person
const SCREEN_GIVE_UP = 15000; // ms: a screen share not back by then ends
const RETRY_DELAYS = [500, 1000, 2000, 4000]; // ms between refused attempts; the last repeats
const CONNECT_DEADLINE = 4000; // ms a replacement connection gets to hear from the node: one
                               // that has had no answer at all by then is replaced (the
                               // browser gives up on a path that stays dead only after ~25 s)

/** A publish connection being replaced: {gen, attempt, noticed, timers}. */
let recovery = null;

/** The `track-muted` event: a moderator muted (or unmuted) one of this page's tracks. */
export function mutedByModerator(m) {
  const source = meeting.pub ? meeting.pub.sourceOf(m.track.id) : null;
  const by = m.by ? nameOf(m.by) : "A moderator";
  if (source === "microphone") {
    local.micMuted = m.track.muted;
    if (local.audio) local.audio.enabled = !m.track.muted;
    view.chat.notice(`${by} ${m.track.muted ? "muted" : "unmuted"} your microphone.`);
  } else if (source === "camera" && m.track.muted && !local.cameraOff) {
    local.cameraOff = true;
    if (meeting.pub) meeting.pub.replace("camera", null);
    if (local.video) { local.video.stop(); local.video = null; }
    view.chat.notice(`${by} turned your camera off.`);
  } else if (source === "screen" && m.track.muted) {
    view.chat.notice(`${by} hid your shared screen.`);
  }
  updateControls();
}

/** Open the devices that are not open yet (the camera only when it is meant to be on). */
async function openMissing({ audio = true, video = true } = {}) {
  const want = { audio: audio && !local.audio, video: video && !local.video && !local.cameraOff };
  if (!want.audio && !want.video) return;
  const got = await openDevices({ ...want, audioId: view.devices.audioId, videoId: view.devices.videoId });
  if (got.audio) local.audio = got.audio;
  if (got.video) local.video = got.video;
  view.devices.using(got.audio);
  view.devices.using(got.video);
  view.devices.showProblems(got.problems);
  if (got.problems.length) view.chat.notice(got.problems.join(" "));
  await view.devices.fill();
}

/** Publish microphone, camera and screen on a new publish connection. Resolves true
 *  when the node took them; `quiet`: a refusal is not reported (recovery retries). */
export async function startPublishing(gen, { quiet = false } = {}) {
  if (meeting.pub || !meeting.signal) return false;
  const pub = new Publisher(meeting.signal, meeting.iceServers, () => publisherFailed(gen));
  meeting.pub = pub;
  pub.pc.addEventListener("connectionstatechange", () => {
    if (pub.pc.connectionState === "connected" && meeting.pub === pub) recovered(gen);
  });
  try {
    await openMissing();
    if (gen !== meeting.gen || meeting.pub !== pub) return false;
    if (local.audio) local.audio.enabled = !local.micMuted;
    if (local.screen && local.screen.readyState === "ended") local.screen = null;
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
    if (gen !== meeting.gen || meeting.pub !== pub) return false;
    if (quiet) fault("publish", err);
    else reportPublish(err);
    pub.close();
    meeting.pub = null;
    view.refresh();
    return false;
  }
  view.refresh();
  return true;
}

/** The publish connection failed (either end noticed): publish the same tracks again on
 *  a new one, retrying while the node refuses; the person hears of it only when that
 *  takes longer than QUIET_RECOVERY. */
export function publisherFailed(gen) {
  if (gen !== meeting.gen || !meeting.pub) return;
  meeting.pub.close();
  meeting.pub = null;
  parley.publishing = false;
  parley.publishFailures += 1;
  if (!(parley.grants && parley.grants.can_publish)) return;
  if (!recovery || recovery.gen !== gen) {
    endRecovery();
    recovery = { gen, attempt: 0, noticed: false, timers: [] };
    recovery.timers.push(setTimeout(() => tellSlow(gen), QUIET_RECOVERY));
    recovery.timers.push(setTimeout(() => giveUpScreen(gen), SCREEN_GIVE_UP));
  }
  publishAgain(gen);
}

async function publishAgain(gen) {
  if (!recovery || recovery.gen !== gen || gen !== meeting.gen || meeting.pub) return;
  if (await startPublishing(gen, { quiet: true })) {
    watchConnecting(gen, meeting.pub);
    return;
  }
  if (!recovery || recovery.gen !== gen) return;
  const wait = RETRY_DELAYS[Math.min(recovery.attempt, RETRY_DELAYS.length - 1)];
  recovery.attempt += 1;
  recovery.timers.push(setTimeout(() => publishAgain(gen), wait));
}

/** Every CONNECT_DEADLINE until it connects: replace `pub` if no ICE check of it has been
 *  answered (the path is still dead), else give it more time. */
function watchConnecting(gen, pub) {
  if (!recovery || recovery.gen !== gen) return;
  recovery.timers.push(setTimeout(async () => {
    if (meeting.pub !== pub || pub.pc.connectionState === "connected") return;
    let answered = false;
    (await pub.pc.getStats()).forEach((s) => {
      if (s.type === "candidate-pair" && s.responsesReceived > 0) answered = true;
    });
    if (meeting.pub !== pub) return;
    if (answered) watchConnecting(gen, pub);
    else publisherFailed(gen);
  }, CONNECT_DEADLINE));
}

function tellSlow(gen) {
  if (!recovery || recovery.gen !== gen || gen !== meeting.gen) return;
  recovery.noticed = true;
  view.chat.notice("Your camera and microphone are not reaching the meeting. Trying again…");
}

/** A screen share that could not be sent again in time ends, here and for everyone (the
 *  node unpublished it when the connection failed). The connection being set up is not
 *  renegotiated (the node would hold the offer until it connects): a new one replaces it. */
function giveUpScreen(gen) {
  if (!recovery || recovery.gen !== gen || gen !== meeting.gen || !local.screen) return;
  view.chat.notice("Your screen share stopped because the connection was lost. Share it again when you are ready.");
  const track = local.screen;
  local.screen = null;
  track.stop();
  if (meeting.pub && meeting.pub.has("screen")) publisherFailed(gen);
  view.refresh();
}

function recovered(gen) {
  if (!recovery || recovery.gen !== gen) return;
  if (recovery.noticed) view.chat.notice("Your camera and microphone reach the meeting again.");
  parley.publishRecoveries += 1;
  endRecovery();
}

function endRecovery() {
  if (recovery) for (const t of recovery.timers) clearTimeout(t);
  recovery = null;
}

/** Back to the audience: close the publish connection and release the devices. */
export function stopPublishing() {
  endRecovery();
  if (meeting.pub) meeting.pub.close();
  meeting.pub = null;
  parley.publishing = false;
  releaseLocal();
  view.refresh();
}

/** Stop every local device (camera light off). Mute and camera choices are kept. */
export function releaseLocal() {
  for (const kind of ["audio", "video", "screen"]) {
    if (local[kind]) local[kind].stop();
    local[kind] = null;
  }
  preview(null);
}

/** Mute: the track keeps its m-line and sends silence; the node stops forwarding it. */
export async function toggleMic() {
  const pub = meeting.pub;
  if (!local.audio) { // never opened, or refused: try to open it now
    local.micMuted = false;
    await openMissing({ video: false });
    if (local.audio && pub && meeting.pub === pub && !pub.has("microphone")) {
      await pub.add([{ track: local.audio, source: "microphone" }]).catch(reportPublish);
    }
    view.refresh();
    return;
  }
  local.micMuted = !local.micMuted;
  local.audio.enabled = !local.micMuted;
  updateControls();
  if (pub && pub.has("microphone")) {
    await act({ type: "mute-track", track: pub.trackId("microphone"), muted: local.micMuted });
  }
  view.refresh();
}

/** Camera off: mute the track, send nothing, release the device. On: the reverse. */
export async function toggleCamera() {
  const pub = meeting.pub;
  if (!local.cameraOff && local.video) {
    local.cameraOff = true;
    updateControls();
    if (pub && pub.has("camera")) {
      await act({ type: "mute-track", track: pub.trackId("camera"), muted: true });
      await pub.replace("camera", null);
    }
    if (local.video) local.video.stop();
    local.video = null;
    view.refresh();
    return;
  }
  local.cameraOff = false;
  updateControls();
  try {
    local.video = await openDevice("video", view.devices.videoId);
  } catch (err) {
    local.cameraOff = true;
    view.devices.showProblems([describeMediaError(err, "Camera")]);
    view.refresh();
    return;
  }
  view.devices.showProblems([]);
  if (pub && meeting.pub === pub) {
    if (pub.has("camera")) {
      await pub.replace("camera", local.video);
      await act({ type: "mute-track", track: pub.trackId("camera"), muted: false });
    } else {
      await pub.add([{ track: local.video, source: "camera" }]).catch(reportPublish);
    }
  }
  view.refresh();
}

export async function toggleScreen() {
  const pub = meeting.pub;
  if (local.screen) {
    const track = local.screen;
    local.screen = null;
    track.stop();
    view.refresh();
    if (pub && pub.has("screen")) await pub.remove("screen").catch(reportPublish);
    return;
  }
  let track;
  try {
    track = await screenTrack();
  } catch (err) {
    if (err.name !== "NotAllowedError") {
      fault("screen", err);
      view.chat.notice("Screen sharing is not available in this browser.");
    }
    return;
  }
  local.screen = track;
  track.addEventListener("ended", () => { if (local.screen === track) toggleScreen(); });
  view.refresh();
  if (pub && meeting.pub === pub) await pub.add([{ track, source: "screen" }]).catch(reportPublish);
  view.refresh();
}

function reportPublish(err) {
  fault("publish", err);
  view.chat.notice(`Your camera, microphone or screen could not be sent. ${sentence(err, "")}`.trim());
}

/** Another camera or microphone was picked: preview it, or send it instead. */
export async function switchDevice(kind, deviceId) {
  if (document.body.dataset.view === "lobby") {
    await startPreview({ [kind === "audio" ? "video" : "audio"]: false });
    return;
  }
  if (!local[kind] || (kind === "video" && local.cameraOff)) return;
  let track;
  try {
    track = await openDevice(kind, deviceId);
  } catch (err) {
    view.devices.showProblems([describeMediaError(err, kind === "audio" ? "Microphone" : "Camera")]);
    return;
  }
  const old = local[kind];
  local[kind] = track;
  if (kind === "audio") track.enabled = !local.micMuted;
  if (meeting.pub) await meeting.pub.replace(kind === "audio" ? "microphone" : "camera", track);
  old.stop();
  view.devices.showProblems([]);
  view.refresh();
}

export function updateControls() {
  const canPublish = !!(parley.grants && parley.grants.can_publish);
  const mic = $("mic");
  const muted = local.micMuted || !local.audio;
  mic.textContent = muted ? "Unmute microphone" : "Mute microphone";
  mic.classList.toggle("off", muted);
  const camera = $("camera");
  const cameraOff = local.cameraOff || !local.video;
  camera.textContent = cameraOff ? "Turn camera on" : "Turn camera off";
  camera.classList.toggle("off", cameraOff);
  const screen = $("screen");
  screen.textContent = local.screen ? "Stop sharing" : "Share screen";
  screen.classList.toggle("on", !!local.screen);
  for (const b of [mic, camera, screen]) {
    b.hidden = !canPublish;
    b.disabled = !meeting.pub;
  }
  $("leave").disabled = parley.state !== "joined" && parley.state !== "reconnecting";
}

/** The lobby's preview: open the devices and show the camera. */
export async function startPreview({ audio = true, video = true } = {}) {
  for (const kind of ["audio", "video"]) {
    if ((kind === "audio" ? audio : video) && local[kind]) { local[kind].stop(); local[kind] = null; }
  }
  const { audioId, videoId } = view.devices;
  const got = await openDevices({ audio, video, audioId, videoId });
  if (audio) local.audio = got.audio;
  if (video) local.video = got.video;
  view.devices.using(got.audio);
  view.devices.using(got.video);
  view.devices.showProblems(got.problems);
  preview(local.video);
  await view.devices.fill();
}


/** "Try again" after a refusal: open what is missing and publish it. */
export async function retryDevices() {
  if (document.body.dataset.view === "lobby") {
    await startPreview();
    return;
  }
  await openMissing();
  const pub = meeting.pub;
  if (!pub || meeting.pub !== pub) return;
  const items = [];
  if (local.audio && !pub.has("microphone")) items.push({ track: local.audio, source: "microphone" });
  if (local.video && !local.cameraOff && !pub.has("camera")) items.push({ track: local.video, source: "camera" });
  if (items.length) await pub.add(items).catch(reportPublish);
  view.refresh();
}
