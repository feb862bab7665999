// The conversation's system prompt (issue 20): what the model reads before the conversation, in a
// dialog opened from the header's "System prompt" (on phones, More's). A conversation keeps its own
// on the server, applied from its next answer; a new chat starts with the model's default, and what
// the person writes there before the first message goes with the conversation when it is made.

import * as api from "./api.js";

export class SystemPromptDialog {
  // current(): the conversation on screen (null: a new chat); picker: the models (models.js), whose
  // chosen one's system prompt a new chat starts with.
  constructor({ buttons, dialog, current, picker }) {
    Object.assign(this, { dialog, current, picker });
    this.box = dialog.querySelector("textarea");
    this.error = dialog.querySelector(".error");
    this.draft = null; // a new chat's, once written; null: the model's default
    for (const button of buttons) button.addEventListener("click", () => this.open());
    dialog.querySelector("[data-action=cancel]").addEventListener("click", () => dialog.close());
    dialog.querySelector("form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.save();
    });
  }

  open() {
    this.conversation = this.current(); // the one saved to, whatever the screen shows by then
    const text = this.conversation ? this.conversation.preprompt : (this.draft ?? this.picker.info(this.picker.selected)?.preprompt);
    this.box.value = text ?? "";
    this.error.hidden = true;
    this.dialog.showModal();
    this.box.focus();
  }

  async save() {
    const text = this.box.value;
    if (!this.conversation) {
      this.draft = text;
      this.dialog.close();
      return;
    }
    try {
      await api.savePreprompt(this.conversation.id, text);
    } catch (error) {
      this.error.textContent = error.message;
      this.error.hidden = false;
      return;
    }
    this.conversation.preprompt = text;
    this.dialog.close();
  }

  // What a new conversation is made with (null: the model's default); the next new chat starts afresh.
  take() {
    const draft = this.draft;
    this.draft = null;
    return draft;
  }

  reset() {
    this.draft = null;
  }
}
