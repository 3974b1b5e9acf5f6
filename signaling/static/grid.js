// The grid of tiles: one per participant on stage (camera and microphone),
// one more per shared screen. The meeting computes a model per tile and calls
// render(); media elements are attached per subscriber m-line (mid).

const ASPECT = 16 / 9;
const GAP = 8; // px, as .grid's gap in style.css

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function initials(name) {
  const parts = String(name).trim().split(/[\s._-]+/).filter(Boolean);
  return (parts.slice(0, 2).map((p) => p[0]).join("") || "?").toUpperCase();
}

const MIC_OFF = '<svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true">'
  + '<path fill="currentColor" d="M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5'
  + 'a7 7 0 0 0 6 6.92V21h2v-3.08A7 7 0 0 0 19 11h-2z"/>'
  + '<path stroke="currentColor" stroke-width="2.2" stroke-linecap="round" d="M4 3l16 18"/></svg>';

const QUALITY_TEXT = { excellent: "excellent", good: "good", poor: "poor", lost: "lost" };

/** The columns and tile width that make n 16:9 tiles largest in a width×height box. */
export function fit(n, width, height) {
  let best = { cols: 1, tileWidth: 0 };
  for (let cols = 1; cols <= Math.max(1, n); cols++) {
    const rows = Math.ceil(n / cols);
    const w = Math.min((width - GAP * (cols - 1)) / cols, ((height - GAP * (rows - 1)) / rows) * ASPECT);
    if (w > best.tileWidth) best = { cols, tileWidth: w };
  }
  // Never smaller than a readable tile; the grid scrolls instead.
  const min = Math.min(width, 160);
  if (best.tileWidth < min) {
    const cols = Math.max(1, Math.floor((width + GAP) / (min + GAP)));
    best = { cols, tileWidth: (width - GAP * (cols - 1)) / cols };
  }
  return best;
}

export class Grid {
  /**
   * @param {HTMLElement} root  the <ul> holding the tiles
   * @param {(participant: string, action: string) => void} onAction  a tile menu choice
   */
  constructor(root, onAction) {
    this.root = root;
    this.onAction = onAction;
    this.tiles = new Map(); // key -> {el, refs, model}
    this.media = new Map(); // mid -> {key, kind, element}
    this.sizes = null; // a TileSizes (tilesize.js): received videos' sizes go to the node
    this.openMenu = null;
    // Laid out on the next frame: changing the tiles inside the observer would loop.
    new ResizeObserver(() => requestAnimationFrame(() => this.layout())).observe(root.parentElement);
    document.addEventListener("click", (e) => {
      if (this.openMenu && !this.openMenu.el.contains(e.target)) this.closeMenu(false);
    });
  }

  /** Make the tiles match the models (each {key, participant, source, name, …}). */
  render(models) {
    const keep = new Set(models.map((m) => m.key));
    for (const [key, tile] of this.tiles) {
      if (!keep.has(key)) {
        for (const [mid, m] of [...this.media]) if (m.key === key) this.detach(mid);
        tile.el.remove();
        this.tiles.delete(key);
      }
    }
    models.forEach((model, i) => {
      const tile = this.tiles.get(model.key) || this.create(model);
      this.update(tile, model);
      if (this.root.children[i] !== tile.el) this.root.insertBefore(tile.el, this.root.children[i] || null);
    });
    this.layout();
  }

  create(model) {
    const li = el("li", "tile");
    li.dataset.participant = model.participant;
    li.dataset.source = model.source;
    const media = el("div", "media");
    const placeholder = el("div", "placeholder");
    const avatar = el("span", "avatar");
    avatar.setAttribute("aria-hidden", "true");
    const why = el("span", "why");
    placeholder.append(avatar, why);
    const badge = el("p", "badge");
    badge.hidden = true;
    const bar = el("div", "bar");
    const name = el("span", "name");
    const mic = el("span", "mic-off");
    mic.innerHTML = MIC_OFF;
    mic.setAttribute("role", "img");
    mic.setAttribute("aria-label", "microphone muted");
    mic.title = "Microphone muted";
    const quality = el("span", "quality");
    quality.setAttribute("role", "img");
    for (let i = 0; i < 3; i++) quality.append(el("i"));
    bar.append(name, mic, quality);
    li.append(media, placeholder, badge, bar);
    const tile = { el: li, refs: { media, placeholder, avatar, why, badge, name, mic, quality, bar }, model };
    this.tiles.set(model.key, tile);
    return tile;
  }

  update(tile, m) {
    const r = tile.refs;
    tile.model = m;
    const label = m.source === "screen" ? `${m.name}'s screen` : m.name;
    r.name.textContent = m.local && m.source !== "screen" ? `${m.name} (you)` : label;
    tile.el.setAttribute("aria-label", label);
    tile.el.classList.toggle("speaking", !!m.speaking);
    tile.el.classList.toggle("local", !!m.local);
    tile.el.classList.toggle("screen", m.source === "screen");
    r.mic.hidden = !m.micMuted;
    r.quality.hidden = !m.quality || m.source === "screen";
    r.quality.dataset.quality = m.quality || "";
    r.quality.setAttribute("aria-label", `connection ${QUALITY_TEXT[m.quality] || "unknown"}`);
    r.quality.title = `Connection: ${QUALITY_TEXT[m.quality] || "unknown"}`;
    const hasVideo = [...this.media.values()].some((x) => x.key === m.key && x.kind === "video");
    const showVideo = hasVideo && !m.cameraOff;
    tile.el.classList.toggle("has-video", showVideo);
    r.placeholder.hidden = showVideo;
    r.avatar.textContent = initials(m.name);
    r.why.textContent = m.cameraOff ? "Camera off" : hasVideo ? "" : m.local ? "" : "No video";
    let badge = "";
    if (showVideo && m.paused) badge = "Video paused to save bandwidth";
    else if (showVideo && m.stalled) badge = "Video interrupted…";
    r.badge.textContent = badge;
    r.badge.hidden = !badge;
    tile.el.classList.toggle("paused", showVideo && !!m.paused);
    this.menuButton(tile, m);
  }

  menuButton(tile, m) {
    const wanted = m.menu && m.menu.length > 0;
    let button = tile.refs.menuButton;
    if (!wanted) {
      if (button) { button.remove(); tile.refs.menuButton = null; }
      return;
    }
    if (!button) {
      button = el("button", "tile-menu-button", "⋯");
      button.type = "button";
      button.setAttribute("aria-haspopup", "menu");
      button.setAttribute("aria-expanded", "false");
      button.addEventListener("click", (e) => {
        e.stopPropagation();
        if (this.openMenu && this.openMenu.tile === tile) this.closeMenu(true);
        else this.showMenu(tile);
      });
      tile.refs.bar.append(button);
      tile.refs.menuButton = button;
    }
    button.setAttribute("aria-label", `Options for ${m.name}`);
  }

  showMenu(tile) {
    this.closeMenu(false);
    const menu = el("div", "menu");
    menu.setAttribute("role", "menu");
    menu.setAttribute("aria-label", `Options for ${tile.model.name}`);
    for (const item of tile.model.menu) {
      const b = el("button", "", item.label);
      b.type = "button";
      b.setAttribute("role", "menuitem");
      b.addEventListener("click", (e) => {
        e.stopPropagation();
        this.closeMenu(true);
        this.onAction(tile.model.participant, item.action);
      });
      menu.append(b);
    }
    menu.addEventListener("keydown", (e) => {
      const items = [...menu.querySelectorAll("[role=menuitem]")];
      const at = items.indexOf(document.activeElement);
      if (e.key === "Escape") { e.preventDefault(); this.closeMenu(true); }
      else if (e.key === "ArrowDown") { e.preventDefault(); items[(at + 1) % items.length].focus(); }
      else if (e.key === "ArrowUp") { e.preventDefault(); items[(at - 1 + items.length) % items.length].focus(); }
      else if (e.key === "Tab") this.closeMenu(false);
    });
    tile.el.append(menu);
    tile.refs.menuButton.setAttribute("aria-expanded", "true");
    this.openMenu = { tile, el: menu };
    menu.querySelector("button").focus();
  }

  closeMenu(refocus) {
    const open = this.openMenu;
    if (!open) return;
    this.openMenu = null;
    open.el.remove();
    const button = open.tile.refs.menuButton;
    if (button) {
      button.setAttribute("aria-expanded", "false");
      if (refocus) button.focus();
    }
  }

  /** Show a received (or local) track in the tile `key`. */
  attach(key, mid, kind, media, trackId) {
    const tile = this.tiles.get(key);
    if (!tile) return;
    this.detach(mid);
    const element = el(kind === "video" ? "video" : "audio");
    element.autoplay = true;
    element.playsInline = true;
    if (trackId) {
      element.dataset.mid = mid;
      element.dataset.track = trackId;
    } else {
      element.dataset.local = mid;
    }
    if (kind === "video") {
      element.muted = true; // sound plays through the participant's audio element
      element.setAttribute("aria-label", `Video of ${tile.model.name}`);
      tile.refs.media.prepend(element);
    } else {
      tile.refs.media.append(element);
    }
    element.srcObject = new MediaStream([media]);
    this.media.set(mid, { key, kind, element, media });
    if (kind === "video" && trackId && this.sizes) this.sizes.watch(element, trackId);
    element.play().catch(() => this.needSound());
    this.update(tile, tile.model);
  }

  detach(mid) {
    const m = this.media.get(mid);
    if (!m) return;
    this.media.delete(mid);
    if (this.sizes) this.sizes.unwatch(m.element);
    m.element.srcObject = null;
    m.element.remove();
    const tile = this.tiles.get(m.key);
    if (tile) this.update(tile, tile.model);
  }

  /** Autoplay with sound needs a user gesture: offer one. */
  needSound() {
    const button = document.getElementById("sound");
    if (!button) return;
    button.hidden = false;
    button.onclick = () => {
      button.hidden = true;
      for (const m of this.media.values()) m.element.play().catch(() => {});
    };
  }

  layout() {
    const box = this.root.parentElement;
    const n = this.tiles.size;
    if (!n || !box.clientWidth) return;
    const width = box.clientWidth;
    // A narrow window scrolls: two columns at most, as wide as they fit.
    const { cols, tileWidth } = width < 600
      ? { cols: Math.min(n, 2), tileWidth: (width - GAP * (Math.min(n, 2) - 1)) / Math.min(n, 2) }
      : fit(n, width, box.clientHeight || width / ASPECT);
    const style = this.root.style;
    if (style.getPropertyValue("--cols") !== String(cols)) style.setProperty("--cols", String(cols));
    const w = `${Math.floor(tileWidth)}px`;
    if (style.getPropertyValue("--tile-w") !== w) style.setProperty("--tile-w", w);
    this.root.dataset.count = String(n);
  }

  clear() {
    this.closeMenu(false);
    for (const mid of [...this.media.keys()]) this.detach(mid);
    this.render([]);
  }

  /** What each tile shows, for tests and debugging. */
  describe() {
    return [...this.tiles.values()].map(({ el: li, model }) => ({
      participant: model.participant, source: model.source, name: model.name, local: !!model.local,
      video: li.classList.contains("has-video"), micMuted: !!model.micMuted, cameraOff: !!model.cameraOff,
      speaking: !!model.speaking, quality: model.quality || null, paused: !!model.paused,
      stalled: !!model.stalled,
    }));
  }
}
