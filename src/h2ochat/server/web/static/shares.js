// Sharing, for the conversation's owner (docs/protocol.md section 14): "Share" (in the header, or
// under More on phones) makes a read-only link to the conversation on screen, copies it and shows it,
// with how long it works; "Shared links" (the sidebar's) lists this session's links and revokes them.

import * as api from "./api.js";
import { copyText } from "./markdown.js";

function shownError(box, error) {
  box.textContent = error ? error.message : "";
  box.hidden = !error;
}

function dateOf(stored) {
  const when = new Date(stored);
  return Number.isNaN(when.getTime()) ? stored : when.toLocaleDateString(undefined, { dateStyle: "medium" });
}

export class ShareDialog {
  // current(): the conversation on screen (the buttons are enabled only when it has messages).
  constructor({ buttons, dialog, current }) {
    Object.assign(this, { dialog, current });
    this.link = dialog.querySelector("#share-link");
    this.expiry = dialog.querySelector("#share-expiry");
    this.status = dialog.querySelector("#share-status");
    this.error = dialog.querySelector(".error");
    for (const button of buttons) button.addEventListener("click", () => this.open());
    this.expiry.addEventListener("change", () => this.make());
    dialog.querySelector('[data-action="copy"]').addEventListener("click", () => this.copy());
  }

  async open() {
    this.conversation = this.current(); // the one shared, whatever the screen shows by then
    if (!this.conversation) return;
    this.expiry.value = "";
    this.link.value = "";
    this.dialog.showModal();
    if (await this.make()) await this.copy();
  }

  // The link for the chosen expiry: the same link again while the conversation has not changed.
  async make() {
    shownError(this.error, null);
    this.status.textContent = "Making the link…";
    try {
      const { url } = await api.share(this.conversation.id, Number(this.expiry.value) || null);
      this.link.value = url;
      this.status.textContent = "";
      return true;
    } catch (error) {
      this.link.value = "";
      this.status.textContent = "";
      shownError(this.error, error);
      return false;
    }
  }

  async copy() {
    if (!this.link.value) return;
    this.link.select();
    const copied = await copyText(this.link.value);
    this.status.textContent = copied ? "Link copied." : "Select the link above and copy it.";
  }
}

export class SharedLinks {
  constructor({ button, dialog }) {
    Object.assign(this, { dialog });
    this.list = dialog.querySelector(".share-list");
    this.empty = dialog.querySelector(".list-empty");
    this.error = dialog.querySelector(".error");
    button.addEventListener("click", () => this.open());
    this.list.addEventListener("click", (event) => {
      const revoke = event.target.closest("button[data-share]");
      if (revoke) this.revoke(revoke);
    });
  }

  async open() {
    this.list.replaceChildren();
    this.empty.hidden = true;
    shownError(this.error, null);
    this.dialog.showModal();
    await this.refresh();
  }

  async refresh() {
    let items;
    try {
      items = await api.shares();
    } catch (error) {
      shownError(this.error, error);
      return;
    }
    this.list.replaceChildren(...items.map((item) => this.row(item)));
    this.empty.hidden = items.length > 0;
  }

  row(item) {
    const li = document.createElement("li");
    li.className = "share";
    const link = document.createElement("a");
    link.href = item.url;
    link.target = "_blank";
    link.rel = "noopener";
    link.textContent = item.title;
    const when = document.createElement("span");
    when.className = "muted";
    when.textContent = `Shared ${dateOf(item.createdAt)}${item.expiresAt ? ` · expires ${dateOf(item.expiresAt)}` : ""}`;
    const revoke = document.createElement("button");
    revoke.type = "button";
    revoke.className = "ghost small";
    revoke.dataset.share = item.shareId;
    revoke.textContent = "Revoke";
    revoke.setAttribute("aria-label", `Revoke the link to “${item.title}”`);
    const text = document.createElement("div");
    text.append(link, when);
    li.append(text, revoke);
    return li;
  }

  async revoke(button) {
    button.disabled = true;
    shownError(this.error, null);
    try {
      await api.revokeShare(button.dataset.share);
    } catch (error) {
      button.disabled = false;
      shownError(this.error, error);
      return;
    }
    const rows = [...this.list.children];
    const index = rows.indexOf(button.closest("li"));
    await this.refresh();
    // The focus was on the row that went: to the row now in its place, else to Close.
    const next = this.list.children[Math.min(index, this.list.children.length - 1)];
    (next?.querySelector("button") || this.dialog.querySelector('button[type="submit"]')).focus();
  }
}
