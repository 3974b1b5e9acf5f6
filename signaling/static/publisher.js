// The publish connection: this page offers, the node's SFU answers
// (docs/protocol.md, "Publishing: the publish offer"). One sendonly m-line per
// track; a renegotiation adds or stops m-lines. Video is sent as VP8 with three
// temporal layers (scalabilityMode L1T3) so the SFU can lower a subscriber's
// frame rate without asking this page to re-encode (Firefox ignores
// scalabilityMode and sends two temporal layers of its own). The camera is sent as
// simulcast: three encodings (rid q, h, f: a quarter, half and full size, lowest
// first), of which the SFU forwards to each subscriber the one that fits its link
// and the size of its tile. A screen share is one full-resolution encoding.

import { hooks } from "./media.js";

/** The camera's encodings, lowest first (the SFU numbers layers in this order). */
export const CAMERA_ENCODINGS = [
  { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];
const SCREEN_ENCODING = { maxBitrate: 2_500_000 };

function preferVp8(transceiver) {
  if (!transceiver.setCodecPreferences || !window.RTCRtpReceiver || !RTCRtpReceiver.getCapabilities) return;
  const caps = RTCRtpReceiver.getCapabilities("video");
  if (!caps) return;
  const vp8 = caps.codecs.filter((c) => c.mimeType.toLowerCase() === "video/vp8");
  const rest = caps.codecs.filter((c) => c.mimeType.toLowerCase() !== "video/vp8");
  if (vp8.length) {
    try { transceiver.setCodecPreferences([...vp8, ...rest]); } catch { /* keep the default order */ }
  }
}

function encodingsFor(source) {
  if (source === "camera" && hooks.simulcast) return CAMERA_ENCODINGS;
  return [source === "screen" ? SCREEN_ENCODING : {}];
}

function addSender(pc, track, stream, source) {
  const init = { direction: "sendonly", streams: [stream] };
  if (track.kind !== "video") return pc.addTransceiver(track, init);
  const encodings = encodingsFor(source);
  const layered = encodings.map((e) => ({ ...e, scalabilityMode: "L1T3" }));
  for (const sendEncodings of [layered, encodings]) {
    try {
      return pc.addTransceiver(track, { ...init, sendEncodings });
    } catch { /* a browser without scalabilityMode (or simulcast): try less */ }
  }
  return pc.addTransceiver(track, init);
}

export class Publisher {
  /**
   * @param {import("./signal.js").Signal} signal
   * @param {RTCIceServer[]} iceServers
   * @param {() => void} onFailed  called once if the connection fails
   */
  constructor(signal, iceServers, onFailed) {
    this.signal = signal;
    this.pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
    this.stream = new MediaStream();
    this.entries = new Map(); // source -> {transceiver, track, trackId}
    this.held = [];
    this.ready = false;
    this.closed = false;
    this.chain = Promise.resolve();
    this.pc.onicecandidate = (e) => this.trickle(e.candidate);
    this.pc.onconnectionstatechange = () => {
      if (!this.closed && this.pc.connectionState === "failed") onFailed();
    };
  }

  /** Run one negotiation at a time. */
  run(step) {
    const result = this.chain.then(step);
    this.chain = result.catch(() => {});
    return result;
  }

  trickle(c) {
    const candidate = c && c.candidate
      ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } : null;
    if (this.ready) this.signal.send({ type: "candidate", target: "publisher", candidate });
    else this.held.push(candidate);
  }

  /** Publish tracks: items are {track, source}. Resolves when the node answered. */
  add(items) {
    return this.run(async () => {
      const added = items.map(({ track, source }) => ({
        track, source, transceiver: addSender(this.pc, track, this.stream, source) }));
      for (const a of added) if (a.track.kind === "video") preferVp8(a.transceiver);
      await this.pc.setLocalDescription(await this.pc.createOffer());
      const reply = await this.signal.request({
        type: "offer", sdp: this.pc.localDescription.sdp,
        tracks: added.map((a) => ({ mid: a.transceiver.mid, source: a.source,
                                    name: (a.track.label || "").slice(0, 200) })),
      });
      await this.answered(reply);
      for (const a of added) {
        const info = reply.tracks.find((t) => t.mid === a.transceiver.mid);
        if (info) this.entries.set(a.source, { transceiver: a.transceiver, track: a.track, trackId: info.id });
      }
    });
  }

  /** Stop publishing one source: stop its m-line and renegotiate. */
  remove(source) {
    return this.run(async () => {
      const entry = this.entries.get(source);
      if (!entry) return;
      this.entries.delete(source);
      entry.transceiver.stop();
      await this.pc.setLocalDescription(await this.pc.createOffer());
      const reply = await this.signal.request({ type: "offer", sdp: this.pc.localDescription.sdp, tracks: [] });
      await this.answered(reply);
    });
  }

  async answered(reply) {
    await this.pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
    this.ready = true;
    for (const candidate of this.held.splice(0)) {
      this.signal.send({ type: "candidate", target: "publisher", candidate });
    }
  }

  /** Send another track (or nothing: null) on a source's m-line, without renegotiating. */
  async replace(source, track) {
    const entry = this.entries.get(source);
    if (!entry) return false;
    await entry.transceiver.sender.replaceTrack(track);
    entry.track = track;
    return true;
  }

  has(source) { return this.entries.has(source); }

  trackId(source) {
    const entry = this.entries.get(source);
    return entry ? entry.trackId : null;
  }

  sourceOf(trackId) {
    for (const [source, entry] of this.entries) if (entry.trackId === trackId) return source;
    return null;
  }

  /** What the browser reports for each encoding sent: source, rid, device label, codec, scalabilityMode, frames. */
  async outbound() {
    const report = await this.pc.getStats();
    const codecs = new Map();
    report.forEach((s) => { if (s.type === "codec") codecs.set(s.id, s.mimeType); });
    const byMid = new Map();
    for (const [source, entry] of this.entries) byMid.set(entry.transceiver.mid, { source, entry });
    const out = [];
    report.forEach((s) => {
      if (s.type !== "outbound-rtp") return;
      const sender = byMid.get(s.mid);
      out.push({ source: sender ? sender.source : null, kind: s.kind, rid: s.rid || null,
                 label: sender && sender.entry.track ? sender.entry.track.label : null,
                 scalabilityMode: s.scalabilityMode || null, codec: codecs.get(s.codecId) || null,
                 framesEncoded: s.framesEncoded || 0, bytesSent: s.bytesSent || 0 });
    });
    return out;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.pc.close();
  }
}
