// The sidebar: this session's conversations grouped by age, search, rename in place, delete, a mark on
// those with an answer being written; on narrow screens it folds away behind a menu button.

import * as api from "./api.js";

const DAY = 24 * 60 * 60 * 1000;

export function groupOf(updatedAt, now = new Date()) {
  const startOfToday = new Date(now.getFullYear(), now.getMonth(), now.getDate()).getTime();
  const time = new Date(updatedAt).getTime();
  if (time >= startOfToday) return "Today";
  if (time >= startOfToday - 7 * DAY) return "Previous 7 days";
  return "Older";
}

export class Sidebar {
  constructor({ list, empty, search, confirm, menu, backdrop, onOpen, onDeleted, onRenamed, onError }) {
    Object.assign(this, { list, empty, search, confirm, menu, backdrop, onOpen, onDeleted, onRenamed, onError });
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
    menu.addEventListener("click", () => this.unfold(!document.body.classList.contains("sidebar-open")));
    backdrop.addEventListener("click", () => this.fold());
  }

  // Narrow screens: the sidebar over the page, or folded away.
  unfold(open = true) {
    document.body.classList.toggle("sidebar-open", open);
    this.menu.setAttribute("aria-expanded", String(open));
    this.backdrop.hidden = !open;
    if (open) this.search.focus();
  }

  fold() {
    this.unfold(false);
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
    this.list.replaceChildren(...parts);
    this.empty.hidden = this.items.length > 0;
    this.empty.textContent = this.query ? "No conversation matches." : "No conversations yet.";
  }

  row(item) {
    const li = document.createElement("li");
    li.className = "conversation";
    li.dataset.id = item.id;
    const link = document.createElement("a");
    link.href = `/conversation/${item.id}`;
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
      input.replaceWith(link);
      if (this.stale) this.draw();
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
      else if (event.key === "Escape") finish(false);
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
      this.items = this.items.filter((c) => c.id !== li.dataset.id);
      this.draw();
      this.onDeleted(li.dataset.id);
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
