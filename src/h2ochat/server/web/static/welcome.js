// The welcome gate: on a session's first visit a dialog says which model answers and that answers can
// be wrong; "Start chatting" posts the settings form with the chosen model, and only then can one send.

import * as api from "./api.js";

const $ = (id) => document.getElementById(id);

export class WelcomeGate {
  // facts: the page's (welcomeGate, accepted); model(): the model chosen; onAccepted(): after the form.
  constructor({ facts, model, onAccepted }) {
    Object.assign(this, { facts, model, onAccepted });
    this.dialog = $("welcome");
    this.dialog.addEventListener("cancel", (event) => event.preventDefault()); // Escape does not skip it
    $("welcome-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.accept();
    });
  }

  get passed() {
    return !this.facts.welcomeGate || this.facts.accepted;
  }

  show() {
    if (!this.dialog.open) this.dialog.showModal();
    $("start").focus();
  }

  async accept() {
    try {
      await api.acceptSettings(this.model());
    } catch (error) {
      $("welcome-error").textContent = error.message;
      $("welcome-error").hidden = false;
      return;
    }
    this.facts.accepted = true;
    this.dialog.close();
    this.onAccepted();
  }
}
