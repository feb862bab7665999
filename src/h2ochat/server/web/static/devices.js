// One history in several browsers (docs/protocol.md section 17). "Use this history on another device"
// shows a one-time code, its link and the time it has left, and the browsers attached, each with Detach;
// "Have a code?" (the sidebar's, and the welcome gate's) links this browser with a code, as the code's
// link does (it opens the page at #link=CODE). Linking or detaching this browser reloads the page.

import * as api from "./api.js";

export function shownError(box, error) {
  box.textContent = error ? error.message : "";
  box.hidden = !error;
}

export function whenOf(stored) {
  const when = new Date(stored);
  return Number.isNaN(when.getTime()) ? stored : when.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function freshPage() {
  location.replace(location.pathname + location.search); // without the #link= fragment
}

// A row of a dialog's list (devices here, API keys in keys.js): a name, a muted line, and a button if any.
export function listRow(title, detail, button) {
  const li = document.createElement("li");
  li.className = "share";
  const name = document.createElement("strong");
  name.textContent = title;
  const when = document.createElement("span");
  when.className = "muted";
  when.textContent = detail;
  const text = document.createElement("div");
  text.append(name, when);
  li.append(text);
  if (button) li.append(button);
  return li;
}

export class DevicesDialog {
  constructor({ button, dialog }) {
    Object.assign(this, { dialog });
    this.code = dialog.querySelector("#device-code");
    this.link = dialog.querySelector("#device-link");
    this.left = dialog.querySelector("#device-code-left");
    this.list = dialog.querySelector(".device-list");
    this.error = dialog.querySelector(".error");
    button.addEventListener("click", () => this.open());
    dialog.querySelector('[data-action="new-code"]').addEventListener("click", () => this.makeCode());
    dialog.addEventListener("close", () => clearInterval(this.timer));
    this.list.addEventListener("click", (event) => {
      const detach = event.target.closest("button[data-device]");
      if (detach) this.detach(detach);
    });
  }

  async open() {
    shownError(this.error, null);
    this.list.replaceChildren();
    this.dialog.showModal();
    await this.makeCode();
    await this.refresh();
  }

  async makeCode() {
    clearInterval(this.timer);
    this.code.value = this.link.value = "";
    this.left.textContent = "Making a code…";
    try {
      const { code, url, expiresAt } = await api.deviceCode();
      Object.assign(this, { expiresAt: new Date(expiresAt) });
      this.code.value = code;
      this.link.value = url;
    } catch (error) {
      this.left.textContent = "";
      shownError(this.error, error);
      return;
    }
    this.tick();
    this.timer = setInterval(() => this.tick(), 1000);
  }

  tick() {
    const seconds = Math.max(0, Math.round((this.expiresAt - Date.now()) / 1000));
    if (!seconds) {
      clearInterval(this.timer);
      this.left.textContent = "This code has expired: choose New code.";
      return;
    }
    const minutes = Math.floor(seconds / 60);
    this.left.textContent = `The code works once, for ${minutes}:${String(seconds % 60).padStart(2, "0")} more.`;
  }

  async refresh() {
    try {
      const items = await api.devices();
      this.list.replaceChildren(...items.map((item) => this.row(item)));
    } catch (error) {
      shownError(this.error, error);
    }
  }

  row(item) {
    const detach = document.createElement("button");
    detach.type = "button";
    detach.className = "ghost small";
    detach.dataset.device = item.id;
    detach.dataset.current = item.current ? "yes" : "";
    detach.textContent = "Detach";
    detach.setAttribute("aria-label", item.current ? "Detach this browser" : `Detach ${item.label}, attached ${whenOf(item.createdAt)}`);
    const name = item.current ? `${item.label} (this browser)` : item.label;
    const li = listRow(name, `Attached ${whenOf(item.createdAt)} · last seen ${whenOf(item.lastSeen)}`, detach);
    li.classList.add("device");
    return li;
  }

  async detach(button) {
    const current = Boolean(button.dataset.current);
    if (current && !confirm("Detach this browser? It will no longer reach this history (a code from another device brings it back).")) return;
    button.disabled = true;
    shownError(this.error, null);
    try {
      await api.detachDevice(button.dataset.device);
    } catch (error) {
      button.disabled = false;
      shownError(this.error, error);
      return;
    }
    if (current) return freshPage();
    await this.refresh();
    this.dialog.querySelector('button[type="submit"]').focus();
  }
}

export class LinkDialog {
  constructor({ buttons, dialog }) {
    Object.assign(this, { dialog });
    this.input = dialog.querySelector("#link-code");
    this.warning = dialog.querySelector("#link-warning");
    this.error = dialog.querySelector(".error");
    for (const button of buttons) button.addEventListener("click", () => this.open(""));
    dialog.querySelector('[data-action="cancel"]').addEventListener("click", () => dialog.close());
    dialog.querySelector("form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.link();
    });
  }

  fromLink() {
    const fromLink = /^#link=([A-Za-z0-9-]*)$/.exec(location.hash);
    if (fromLink) this.open(fromLink[1]);
  }

  async open(code) {
    shownError(this.error, null);
    this.input.value = code;
    this.warning.hidden = true;
    if (this.dialog.open) this.dialog.close(); // shown again on top (of the welcome gate, say)
    this.dialog.showModal();
    this.input.focus();
    // Linking replaces this browser's cookie: its own conversations stay behind, out of its reach.
    const own = await api.conversations().catch(() => []);
    if (own.length) {
      this.warning.textContent = `This browser has ${own.length} conversation${own.length === 1 ? "" : "s"} of its own. After linking it shows the other device's history instead, and cannot reach these any more: export what you want to keep first.`;
      this.warning.hidden = false;
    }
  }

  async link() {
    shownError(this.error, null);
    try {
      await api.linkDevice(this.input.value);
    } catch (error) {
      shownError(this.error, error);
      this.input.focus();
      return;
    }
    freshPage();
  }
}
