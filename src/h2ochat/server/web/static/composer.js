// The text box and its buttons: grows with its content, Enter sends, Shift+Enter adds a line,
// a counter near the server's input limit, Send blocked while an answer streams.

export class Composer {
  constructor({ form, textarea, send, stop, counter, limit, onSend, onStop }) {
    Object.assign(this, { form, textarea, send, stop, counter, limit, onSend, onStop });
    this.busy = false;
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
    const near = length >= this.limit * 0.9;
    this.counter.hidden = !near;
    this.counter.textContent = `${length.toLocaleString("en")} / ${this.limit.toLocaleString("en")} characters`;
    this.counter.classList.toggle("over", length > this.limit);
    this.updateButtons();
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
