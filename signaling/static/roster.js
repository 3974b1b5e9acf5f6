// Who is shown where: the tiles of the grid (computed from the room's state on
// every change), the audience list, what the subscribe connection binds to
// which tile, and the moderator's tile menu.

import { updateControls } from "./publishing.js";
import { act, isMine, local, meeting, nameOf, parley, view } from "./state.js";

function keyFor(participant, source) {
  return source === "screen" ? `${participant}/screen` : participant;
}

/** The subscribe connection receives a track on `mid`: show it in its tile. */
export function bindRemote(mid, b, media) {
  if (meeting.departed.has(b.participant)) return false;
  const info = meeting.tracks.get(b.track);
  const source = info ? info.source : b.kind === "audio" ? "microphone" : "camera";
  const key = keyFor(b.participant, source);
  meeting.bound.set(mid, { key, participant: b.participant, kind: b.kind, track: b.track, source });
  refresh();
  view.grid.attach(key, mid, b.kind, media, b.track);
  return true;
}

export function unbindRemote(mid) {
  meeting.bound.delete(mid);
  view.grid.detach(mid);
  refresh();
}

// -- the grid ---------------------------------------------------------------------------
/** On stage: may publish, or publishes (the grid shows them; the audience list the rest). */
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
    paused: !!cam && meeting.streams.get(cam.id)?.state === "paused_bandwidth", stalled: !!(cam && cam.stalled),
    menu: p ? menuFor(p) : null,
  };
}

/** One model per tile: shared screens first, then this page, then the others by arrival. */
function models() {
  const selfId = meeting.self ? meeting.self.id : null;
  const selfName = nameOf(selfId) || "You";
  const screens = [];
  const people = [];
  if (local.screen) {
    screens.push({ key: "local/screen", participant: "local", source: "screen", name: selfName, local: true });
  }
  if (parley.grants && parley.grants.can_publish) {
    people.push({ key: "local", participant: "local", source: "camera", name: selfName, local: true,
                  micMuted: local.micMuted || !local.audio, cameraOff: local.cameraOff || !local.video,
                  speaking: meeting.speaking.has(selfId), quality: meeting.quality.get(selfId) });
  }
  const seen = new Set();
  const others = [...parley.participants.values()].sort((a, b) => a.joined_at - b.joined_at);
  for (const p of others) {
    if (!onStage(p)) continue;
    seen.add(p.id);
    people.push(remoteModel(p.id, p));
  }
  for (const b of meeting.bound.values()) { // a hidden participant's media has no participant
    if (b.source === "screen" || seen.has(b.participant)) continue;
    seen.add(b.participant);
    people.push(remoteModel(b.participant, null));
  }
  for (const t of meeting.tracks.values()) {
    if (t.source !== "screen" || isMine(t)) continue;
    screens.push({ key: keyFor(t.participant, "screen"), participant: t.participant, source: "screen",
                   name: nameOf(t.participant) || "Guest", stalled: t.stalled,
                   paused: meeting.streams.get(t.id)?.state === "paused_bandwidth" });
  }
  return [...screens, ...people];
}

/** Make the grid, the audience list and the controls match the state. */
export function refresh() {
  if (!meeting.sub) {
    view.grid.render([]);
  } else {
    view.grid.render(models());
    syncLocalMedia();
  }
  const audience = [...parley.participants.values()].filter((p) => !onStage(p));
  if (meeting.self && parley.grants && !parley.grants.can_publish) audience.unshift({ ...meeting.self, self: true });
  view.stage.renderAudience(audience, !!(parley.grants && parley.grants.room_admin));
  updateControls();
}

/** This page's own camera and screen, shown without sound in its own tiles. */
function syncLocalMedia() {
  const attached = (mid) => view.grid.media.get(mid);
  const video = local.cameraOff ? null : local.video;
  for (const [key, mid, track] of [["local", "local-camera", video], ["local/screen", "local-screen", local.screen]]) {
    const shown = attached(mid);
    if (track && (!shown || shown.media !== track)) view.grid.attach(key, mid, "video", track);
    else if (!track && shown) view.grid.detach(mid);
  }
}

/** A choice in a tile's moderator menu. */
export function moderate(pid, action) {
  const name = nameOf(pid);
  if (action === "mute-mic" || action === "mute-camera") {
    const track = trackOf(pid, action === "mute-mic" ? "microphone" : "camera");
    if (track) act({ type: "mute-track", track: track.id, muted: true });
  } else if (action === "move-to-audience") {
    act({ type: "move-to-audience", participant: pid }, () => view.chat.notice(`${name} moved to the audience.`));
  } else if (action === "remove") {
    if (window.confirm(`Remove ${name} from the meeting?`)) {
      act({ type: "remove-participant", participant: pid }, () => view.chat.notice(`${name} was removed.`));
    }
  }
}
