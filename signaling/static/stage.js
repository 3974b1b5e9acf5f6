// The stage: a listener's request to speak, a moderator's queue of requests,
// the audience list, and invitations (docs/protocol.md, "Stage and moderation").

const $ = (id) => document.getElementById(id);

function button(label, onClick, className = "") {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (className) b.className = className;
  b.addEventListener("click", onClick);
  return b;
}

export class StageUI {
  /**
   * @param {{request: Function, cancel: Function, approve: Function, deny: Function,
   *          invite: Function, respond: Function}} act  what the buttons do
   */
  constructor(act) {
    this.act = act;
    this.requestState = "none"; // none | pending | approved | denied | timeout | cancelled
    this.requests = new Map(); // participant id -> {participant, message}
    this.speakButton = $("speak");
    this.speakButton.addEventListener("click", () => {
      if (this.requestState === "pending") this.act.cancel();
      else this.act.request();
    });
    $("invite-accept").addEventListener("click", () => this.answerInvite(true));
    $("invite-decline").addEventListener("click", () => this.answerInvite(false));
    $("invite").addEventListener("keydown", (e) => { if (e.key === "Escape") this.answerInvite(false); });
  }

  /** Show or hide what belongs to the audience and to moderators. */
  setGrants(grants) {
    const audience = !!grants && !grants.can_publish && !!grants.can_request_publish;
    this.speakButton.hidden = !audience;
    $("requests-panel").hidden = !(grants && grants.room_admin);
    if (grants && grants.can_publish && this.requestState === "pending") this.requestState = "approved";
    if (audience && this.requestState === "approved") this.requestState = "none"; // back in the audience
    this.renderSpeak();
  }

  setRequest(state) {
    this.requestState = state;
    this.renderSpeak();
  }

  renderSpeak() {
    const b = this.speakButton;
    const pending = this.requestState === "pending";
    b.textContent = pending ? "Cancel request" : "Request to speak";
    b.setAttribute("aria-pressed", String(pending));
    b.dataset.state = this.requestState;
    const text = {
      pending: "Request to speak sent; waiting for a moderator…",
      denied: "Your request to speak was declined.",
      timeout: "No moderator answered your request to speak.",
      approved: "You are on stage.",
    }[this.requestState] || "";
    const status = $("speak-status");
    status.textContent = b.hidden && this.requestState !== "approved" ? "" : text;
    status.hidden = !status.textContent;
  }

  // -- moderators ------------------------------------------------------------
  addRequest(participant, message) {
    this.requests.set(participant.id, { participant, message: message || "" });
    this.renderRequests();
  }

  dropRequest(pid) {
    if (this.requests.delete(pid)) this.renderRequests();
  }

  renderRequests() {
    const list = $("requests");
    list.replaceChildren();
    for (const { participant, message } of this.requests.values()) {
      const name = participant.name || participant.identity;
      const li = document.createElement("li");
      li.dataset.participant = participant.id;
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = message ? `${name}: “${message}”` : name;
      const approve = button("Approve", () => this.act.approve(participant.id), "approve");
      approve.setAttribute("aria-label", `Approve ${name}`);
      const deny = button("Deny", () => this.act.deny(participant.id), "deny");
      deny.setAttribute("aria-label", `Deny ${name}`);
      li.append(who, approve, deny);
      list.append(li);
    }
    $("requests-empty").hidden = this.requests.size > 0;
    $("requests-count").textContent = this.requests.size ? `(${this.requests.size})` : "";
  }

  /** The audience list; moderators can invite from it. */
  renderAudience(people, isModerator) {
    const list = $("audience");
    list.replaceChildren();
    for (const p of people) {
      const name = p.name || p.identity;
      const li = document.createElement("li");
      li.dataset.participant = p.id;
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = p.self ? `${name} (you)` : name;
      li.append(who);
      if (isModerator && !p.self) {
        const invite = button("Invite", () => this.act.invite(p.id));
        invite.setAttribute("aria-label", `Invite ${name} to the stage`);
        li.append(invite);
      }
      list.append(li);
    }
    $("audience-panel").hidden = people.length === 0;
  }

  // -- invitations -------------------------------------------------------------
  showInvite(byName, message) {
    const dialog = $("invite");
    $("invite-text").textContent = `${byName || "A moderator"} invites you on stage${message ? `: “${message}”` : "."}`;
    dialog.hidden = false;
    $("invite-accept").focus();
  }

  hideInvite() { $("invite").hidden = true; }

  answerInvite(accept) {
    if ($("invite").hidden) return;
    this.hideInvite();
    this.act.respond(accept);
  }

  reset() {
    this.requests.clear();
    this.renderRequests();
    this.hideInvite();
    this.requestState = "none";
    this.renderSpeak();
  }
}
