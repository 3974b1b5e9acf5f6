// The subscribe connection: the node's SFU offers whenever what this page
// receives changes, this page answers (docs/protocol.md, "Receiving"). m-lines
// are reused: the `tracks` map of the latest offer says which participant's
// track each mid carries. The node's data channel "parley" rides on it.

export class Subscriber {
  /**
   * @param {import("./signal.js").Signal} signal
   * @param {RTCIceServer[]} iceServers
   * @param {{bind: Function, unbind: Function, data: Function, channel: Function, failed: Function}} on
   *   bind(mid, {participant, track, kind}, mediaTrack) → false to refuse; unbind(mid, binding);
   *   data(message); channel(open: boolean); failed()
   */
  constructor(signal, iceServers, on) {
    this.signal = signal;
    this.on = on;
    this.mapping = {};
    this.bindings = new Map(); // mid -> {participant, track, kind, media}
    this.held = [];
    this.ready = false;
    this.closed = false;
    this.channel = null;
    this.offers = Promise.resolve();
    this.answered = 0;
    const pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
    this.pc = pc;
    pc.onicecandidate = (e) => this.trickle(e.candidate);
    pc.ontrack = (e) => {
      // Fires again when a reused m-line starts carrying another participant's track.
      const mid = e.transceiver.mid;
      if (this.mapping[mid]) this.bind(mid, this.mapping[mid], e.transceiver.receiver.track);
    };
    pc.ondatachannel = (e) => { if (e.channel.label === "parley") this.openChannel(e.channel); };
    let lostTimer = null;
    pc.onconnectionstatechange = () => {
      if (this.closed) return;
      const state = pc.connectionState;
      clearTimeout(lostTimer);
      if (state === "failed") on.failed();
      // "disconnected" may heal by itself; give it a few seconds.
      else if (state === "disconnected") lostTimer = setTimeout(() => { if (!this.closed) on.failed(); }, 5000);
    };
  }

  trickle(c) {
    const candidate = c && c.candidate
      ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } : null;
    if (this.ready) this.signal.send({ type: "candidate", target: "subscriber", candidate });
    else this.held.push(candidate);
  }

  /** Queue a subscriber offer; offers are answered one at a time, in order. */
  offer(m) {
    const step = this.offers.then(() => this.apply(m));
    this.offers = step.catch(() => {});
    return step;
  }

  async apply(m) {
    if (this.closed) return;
    const pc = this.pc;
    this.mapping = m.tracks || {};
    await pc.setRemoteDescription({ type: "offer", sdp: m.sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    const accepted = this.signal.request({ type: "answer", sdp: pc.localDescription.sdp });
    this.ready = true;
    for (const candidate of this.held.splice(0)) {
      this.signal.send({ type: "candidate", target: "subscriber", candidate });
    }
    this.reconcile();
    await accepted;
    this.answered += 1;
  }

  /** Make the bindings match what each transceiver receives now. */
  reconcile() {
    const live = new Set();
    for (const t of this.pc.getTransceivers()) {
      const info = t.mid === null ? undefined : this.mapping[t.mid];
      const receiving = t.currentDirection === "recvonly" || t.currentDirection === "sendrecv";
      if (info && receiving && this.bind(t.mid, info, t.receiver.track)) live.add(t.mid);
    }
    for (const mid of [...this.bindings.keys()]) if (!live.has(mid)) this.unbind(mid);
  }

  bind(mid, info, media) {
    const current = this.bindings.get(mid);
    if (current && current.track === info.track && current.media === media) return true;
    if (current) this.unbind(mid);
    const binding = { participant: info.participant, track: info.track, kind: info.kind, media };
    if (this.on.bind(mid, binding, media) === false) return false;
    this.bindings.set(mid, binding);
    return true;
  }

  unbind(mid) {
    const binding = this.bindings.get(mid);
    if (!binding) return;
    this.bindings.delete(mid);
    this.on.unbind(mid, binding);
  }

  unbindWhere(test) {
    for (const [mid, b] of [...this.bindings]) if (test(b)) this.unbind(mid);
  }

  openChannel(ch) {
    this.channel = ch;
    ch.onopen = () => this.on.channel(true);
    ch.onclose = () => this.on.channel(false);
    ch.onmessage = (e) => {
      let m;
      try { m = JSON.parse(e.data); } catch { return; }
      this.on.data(m);
    };
    if (ch.readyState === "open") this.on.channel(true);
  }

  /** Send app data on the channel; false when it is not open (use the socket then). */
  sendData(message) {
    if (!this.channel || this.channel.readyState !== "open") return false;
    this.channel.send(JSON.stringify(message));
    return true;
  }

  /** framesDecoded per "participant/trackId" of the video received now. */
  async decoded() {
    const out = new Map();
    const report = await this.pc.getStats();
    report.forEach((s) => {
      if (s.type !== "inbound-rtp" || s.kind !== "video") return;
      const b = this.bindings.get(s.mid);
      if (b) {
        out.set(b.track, { participant: b.participant, frames: s.framesDecoded || 0,
                           width: s.frameWidth || 0, height: s.frameHeight || 0 });
      }
    });
    return out;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.unbindWhere(() => true);
    this.pc.close();
  }
}
