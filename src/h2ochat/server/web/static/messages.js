// Messages on screen: one article per message ("You" or "Assistant"), the growing answer re-rendered
// at most once per animation frame, and the notes (errors, interruptions) beside a message.

import { detailsText, endingNote, sentence } from "./endings.js";
import { MarkdownView } from "./markdown.js";

export class MessageView {
  constructor(container, { id, role, content = "" }) {
    this.id = id;
    this.role = role;
    this.text = content;
    this.article = document.createElement("article");
    this.article.className = `message ${role}`;
    this.article.setAttribute("aria-label", role === "user" ? "You" : "Assistant");
    this.article.dataset.id = id;
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Assistant";
    this.body = document.createElement("div");
    this.body.className = role === "user" ? "body plain" : "body markdown";
    this.notes = document.createElement("div");
    this.notes.className = "notes";
    this.actions = document.createElement("div");
    this.actions.className = "actions";
    this.actions.append(actionButton("Copy", "copy"));
    this.meta = null; // an answer's ending and counts, once known (endings.js)
    this.article.append(who, this.body, this.notes, this.actions);
    container.append(this.article);
    this.markdown = role === "user" ? null : new MarkdownView(this.body);
    this.frame = 0;
    this.arrivals = [];
    this.waiting = [];
    this.draw();
  }

  // Draw the text; false when a burst of it is left for the next frame.
  draw() {
    if (this.markdown) return this.markdown.render(this.text);
    this.body.textContent = this.text;
    return true;
  }

  // A token arrived: draw on the next frame, however many tokens come before it.
  append(token) {
    this.text += token;
    if (window.h2ochatTrace) this.arrivals.push(performance.now());
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = 0;
    if (!this.draw()) {
      this.frame = requestAnimationFrame(() => this.flush());
      return;
    }
    for (const resolve of this.waiting.splice(0)) resolve();
    const trace = window.h2ochatTrace;
    if (trace && this.arrivals.length) {
      // A task queued from a frame callback runs once that frame is painted.
      const arrived = this.arrivals;
      this.arrivals = [];
      setTimeout(() => {
        const painted = performance.now();
        for (const time of arrived) trace.push(painted - time);
      }, 0);
    }
  }

  // Resolves once the text so far is on screen (a burst is drawn over several frames).
  drawn() {
    if (!this.frame) return Promise.resolve();
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  setStreaming(on) {
    this.article.classList.toggle("streaming", on);
    this.article.setAttribute("aria-busy", on ? "true" : "false");
  }

  note(text, kind = "error") {
    const note = document.createElement("p");
    note.className = `note ${kind}`;
    if (kind === "error") note.setAttribute("role", "alert");
    note.textContent = sentence(text);
    this.notes.append(note);
    return note;
  }

  // How the answer ended: a note when it is worth one, a Continue button after the token limit,
  // and Details, which shows the counts on demand.
  setEnding(meta, { last = false } = {}) {
    this.meta = meta;
    this.notes.querySelector(".ending")?.remove();
    const text = endingNote(meta);
    if (text) {
      const note = this.note(text, "info");
      note.classList.add("ending");
      if (meta.finishReason === "length" && meta.status === "done" && last) note.append(" ", actionButton("Continue", "continue"));
    }
    if (!this.actions.querySelector('[data-action="details"]')) {
      const details = actionButton("Details", "details");
      details.setAttribute("aria-expanded", "false");
      this.actions.append(details);
    }
    this.article.querySelector(".details")?.remove();
    this.actions.querySelector('[data-action="details"]').setAttribute("aria-expanded", "false");
  }

  toggleDetails() {
    const button = this.actions.querySelector('[data-action="details"]');
    const shown = this.article.querySelector(".details");
    if (shown) shown.remove();
    else {
      const line = document.createElement("p");
      line.className = "details muted";
      line.textContent = detailsText(this.meta);
      this.actions.before(line);
    }
    button.setAttribute("aria-expanded", String(!shown));
  }

  setRetry(on) {
    const existing = this.actions.querySelector('[data-action="retry"]');
    if (on && !existing) this.actions.append(actionButton("Retry", "retry"));
    if (!on && existing) existing.remove();
  }

  remove() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    for (const resolve of this.waiting.splice(0)) resolve();
    this.article.remove();
  }
}

function actionButton(label, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "ghost small";
  b.dataset.action = action;
  b.textContent = label;
  return b;
}

// Why the model did not see the start of a long chat: the server sent only what fits its context.
export function leftOutNote(count) {
  return count === 1
    ? "1 earlier message was not sent to the model: the conversation is longer than it can read at once."
    : `${count} earlier messages were not sent to the model: the conversation is longer than it can read at once.`;
}

export function exportMarkdown(conversation, messages) {
  const lines = [`# ${conversation.title}`, "", `Model: ${conversation.model}`, ""];
  for (const m of messages) lines.push(`## ${m.role === "user" ? "You" : "Assistant"}`, "", m.text, "");
  return lines.join("\n");
}

export function exportJSON(conversation, messages) {
  const out = { ...conversation, messages: messages.map((m) => ({ id: m.id, role: m.role, content: m.text })) };
  return JSON.stringify(out, null, 2);
}

export function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
