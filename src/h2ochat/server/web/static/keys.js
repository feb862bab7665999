// A person's place on the page (README "People: sign-in for teams"): who is signed in (by the identity
// proxy, or here through OpenID Connect), in the sidebar, with Sign in / Sign out where the server signs
// people in itself; their API keys in a dialog (make one, see it once, revoke); for admins a link to the
// use by person. An anonymous session sees only "Sign in", and only on a server with sign-in.

import * as api from "./api.js";
import { listRow, shownError, whenOf } from "./devices.js";

export async function showPerson({ line, keysButton, usageLink, signIn, signOut }) {
  const found = await api.person().catch(() => null);
  if (!found) return;
  const { person } = found;
  if (!person) {
    if (!found.signIn) return;
    // Back to the page as it is when clicked, once signed in (the server takes only a path of its own).
    signIn.addEventListener("click", () => {
      signIn.href = `login?next=${encodeURIComponent(location.pathname + location.search)}`;
    });
    signIn.hidden = false;
    return;
  }
  line.textContent = `Signed in as ${person.name}`;
  line.hidden = keysButton.hidden = false;
  usageLink.hidden = !person.isAdmin;
  signOut.hidden = !person.canSignOut;
  signOut.addEventListener("click", async () => {
    signOut.disabled = true;
    await api.signOut().catch(() => {});
    location.replace(document.baseURI); // this browser's conversations were the person's: none here now
  });
}

export class KeysDialog {
  constructor({ button, dialog }) {
    Object.assign(this, { dialog });
    this.name = dialog.querySelector("#key-name");
    this.made = dialog.querySelector("#new-key");
    this.value = dialog.querySelector("#new-key-value");
    this.list = dialog.querySelector(".key-list");
    this.error = dialog.querySelector(".error");
    button.addEventListener("click", () => this.open());
    dialog.querySelector('[data-action="close"]').addEventListener("click", () => dialog.close());
    dialog.querySelector("form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.make();
    });
    this.list.addEventListener("click", (event) => {
      const revoke = event.target.closest("button[data-key]");
      if (revoke) this.revoke(revoke);
    });
  }

  async open() {
    shownError(this.error, null);
    this.made.hidden = true; // a key is shown once: not again when the dialog opens anew
    this.value.value = this.name.value = "";
    this.dialog.showModal();
    this.name.focus();
    await this.refresh();
  }

  async refresh() {
    try {
      const keys = await api.apiKeys();
      this.list.replaceChildren(...keys.map((key) => this.row(key)));
    } catch (error) {
      shownError(this.error, error);
    }
  }

  row(key) {
    const used = key.lastUsedAt ? `last used ${whenOf(key.lastUsedAt)}` : "never used";
    const detail = key.revokedAt ? `Revoked ${whenOf(key.revokedAt)}` : `Made ${whenOf(key.createdAt)} · ${used}`;
    let revoke = null;
    if (!key.revokedAt) {
      revoke = document.createElement("button");
      revoke.type = "button";
      revoke.className = "ghost small";
      revoke.dataset.key = key.id;
      revoke.textContent = "Revoke";
      revoke.setAttribute("aria-label", `Revoke ${key.name}, made ${whenOf(key.createdAt)}`);
    }
    return listRow(key.name, detail, revoke);
  }

  async make() {
    shownError(this.error, null);
    try {
      const made = await api.makeApiKey(this.name.value);
      this.value.value = made.key;
      this.made.hidden = false;
      this.name.value = "";
      this.value.select();
    } catch (error) {
      shownError(this.error, error);
      this.name.focus();
      return;
    }
    await this.refresh();
  }

  async revoke(button) {
    button.disabled = true;
    shownError(this.error, null);
    try {
      await api.revokeApiKey(button.dataset.key);
    } catch (error) {
      button.disabled = false;
      shownError(this.error, error);
      return;
    }
    await this.refresh();
    this.name.focus();
  }
}
