// The sidebar: this session's conversations grouped by age, search, rename in place, delete, a mark on
// those with an answer being written; on narrow screens a drawer that folds away behind a menu button.

import * as api from "./api.js";
import { titleFrom } from "./endings.js";

export const NEW_CHAT = "New Chat"; // the server's title for a conversation nobody has named yet

const DAY = 24 * 60 * 60 * 1000;
const NARROW = window.matchMedia("(max-width: 768px)"); // where the sidebar is a drawer (app.css)

export function groupOf(updatedAt, now = new Date()) {
  const startOfToday = new Date(now.getFullYear(), now.getMonth(), now.getDate()).getTime();
  const time = new Date(updatedAt).getTime();
  if (time >= startOfToday) return "Today";
  if (time >= startOfToday - 7 * DAY) return "Previous 7 days";
  return "Older";
}

export class Sidebar {
  // `drawer`: the narrow screens' parts, { aside, menu, close, backdrop, behind } (see foldable()).
  constructor({ list, empty, search, confirm, drawer, onOpen, onDeleted, onRenamed, onError }) {
    Object.assign(this, { list, empty, search, confirm, drawer, onOpen, onDeleted, onRenamed, onError });
    this.items = [];
    this.answering = new Set(); // ids of the conversations with an answer being written
    this.current = null;
    this.query = "";
    this.searchTimer = 0;
    this.asked = 0; // counts list requests and local edits: an answer older than either is stale

    search.addEventListener("input", () => {
      clearTimeout(this.searchTimer);
      this.searchTimer = setTimeout(() => this.refresh(), 150);
    });
    list.addEventListener("click", (event) => this.clicked(event));
    this.foldable(drawer);
  }

  // Narrow screens: the sidebar is a drawer over the page, opened by the menu button. While it is open
  // the page behind it is inert (out of reach of Tab, clicks and screen readers); Escape, its close
  // button, the backdrop or a choice in it folds it away.
  foldable({ menu, close, backdrop }) {
    menu.addEventListener("click", () => this.unfold());
    close.addEventListener("click", () => this.fold());
    backdrop.addEventListener("click", () => this.fold());
    document.addEventListener("keydown", (event) => {
      if (event.key !== "Escape" || !this.unfolded || event.defaultPrevented) return;
      event.preventDefault(); // Escape folds the drawer, and does nothing else (such as stop an answer)
      this.fold();
    });
    // Widened past phone size, the sidebar stands beside the page again, which must not stay inert.
    NARROW.addEventListener("change", () => NARROW.matches || this.fold());
  }

  get unfolded() {
    return document.body.classList.contains("sidebar-open");
  }

  unfold() {
    this.show(true);
    // The close button, not the search box: focusing a text field would raise a phone's keyboard.
    this.drawer.close.focus();
  }

  fold() {
    if (!this.unfolded) return;
    const inside = this.drawer.aside.contains(document.activeElement);
    this.show(false);
    if (inside) this.drawer.menu.focus(); // focus left in the folded drawer would be lost
  }

  show(open) {
    document.body.classList.toggle("sidebar-open", open);
    this.drawer.menu.setAttribute("aria-expanded", String(open));
    this.drawer.backdrop.hidden = !open;
    for (const element of this.drawer.behind) element.inert = open;
  }

  setAnswering(id, on) {
    if (on) this.answering.add(id);
    else this.answering.delete(id);
    const li = this.list.querySelector(`li[data-id="${CSS.escape(id)}"]`);
    if (li) li.querySelector(".answering")?.remove();
    if (li && on) li.querySelector("a, input.rename").after(answeringMark());
  }

  async refresh() {
    this.query = this.search.value.trim();
    const asked = ++this.asked;
    let items;
    try {
      items = await api.conversations(this.query);
    } catch (error) {
      this.onError(error);
      return;
    }
    // A list read before a rename or a delete finished would put the old row back.
    if (asked !== this.asked) return;
    this.items = items;
    this.draw();
  }

  select(id) {
    this.current = id;
    for (const link of this.list.querySelectorAll("a[data-id]")) {
      if (link.dataset.id === id) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  titleOf(id) {
    return this.items.find((c) => c.id === id)?.title;
  }

  setTitle(id, title) {
    this.asked++;
    const item = this.items.find((c) => c.id === id);
    if (item) item.title = title;
    const link = this.list.querySelector(`a[data-id="${CSS.escape(id)}"]`);
    if (link) link.textContent = title;
  }

  // After the first answer the model writes a title; when there was no answer (`refusedText`, the
  // message that was refused) or the model cannot write one, the person's own words (`first()`) make
  // it. True once `conversation.title` is the new one.
  async name(conversation, refusedText, first) {
    // A title the person gave it here, even while the answer streamed, stays.
    const listed = this.titleOf(conversation.id);
    if (conversation.title !== NEW_CHAT || (listed && listed !== NEW_CHAT)) return false;
    try {
      if (refusedText == null) conversation.title = await api.summarize(conversation.id);
      else {
        const title = titleFrom(refusedText);
        await api.rename(conversation.id, title);
        conversation.title = title;
      }
    } catch (error) {
      if (error.status === 404) return false; // deleted meanwhile: nothing to name
      if (refusedText == null) return this.name(conversation, first(), first);
      if (!error.lost) this.onError(new api.ChatError(`No title was made: ${error.message}`));
      return false;
    }
    this.setTitle(conversation.id, conversation.title);
    return true;
  }

  draw() {
    // Redrawing would throw away a title being edited: draw once the edit ends.
    this.stale = Boolean(this.list.querySelector("input.rename"));
    if (this.stale) return;
    const groups = new Map([["Today", []], ["Previous 7 days", []], ["Older", []]]);
    for (const item of this.items) groups.get(groupOf(item.updatedAt)).push(item); // newest first already
    const parts = [];
    for (const [name, items] of groups) {
      if (!items.length) continue;
      const heading = document.createElement("h2");
      heading.className = "group";
      heading.textContent = name;
      const ul = document.createElement("ul");
      ul.append(...items.map((item) => this.row(item)));
      parts.push(heading, ul);
    }
    const focused = this.list.contains(document.activeElement) ? document.activeElement : null;
    const row = focused?.closest("li")?.dataset.id;
    this.list.replaceChildren(...parts);
    // The rows are new: the focus goes to the same control of the same conversation, not to the page's start.
    if (row) {
      const control = focused.dataset.action ? `[data-action="${focused.dataset.action}"]` : "a";
      this.list.querySelector(`li[data-id="${CSS.escape(row)}"] ${control}`)?.focus();
    }
    this.empty.hidden = this.items.length > 0;
    this.empty.textContent = this.query ? "No conversation matches." : "No conversations yet.";
  }

  row(item) {
    const li = document.createElement("li");
    li.className = "conversation";
    li.dataset.id = item.id;
    const link = document.createElement("a");
    // The full path under the <base href> (the server's base path): "/chat/conversation/<id>".
    link.href = new URL(`conversation/${item.id}`, document.baseURI).pathname;
    link.dataset.id = item.id;
    link.textContent = item.title;
    link.title = item.title;
    if (item.id === this.current) link.setAttribute("aria-current", "page");
    li.append(link, button("Rename", "✎", "rename"), button("Delete", "×", "delete"));
    if (this.answering.has(item.id)) link.after(answeringMark());
    return li;
  }

  clicked(event) {
    const target = event.target.closest("a, button");
    if (!target) return;
    const li = target.closest("li.conversation");
    if (target.tagName === "A") {
      if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      event.preventDefault();
      this.onOpen(target.dataset.id);
    } else if (target.dataset.action === "rename") {
      this.startRename(li);
    } else if (target.dataset.action === "delete") {
      this.askDelete(li);
    }
  }

  startRename(li) {
    const link = li.querySelector("a");
    const input = document.createElement("input");
    input.type = "text";
    input.className = "rename";
    input.value = link.textContent;
    input.maxLength = 100;
    input.setAttribute("aria-label", "Title");
    link.replaceWith(input);
    input.focus();
    input.select();
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      const title = input.value.trim();
      const focused = document.activeElement === input;
      input.replaceWith(link);
      if (this.stale) this.draw();
      // Back to the conversation's link: with the input gone, focus would fall to the page's start.
      if (focused) this.list.querySelector(`a[data-id="${CSS.escape(li.dataset.id)}"]`)?.focus();
      if (!save || !title || title === link.textContent) return;
      try {
        await api.rename(li.dataset.id, title);
        this.setTitle(li.dataset.id, title);
        this.onRenamed(li.dataset.id, title);
        this.refresh();
      } catch (error) {
        this.onError(error);
      }
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") finish(true);
      else if (event.key === "Escape") {
        event.preventDefault(); // cancels the rename only: not also the answer streaming, or the drawer
        finish(false);
      }
    });
    input.addEventListener("blur", () => finish(true));
  }

  askDelete(li) {
    const item = this.items.find((c) => c.id === li.dataset.id);
    this.confirm.querySelector("#confirm-text").textContent = `“${item ? item.title : ""}” and its messages will be deleted.`;
    const form = this.confirm.querySelector("form");
    const cancel = this.confirm.querySelector("#confirm-cancel");
    const close = () => {
      form.removeEventListener("submit", submit);
      cancel.removeEventListener("click", close);
      this.confirm.close();
    };
    const submit = async (event) => {
      event.preventDefault();
      close();
      try {
        await api.remove(li.dataset.id);
      } catch (error) {
        this.onError(error);
        return;
      }
      this.asked++;
      const index = this.items.findIndex((c) => c.id === li.dataset.id);
      this.items = this.items.filter((c) => c.id !== li.dataset.id);
      this.draw();
      // The conversation now in its place (the one before it, when it was the last), for the focus.
      const next = this.items[Math.min(index, this.items.length - 1)];
      this.onDeleted(li.dataset.id, next && this.list.querySelector(`a[data-id="${CSS.escape(next.id)}"]`));
      this.refresh();
    };
    form.addEventListener("submit", submit);
    cancel.addEventListener("click", close);
    this.confirm.addEventListener("close", close, { once: true });
    this.confirm.showModal();
    this.confirm.querySelector("#confirm-delete").focus();
  }
}

// The mark of a conversation whose answer is being written, named for assistive technology.
function answeringMark() {
  const mark = document.createElement("span");
  mark.className = "answering";
  mark.setAttribute("role", "img");
  mark.setAttribute("aria-label", "Answering");
  mark.title = "Answering";
  mark.textContent = "…";
  return mark;
}

function button(label, icon, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "ghost icon small";
  b.dataset.action = action;
  b.setAttribute("aria-label", label);
  b.title = label;
  b.textContent = icon;
  return b;
}
