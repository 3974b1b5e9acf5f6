// One signalling socket (docs/protocol.md): requests with ids and their replies,
// events, and a keep-alive. A Signal is used for one connection only; the
// meeting opens a new one to reconnect.

const PING_EVERY = 5000; // ms between application pings
const SILENCE_LIMIT = 15000; // ms without an answer to a ping before the socket counts as dead

export class SignalClosed extends Error {
  constructor(code, reason) {
    super(`signalling closed (${code}${reason ? ` ${reason}` : ""})`);
    this.code = code;
    this.reason = reason;
  }
}

export class RequestError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

export class Signal {
  /**
   * @param {string} url  ws:// or wss:// URL of /rtc
   * @param {{onEvent: (m: object) => void, onClose: (code: number, reason: string) => void}} handlers
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, timer}
    this.closed = false;
    this.awaiting = 0; // when the unanswered ping was sent; 0: something arrived since
    this.timer = null;
  }

  /** Resolves when the socket is open; rejects if it closes first. */
  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      ws.onopen = () => {
        this.timer = setInterval(() => this.keepAlive(), PING_EVERY);
        resolve();
      };
      ws.onmessage = (ev) => {
        this.awaiting = 0;
        let m;
        try { m = JSON.parse(ev.data); } catch { return; }
        this.dispatch(m);
      };
      ws.onclose = (ev) => {
        reject(new SignalClosed(ev.code, ev.reason));
        this.finish(ev.code, ev.reason);
      };
    });
  }

  dispatch(m) {
    if (m.id !== undefined && this.pending.has(m.id)) {
      const { resolve, reject, timer } = this.pending.get(m.id);
      clearTimeout(timer);
      this.pending.delete(m.id);
      if (m.type === "error") reject(new RequestError(m.code, m.message));
      else resolve(m);
      return;
    }
    if (m.type === "pong") return;
    this.handlers.onEvent(m);
  }

  /** Ping, and give up on a socket that leaves a ping unanswered (a dead network). */
  keepAlive() {
    const now = Date.now();
    if (this.awaiting && now - this.awaiting > SILENCE_LIMIT) {
      this.close(4000, "silent");
      return;
    }
    if (!this.awaiting && this.send({ type: "ping" })) this.awaiting = now;
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  /** Send with a fresh id; resolves with the reply, rejects with RequestError or on close. */
  request(message, timeoutMs = 15000) {
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      if (this.closed) {
        reject(new SignalClosed(0, "closed"));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${message.type}: no reply within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.send({ ...message, id });
    });
  }

  /** Close from this side; onClose still runs once, with the given code. */
  close(code = 1000, reason = "") {
    if (this.closed) return;
    const ws = this.ws;
    this.finish(code, reason);
    if (ws) {
      ws.onclose = null;
      try { ws.close(code === 1000 ? 1000 : 4000, reason); } catch { ws.close(); }
    }
  }

  finish(code, reason) {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(new SignalClosed(code, reason));
    }
    this.pending.clear();
    this.handlers.onClose(code, reason);
  }
}
