// Before joining: device pickers, the camera preview, and the development-mode
// join form (a node started without keys hands out tokens at /api/dev-token).

import { listDevices } from "./media.js";

const $ = (id) => document.getElementById(id);
const STORE = { audio: "parley.audioDevice", video: "parley.videoDevice" };

function stored(kind) {
  try { return localStorage.getItem(STORE[kind]) || ""; } catch { return ""; }
}

function store(kind, id) {
  try { localStorage.setItem(STORE[kind], id); } catch { /* private mode */ }
}

/** The camera and microphone pickers; they move from the lobby into the meeting's panel. */
export class Devices {
  /** @param {(kind: "audio"|"video", deviceId: string) => void} onChange */
  constructor(onChange) {
    this.ids = { audio: stored("audio"), video: stored("video") };
    this.selects = { audio: $("mic-select"), video: $("camera-select") };
    for (const kind of ["audio", "video"]) {
      this.selects[kind].addEventListener("change", () => {
        this.ids[kind] = this.selects[kind].value;
        store(kind, this.ids[kind]);
        onChange(kind, this.ids[kind]);
      });
    }
  }

  get audioId() { return this.ids.audio; }
  get videoId() { return this.ids.video; }

  /** Remember the device a track actually came from (the browser may pick another). */
  using(track) {
    if (!track) return;
    const id = track.getSettings ? track.getSettings().deviceId : "";
    if (id) this.ids[track.kind] = id;
  }

  /** List the devices (labels appear once access was granted). */
  async fill() {
    const found = await listDevices().catch(() => ({ audio: [], video: [], hidden: {} }));
    for (const kind of ["audio", "video"]) {
      const select = this.selects[kind];
      select.replaceChildren();
      for (const d of found[kind]) {
        const option = document.createElement("option");
        option.value = d.id;
        option.textContent = d.label;
        select.append(option);
      }
      if (!found[kind].length) {
        const option = document.createElement("option");
        option.value = "";
        const what = kind === "audio" ? "microphone" : "camera";
        option.textContent = found.hidden[kind] ? `No access to the ${what}` : `No ${what} found`;
        select.append(option);
      }
      select.disabled = !found[kind].length;
      if (found[kind].some((d) => d.id === this.ids[kind])) select.value = this.ids[kind];
    }
  }

  showProblems(problems) {
    const list = $("device-problems");
    list.replaceChildren(...problems.map((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    }));
    list.hidden = problems.length === 0;
    $("devices-retry").hidden = problems.length === 0;
    const details = list.closest("details");
    if (details && problems.length) details.open = true;
  }
}

/** Whether this node hands out development tokens (it answers 404 when it does not). */
export async function developmentMode() {
  try {
    const response = await fetch("/api/dev-token", { cache: "no-store" });
    if (!response.ok) return false;
    return (await response.json()).development === true;
  } catch {
    return false;
  }
}

/** A development token for a room and a display name. */
export async function devToken(room, name, role) {
  const query = new URLSearchParams({ room, name, role });
  const response = await fetch(`/api/dev-token?${query}`, { method: "POST", cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.message || `the node answered ${response.status}`);
  return body;
}

/** Show the preview of the camera (or a note when there is none). */
export function preview(track) {
  const video = $("preview");
  video.srcObject = track ? new MediaStream([track]) : null;
  $("preview-none").hidden = !!track;
  if (track) video.play().catch(() => {});
}
