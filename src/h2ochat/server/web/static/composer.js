// The text box and its buttons: grows with its content, Enter sends, Shift+Enter adds a line,
// a counter near the server's input limit, Send blocked while an answer streams.

export class Composer {
  constructor({ form, textarea, send, stop, counter, limit, onSend, onStop }) {
    Object.assign(this, { form, textarea, send, stop, counter, limit, onSend, onStop });
    this.busy = false;
    this.tokenLimit = null; // the model's, from /api/models, where the server knows its tokens
    textarea.addEventListener("input", () => this.changed());
    textarea.addEventListener("keydown", (event) => {
      // isComposing: Enter that ends an input method's composition (Japanese, Chinese...) is not a send.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit();
      }
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    stop.addEventListener("click", () => this.onStop());
    this.changed();
  }

  submit() {
    const text = this.textarea.value;
    if (this.busy || !text.trim() || text.length > this.limit) return;
    this.onSend(text);
  }

  take() {
    const text = this.textarea.value;
    this.setText("");
    return text;
  }

  setText(text) {
    this.textarea.value = text;
    this.changed();
  }

  changed() {
    const area = this.textarea;
    area.style.height = "auto"; // CSSOM, not an inline style attribute: the CSP allows it
    area.style.height = `${Math.min(area.scrollHeight, Math.round(window.innerHeight * 0.4))}px`;
    const length = area.value.length;
    // About four characters a token in English: an estimate, so the server has the last word.
    const tokens = Math.ceil(length / 4);
    const byTokens = this.tokenLimit && tokens >= this.tokenLimit * 0.8 && length <= this.limit;
    this.counter.hidden = !(byTokens || length >= this.limit * 0.9);
    this.counter.textContent = byTokens
      ? `About ${tokens.toLocaleString("en")} of the ${this.tokenLimit.toLocaleString("en")} tokens this model reads at once`
      : `${length.toLocaleString("en")} / ${this.limit.toLocaleString("en")} characters`;
    this.counter.classList.toggle("over", length > this.limit || (byTokens && tokens > this.tokenLimit));
    this.updateButtons();
  }

  setTokenLimit(limit) {
    this.tokenLimit = limit || null;
    this.changed();
  }

  setBusy(busy) {
    this.busy = busy;
    this.stop.hidden = !busy;
    this.send.hidden = busy;
    this.updateButtons();
    if (!busy) this.textarea.focus();
  }

  updateButtons() {
    const text = this.textarea.value;
    this.send.disabled = this.busy || !text.trim() || text.length > this.limit;
  }

  focus() {
    this.textarea.focus();
  }
}
