// Taking the history elsewhere (docs/protocol.md section 16), from the sidebar: "Export all" downloads
// every conversation of this browser's session (a zip: the JSON and one Markdown file each); "Import"
// adds an export, or ChatGPT's conversations.json, and says what it added or why the server refused.

import * as api from "./api.js";

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

export class Portability {
  // onImported(): called after an import added conversations (the sidebar lists them).
  constructor({ button, dialog, onImported }) {
    this.dialog = dialog;
    this.onImported = onImported;
    this.file = dialog.querySelector('input[type="file"]');
    this.start = dialog.querySelector("[data-import]");
    this.result = dialog.querySelector("[role=status]");
    this.error = dialog.querySelector(".error");
    button.addEventListener("click", () => this.open());
    this.file.addEventListener("change", () => (this.start.disabled = !this.file.files.length));
    this.start.addEventListener("click", () => this.send());
  }

  open() {
    this.file.value = "";
    this.start.disabled = true;
    this.show(null, null);
    this.dialog.showModal();
  }

  show(result, error) {
    this.result.textContent = result || "";
    this.result.hidden = !result;
    this.error.textContent = error ? error.message : "";
    this.error.hidden = !error;
  }

  async send() {
    const file = this.file.files[0];
    if (!file) return;
    this.start.disabled = true;
    this.show("Importing…", null);
    let answer;
    try {
      answer = await api.importHistory(file);
    } catch (error) {
      this.show(null, error);
      this.start.disabled = false;
      return;
    }
    const added = plural(answer.imported, "conversation imported", "conversations imported");
    this.show(`${added}; ${plural(answer.skipped, "was", "were")} already here.`, null);
    if (answer.imported) this.onImported();
  }
}
