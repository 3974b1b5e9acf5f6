// Tile sizes for the node (docs/protocol.md, "track-size"): the size, in device
// pixels, at which each received video is shown, so the SFU can send a small
// tile a small simulcast layer. Reports are sent only when a size changed by
// more than a tenth, batched once a second, at most MAX_PER_FLUSH a second, so a
// window being resized never comes near the socket's rate limit.

const FLUSH_EVERY = 1000; // ms
const MAX_PER_FLUSH = 8;
const CHANGE = 0.1; // relative change worth a report

function changed(before, now) {
  if (!before) return true;
  if ((before.width === 0) !== (now.width === 0)) return true;
  return Math.abs(now.width - before.width) > CHANGE * Math.max(before.width, 1)
    || Math.abs(now.height - before.height) > CHANGE * Math.max(before.height, 1);
}

export class TileSizes {
  /** @param {(message: object) => boolean} send  sends one message on the socket */
  constructor(send) {
    this.send = send;
    this.sent = new Map(); // track id -> {width, height} last sent
    this.pending = new Map(); // track id -> {width, height} to send
    this.elements = new Map(); // element -> track id
    this.timer = null;
    this.observer = new ResizeObserver((entries) => {
      for (const entry of entries) this.measure(entry.target, entry.contentRect);
    });
  }

  /** Report the size of a received video's element from now on. */
  watch(element, trackId) {
    this.elements.set(element, trackId);
    this.observer.observe(element);
  }

  unwatch(element) {
    const trackId = this.elements.get(element);
    if (trackId === undefined) return;
    this.elements.delete(element);
    this.observer.unobserve(element);
    this.sent.delete(trackId);
    this.pending.delete(trackId);
  }

  measure(element, rect) {
    const trackId = this.elements.get(element);
    if (trackId !== undefined) this.queue(trackId, rect);
  }

  queue(trackId, rect) {
    const ratio = window.devicePixelRatio || 1;
    const size = { width: Math.round(rect.width * ratio), height: Math.round(rect.height * ratio) };
    if (!changed(this.sent.get(trackId), size)) {
      this.pending.delete(trackId);
      return;
    }
    this.pending.set(trackId, size);
    if (this.timer === null) this.timer = setTimeout(() => this.flush(), this.sent.size ? FLUSH_EVERY : 0);
  }

  flush() {
    this.timer = null;
    let count = 0;
    for (const [trackId, size] of [...this.pending]) {
      if (count++ >= MAX_PER_FLUSH) break;
      this.pending.delete(trackId);
      if (this.send({ type: "track-size", track: trackId, width: size.width, height: size.height })) {
        this.sent.set(trackId, size);
      }
    }
    if (this.pending.size) this.timer = setTimeout(() => this.flush(), FLUSH_EVERY);
  }

  /** What was last reported, by track id (for tests). */
  reported() { return Object.fromEntries(this.sent); }
}
