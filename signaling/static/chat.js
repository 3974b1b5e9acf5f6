// The chat panel: messages with the sender's name and the time, sent on the
// data channel (or the socket's `data` message when the channel is not open).

const TOPIC = "chat";

function clock(date) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export class Chat {
  /**
   * @param {{list: HTMLElement, form: HTMLFormElement, input: HTMLInputElement}} ui
   * @param {(message: object) => boolean} send  sends {topic, payload}; false when it could not
   */
  constructor(ui, send) {
    this.ui = ui;
    this.send = send;
    this.log = [];
    ui.form.addEventListener("submit", (e) => {
      e.preventDefault();
      const text = ui.input.value.trim();
      if (!text) return;
      if (!this.send({ topic: TOPIC, payload: { text } })) {
        this.notice("Not connected: the message was not sent.");
        return;
      }
      this.add({ from: null, name: "You", text, self: true });
      ui.input.value = "";
    });
  }

  enable(on) {
    this.ui.input.disabled = !on;
    this.ui.form.querySelector("button").disabled = !on;
  }

  /** A message that arrived: {from, identity, topic, payload}; `nameOf` maps ids to names. */
  receive(m, nameOf) {
    if (m.topic !== TOPIC || !m.payload) return;
    const text = typeof m.payload.text === "string" ? m.payload.text : null;
    if (text === null) return;
    this.add({ from: m.from || null, name: nameOf(m.from) || m.identity || "someone", text, self: false });
  }

  add({ from, name, text, self }) {
    const when = new Date();
    const entry = { from, name, text, self, time: clock(when), at: when.getTime() };
    this.log.push(entry);
    const li = document.createElement("li");
    li.className = self ? "msg self" : "msg";
    const head = document.createElement("p");
    head.className = "meta";
    const who = document.createElement("strong");
    who.textContent = name;
    const time = document.createElement("time");
    time.dateTime = when.toISOString();
    time.textContent = entry.time;
    head.append(who, " ", time);
    const body = document.createElement("p");
    body.className = "text";
    body.textContent = text;
    li.append(head, body);
    this.ui.list.append(li);
    li.scrollIntoView({ block: "nearest" });
  }

  /** A line from the page itself (joins, leaves, stage changes). */
  notice(text) {
    const li = document.createElement("li");
    li.className = "notice";
    li.textContent = text;
    this.ui.list.append(li);
    li.scrollIntoView({ block: "nearest" });
  }
}
