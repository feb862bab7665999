// A conversation's own settings (temperature, longest answer): a dialog opened from the header's
// Settings button, stored on the server with the conversation and sent with each of its messages.

import * as api from "./api.js";

const FIELDS = { temperature: "setting-temperature", max_new_tokens: "setting-max-new-tokens" };
const $ = (id) => document.getElementById(id);

// The parameters of a message: the exchange's own (a retry's), under the conversation's settings.
export const withSettings = (parameters, conversation) => ({ ...parameters, ...(conversation?.settings || {}) });

export class SettingsDialog {
  // current(): the conversation on screen; defaults(model): that model's configured parameters.
  constructor({ button, dialog, limit, current, defaults }) {
    Object.assign(this, { button, dialog, current, defaults });
    this.form = dialog.querySelector("form");
    this.error = dialog.querySelector(".error");
    if (limit) $(FIELDS.max_new_tokens).max = String(limit);
    button.addEventListener("click", () => this.open());
    dialog.querySelector("[data-action=cancel]").addEventListener("click", () => dialog.close());
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.save();
    });
  }

  // Settings belong to a conversation: a new chat has none until its first message makes it.
  enable(conversation) {
    this.button.disabled = !conversation;
  }

  open() {
    const conversation = this.current();
    if (!conversation) return;
    this.conversation = conversation; // the one saved to, whatever the screen shows by then
    const defaults = this.defaults(conversation.model) || {};
    for (const [name, id] of Object.entries(FIELDS)) {
      const input = $(id);
      input.value = conversation.settings?.[name] ?? "";
      input.placeholder = defaults[name] != null ? `Model default: ${defaults[name]}` : "Model default";
    }
    this.error.hidden = true;
    this.dialog.showModal();
    $(FIELDS.temperature).focus();
  }

  async save() {
    const conversation = this.conversation;
    const settings = {};
    for (const [name, id] of Object.entries(FIELDS)) {
      const value = $(id).value.trim();
      if (value !== "") settings[name] = Number(value); // empty: the model's default
    }
    try {
      await api.saveSettings(conversation.id, settings);
    } catch (error) {
      this.error.textContent = error.message;
      this.error.hidden = false;
      return;
    }
    conversation.settings = settings;
    this.dialog.close();
  }
}
