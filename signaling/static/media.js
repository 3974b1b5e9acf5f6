// Local media: cameras and microphones, the reasons they fail, and the screen.

// 960x540: enough for three simulcast encodings (240x135, 480x270, 960x540).
const CAMERA = { width: { ideal: 960 }, height: { ideal: 540 }, frameRate: { ideal: 24 } };

/** Test hooks, used by the browser tests (tests/e2e); exposed as `parley.hooks`. */
export const hooks = {
  /**
   * TEST HOOK. When true, "Share screen" captures an animated canvas
   * (canvas.captureStream()) instead of calling getDisplayMedia, which headless
   * browsers cannot answer. Set it with `parley.hooks.fakeScreen = true`.
   */
  fakeScreen: false,
  /**
   * TEST HOOK. When false, the camera is sent as one encoding instead of simulcast.
   * Read when the camera is published: a test that wants one encoding from the
   * start sets `window.__parleySingleEncoding = true` in an init script.
   */
  simulcast: !window.__parleySingleEncoding,
};

/** A sentence for a person, from a getUserMedia error. */
export function describeMediaError(err, what) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError") {
    return `${what} access was denied. Allow it in the browser's site settings, then try again.`;
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return `No ${what.toLowerCase()} was found. Connect one, then try again.`;
  }
  if (name === "NotReadableError" || name === "AbortError") {
    return `The ${what.toLowerCase()} is in use by another application or could not start.`;
  }
  if (!navigator.mediaDevices) {
    return `${what} needs a secure page (https:// or localhost).`;
  }
  return `${what} unavailable: ${err && err.message ? err.message : err}`;
}

function constraint(kind, deviceId) {
  const base = kind === "video" ? { ...CAMERA } : { echoCancellation: true, noiseSuppression: true };
  if (deviceId) base.deviceId = { exact: deviceId };
  return base;
}

/** One track of one kind from the chosen device; throws the getUserMedia error. */
export async function openDevice(kind, deviceId) {
  if (!navigator.mediaDevices) throw Object.assign(new Error("no mediaDevices"), { name: "SecurityError" });
  const stream = await navigator.mediaDevices.getUserMedia({ [kind]: constraint(kind, deviceId) });
  return stream.getTracks()[0];
}

/**
 * Open camera and microphone, each on its own so one failing does not cost the other.
 * Returns {audio, video, problems: [sentence]}.
 */
export async function openDevices({ audio = true, video = true, audioId = "", videoId = "" } = {}) {
  const out = { audio: null, video: null, problems: [] };
  const wanted = [];
  if (audio) wanted.push(["audio", audioId, "Microphone"]);
  if (video) wanted.push(["video", videoId, "Camera"]);
  const results = await Promise.allSettled(wanted.map(([kind, id]) => openDevice(kind, id)));
  results.forEach((r, i) => {
    const [kind, , what] = wanted[i];
    if (r.status === "fulfilled") out[kind] = r.value;
    else out.problems.push(describeMediaError(r.reason, what));
  });
  // Both denied reads better as one sentence.
  if (out.problems.length === 2 && out.problems.every((p) => p.includes("denied"))) {
    out.problems = ["Camera and microphone access was denied. Allow them in the browser's site settings, then try again."];
  }
  return out;
}

/**
 * {audio: [{id, label}], video: [...], hidden: {audio, video}} of the devices the browser
 * lists; `hidden` says that devices exist but the page may not see them (no access yet).
 */
export async function listDevices() {
  const out = { audio: [], video: [], hidden: { audio: false, video: false } };
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return out;
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const d of devices) {
    const kind = d.kind === "audioinput" ? "audio" : d.kind === "videoinput" ? "video" : null;
    if (!kind) continue;
    if (!d.deviceId) {
      out.hidden[kind] = true;
      continue;
    }
    const n = out[kind].length + 1;
    out[kind].push({ id: d.deviceId, label: d.label || `${kind === "audio" ? "Microphone" : "Camera"} ${n}` });
  }
  return out;
}

/** A screen track: getDisplayMedia, or the canvas test hook. */
export async function screenTrack() {
  if (hooks.fakeScreen || !navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) {
    if (!hooks.fakeScreen) throw Object.assign(new Error("screen sharing is not supported here"), { name: "NotSupportedError" });
    return canvasTrack();
  }
  const stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
  const track = stream.getVideoTracks()[0];
  if ("contentHint" in track) track.contentHint = "detail";
  return track;
}

/** TEST HOOK: an animated 640×360 canvas as a video track (see hooks.fakeScreen). */
function canvasTrack() {
  const canvas = document.createElement("canvas");
  canvas.width = 640;
  canvas.height = 360;
  const ctx = canvas.getContext("2d");
  let frame = 0;
  const draw = () => {
    frame += 1;
    ctx.fillStyle = "#1d3557";
    ctx.fillRect(0, 0, 640, 360);
    ctx.fillStyle = "#f1faee";
    ctx.font = "bold 36px sans-serif";
    ctx.fillText("Shared screen (test source)", 40, 80);
    ctx.fillStyle = "#e63946";
    ctx.fillRect((frame * 8) % 640, 200, 60, 60);
  };
  draw();
  const timer = setInterval(draw, 100);
  const track = canvas.captureStream(10).getVideoTracks()[0];
  const stop = track.stop.bind(track);
  track.stop = () => { clearInterval(timer); stop(); };
  return track;
}
