// Web search (docs/protocol.md section 18): the composer's "Search the web" switch, shown only when
// the server has a search engine and kept with the session (searchEnabled); the search's progress
// while it runs, under the answer to come; and
// the answer's "Sources", links to the pages it read (text only: page titles are untrusted).

import * as api from "./api.js";

export class WebSearch {
  constructor(box) {
    this.box = box;
    this.input = box.querySelector("input");
    box.hidden = true;
    api
      .webSearchSetting()
      .then(({ available, on }) => {
        box.hidden = !available;
        this.input.checked = on;
      })
      .catch(() => {}); // no engine known: no switch
    this.input.addEventListener("change", () => this.save());
  }

  // The choice is the session's: a failure puts the switch back and says why.
  async save() {
    const on = this.input.checked;
    try {
      await api.saveSearchEnabled(on);
    } catch (error) {
      this.input.checked = !on;
      this.box.title = `Not saved: ${error.message}`;
    }
  }

  get on() {
    return !this.box.hidden && this.input.checked;
  }

  // The search for `text` in conversation `id`, its progress shown in `view`; the search's id and sources.
  async run(id, text, view) {
    const status = view.note("Searching the web…", "info");
    status.setAttribute("role", "status");
    let sources = [];
    const searchId = await api.webSearch(id, text, (event) => {
      if (event.type === "sources") sources = event.sources || [];
      else status.textContent = progressText(event);
    });
    status.textContent = sources.length
      ? `Searched the web: ${sources.length} source${sources.length === 1 ? "" : "s"}.`
      : "Searched the web: no page could be read.";
    return { searchId, sources };
  }
}

function progressText(event) {
  const args = event.args || [];
  if (event.message === "Skipped") return `Skipped ${args[0] || "a page"}: ${args[1] || "unreadable"}.`;
  if (event.message === "Read") return `Read ${args[0] || "a page"}.`;
  return `${event.message}${args.length === 1 ? `: ${args[0]}` : ""}…`;
}

// The "Sources" list under an answer: numbered as the model cited them.
export function showSources(view, sources) {
  view.article.querySelector(".sources")?.remove();
  if (!sources?.length) return;
  const list = document.createElement("ol");
  list.className = "sources";
  list.setAttribute("aria-label", "Sources");
  for (const source of sources) {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = /^https?:\/\//.test(source.link) ? source.link : "about:blank";
    link.textContent = source.title || source.link;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    item.append(link);
    list.append(item);
  }
  view.notes.before(list);
}
