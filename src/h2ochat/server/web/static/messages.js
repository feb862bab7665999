// Messages on screen: one article per message ("You" or "Assistant"), the growing answer re-rendered
// at most once per animation frame, the notes (errors, interruptions) beside a message, and the
// tree's controls: versions (‹ 2/3 ›), Edit in place, votes and Delete (what they do: branches.js).

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
    // Shown once the message is known to be stored (setBranch): a refused one has nothing to edit or vote on.
    this.stored = role === "user" ? [actionButton("Edit", "edit")] : [voteButton("Good", 1), voteButton("Bad", -1)];
    this.tail = actionButton("Delete", "delete", "Delete message"); // Details and Retry go before it
    this.stored.push(this.tail);
    for (const button of this.stored) button.hidden = true;
    this.actions.append(...this.stored);
    this.versions = versionsControl();
    this.meta = null; // an answer's ending and counts, once known (endings.js)
    this.article.append(who, this.body, this.notes, this.versions, this.actions);
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

  // While the server cannot be reached during the answer: said here, and gone once it is back.
  showWaiting(on) {
    this.notes.querySelector(".waiting")?.remove();
    if (!on) return;
    const note = this.note("The connection to the server was lost. The answer carries on here once it is back.");
    note.classList.add("waiting");
  }

  // Not stored: marked, with why ("Not sent." when the server was out of reach: its banner says so).
  markUnsent(error) {
    this.note(error.lost ? "Not sent." : error.message, error.lost ? "info" : "error");
    this.unsent = true;
    this.article.classList.add("unsent");
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
      this.tail.before(details);
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
    if (on && !existing) this.tail.before(actionButton("Retry", "retry"));
    if (!on && existing) existing.remove();
  }

  // The tree's controls, as `tree` (tree.js) has this message: versions, Edit or the votes, Delete.
  setBranch(tree) {
    const node = this.unsent ? null : tree.get(this.id);
    for (const button of this.stored) button.hidden = !node;
    if (node && this.role === "assistant") this.setVote(node.score);
    const version = node ? tree.version(this.id) : null;
    this.versions.hidden = !version || version.count < 2;
    if (this.versions.hidden) return;
    const [previous, count, next] = this.versions.children;
    count.textContent = `${version.index}/${version.count}`;
    previous.disabled = version.index === 1;
    next.disabled = version.index === version.count;
  }

  setVote(score) {
    for (const button of this.actions.querySelectorAll('[data-action="vote"]')) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.score) === score));
    }
  }

  // The message's text in a box in place of it, with "Save and send" (a form: its submit says so) and Cancel.
  startEdit() {
    if (this.editor) return this.editor.querySelector("textarea").focus();
    this.editor = document.createElement("form");
    this.editor.className = "editor";
    const box = document.createElement("textarea");
    box.setAttribute("aria-label", "Edit message");
    box.rows = Math.min(10, this.text.split("\n").length + 1);
    box.value = this.text;
    box.addEventListener("keydown", (event) => {
      if (event.isComposing) return;
      if (event.key === "Escape") {
        event.preventDefault(); // this box's Escape, not the page's
        this.endEdit(true);
      } else if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault(); // as in the message box: Enter sends, Shift+Enter adds a line
        this.editor.requestSubmit();
      }
    });
    const save = actionButton("Save and send", "save-edit");
    save.type = "submit";
    save.className = "primary small";
    const buttons = document.createElement("div");
    buttons.className = "editor-buttons";
    buttons.append(actionButton("Cancel", "cancel-edit"), save);
    this.editor.append(box, buttons);
    this.body.hidden = this.actions.hidden = true;
    this.versions.classList.add("editing");
    this.body.after(this.editor);
    box.focus();
  }

  // `refocus`: back to Edit, for a keyboard that cancelled.
  endEdit(refocus = false) {
    this.editor?.remove();
    this.editor = null;
    this.body.hidden = this.actions.hidden = false;
    this.versions.classList.remove("editing");
    if (refocus) this.actions.querySelector('[data-action="edit"]')?.focus();
  }

  remove() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    for (const resolve of this.waiting.splice(0)) resolve();
    this.article.remove();
  }
}

// `name`: the accessible name, where the visible label says less (it begins with the label).
function actionButton(label, action, name) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "ghost small";
  b.dataset.action = action;
  b.textContent = label;
  if (name) b.setAttribute("aria-label", name);
  return b;
}

function voteButton(label, score) {
  const b = actionButton(label, "vote", `${label} answer`);
  b.dataset.score = String(score);
  b.setAttribute("aria-pressed", "false");
  return b;
}

// ‹ 2/3 ›: the versions of a message (its siblings in the tree), shown where it has more than one.
function versionsControl() {
  const group = document.createElement("div");
  group.className = "versions";
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", "Versions");
  const count = document.createElement("span");
  count.className = "version-count";
  group.append(actionButton("‹", "version", "Previous version"), count, actionButton("›", "version", "Next version"));
  group.firstChild.dataset.step = "-1";
  group.lastChild.dataset.step = "1";
  group.hidden = true;
  return group;
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

// The whole tree (tree.js), every version of every message, and the branch last looked at.
export function exportJSON(conversation, tree) {
  const out = { ...conversation, rootMessageId: tree.rootId, activeMessageId: tree.leaf, messages: tree.toJSON() };
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

// The conversation as a file, named by its title: Markdown (`kind` "md"), the branch on screen
// (`views`), or JSON, the whole `tree`. Messages that were not sent are left out of both.
export function exportConversation(kind, conversation, views, tree) {
  const sent = views.filter((view) => !view.unsent);
  const safe = conversation.title.replace(/[^\w. -]+/g, "_").slice(0, 60) || "conversation";
  if (kind === "md") download(`${safe}.md`, "text/markdown", exportMarkdown(conversation, sent));
  else download(`${safe}.json`, "application/json", exportJSON(conversation, tree));
}

// A button says for a moment what it did ("Copied").
export function flash(button, text) {
  const label = button.textContent;
  button.textContent = text;
  setTimeout(() => (button.textContent = label), 1200);
}
