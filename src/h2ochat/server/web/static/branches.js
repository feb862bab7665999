// What the person does from a message: copy, details, retry, continue, and on the conversation's
// tree (issue 20): switch versions (‹ 2/3 ›), edit a question in place, vote on an answer, delete a
// message with what follows it. The server keeps the tree and the branch last looked at; after a
// change the page reads it again.

import * as api from "./api.js";
import { copyText } from "./markdown.js";
import { MessageView, flash } from "./messages.js";

export class Branches {
  // `page`: current(), tree(), views() (the array on screen), busy() (an answer is being written
  // here), reload(), answer(user, options) (app.js's), retryParameters(), focusBox(), report(error).
  constructor({ container, confirm, page }) {
    Object.assign(this, { container, confirm, page });
    container.addEventListener("click", (event) => this.clicked(event));
    container.addEventListener("submit", (event) => this.submitted(event));
  }

  viewOf(element) {
    const article = element.closest("article");
    return this.page.views().find((view) => view.article === article);
  }

  async clicked(event) {
    const button = event.target.closest("button");
    const view = button && this.viewOf(button);
    if (!view) return;
    const action = button.dataset.action;
    if (button.classList.contains("copy-code")) {
      const copied = await copyText(button.closest(".code-frame").querySelector("code").textContent);
      flash(button, copied ? "Copied" : "Copy failed");
    } else if (action === "copy") flash(button, (await copyText(view.text)) ? "Copied" : "Copy failed");
    else if (action === "details") view.toggleDetails();
    else if (action === "retry") this.retry();
    else if (action === "continue") this.continueLast();
    else if (action === "version") this.switchTo(view, Number(button.dataset.step));
    else if (action === "vote") this.vote(view, button);
    else if (action === "edit") view.startEdit();
    else if (action === "cancel-edit") view.endEdit(true);
    else if (action === "delete") this.remove(view);
  }

  submitted(event) {
    const form = event.target.closest("form.editor");
    if (!form) return;
    event.preventDefault();
    const view = this.viewOf(form);
    const text = form.querySelector("textarea").value;
    if (!view || !text.trim()) return;
    if (this.page.busy()) return this.page.report(new Error(WAIT));
    view.endEdit();
    this.edit(view, text);
  }

  // A new version of the last answer; the old one stays in the tree.
  retry() {
    const views = this.page.views();
    const [user, last] = views.slice(-2);
    if (this.page.busy() || last?.role !== "assistant" || user?.role !== "user") return;
    last.remove(); // off the screen only
    views.pop();
    this.page.answer(user, { isRetry: true, parameters: this.page.retryParameters() });
  }

  continueLast() {
    const views = this.page.views();
    const [user, last] = views.slice(-2);
    if (this.page.busy() || last?.role !== "assistant") return;
    this.page.answer(user, { continued: last });
  }

  // An edited question (`view`: the one it replaces, which stays in the tree as another version):
  // the branch on screen ends above it, and the new question and its answer follow.
  edit(view, text) {
    const views = this.page.views();
    const tree = this.page.tree();
    for (const old of views.splice(views.indexOf(view))) old.remove();
    const user = new MessageView(this.container, { id: api.uuid(), role: "user", content: text });
    tree.add({ id: user.id, role: "user", content: text, parentId: tree.get(view.id)?.parentId });
    views.push(user);
    this.page.answer(user, { isRetry: true, edited: view.id });
  }

  // Another version of `view` (`step` -1 or 1): the server makes the branch go through it.
  async switchTo(view, step) {
    const target = this.page.tree().neighbour(view.id, step);
    if (!target) return;
    if (this.page.busy()) return this.page.report(new Error(WAIT));
    const index = this.page.views().indexOf(view);
    try {
      await api.setActive(this.page.current().id, target);
    } catch (error) {
      return this.page.report(error);
    }
    await this.page.reload();
    // The keyboard stays on the control it used, now on the version in that place; at an end, on the other.
    const group = this.page.views()[index]?.versions;
    const again = group?.querySelector(`[data-step="${step}"]`);
    (again && !again.disabled ? again : group?.querySelector("button:not(:disabled)"))?.focus();
  }

  // Pressing the pressed vote again takes it back (score 0).
  async vote(view, button) {
    const score = button.getAttribute("aria-pressed") === "true" ? 0 : Number(button.dataset.score);
    try {
      await api.vote(this.page.current().id, view.id, score);
    } catch (error) {
      return this.page.report(error);
    }
    const node = this.page.tree().get(view.id);
    if (node) node.score = score;
    view.setVote(score);
  }

  async remove(view) {
    if (this.page.busy()) return this.page.report(new Error(WAIT));
    const conversation = this.page.current();
    if (!(await ask(this.confirm))) return;
    try {
      await api.removeMessage(conversation.id, view.id);
    } catch (error) {
      return this.page.report(error);
    }
    if (this.page.current() === conversation) await this.page.reload();
    this.page.focusBox(); // the button pressed is gone with its message
  }
}

const WAIT = "An answer is being written in this conversation: wait for it, or stop it, then try again.";

// The confirmation dialog's answer: true for its Delete (a `method="dialog"` form; Escape is a no).
function ask(dialog) {
  dialog.returnValue = "";
  dialog.showModal();
  dialog.querySelector('[value="delete"]').focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "delete"), { once: true });
  });
}
