// The frame around the chat: the conversation's title as the page's h1, what screen readers are told,
// the skip link, New chat, Settings and the exports (in the top bar, or under More on phones) and the
// keyboard shortcuts.

import { Menu } from "./menu.js";
import { initShortcuts } from "./shortcuts.js";

const $ = (id) => document.getElementById(id);

// The conversation's title (none: a new chat), as the page's h1 and the tab's name.
export function showTitle(title) {
  $("title").textContent = title || "New chat";
  $("title").title = title || ""; // the whole of a title cut short on a narrow screen
  document.title = title ? `${title} · h2ochat` : "h2ochat";
}

// Said to a screen reader without moving its focus; a change, even to the same words, is read again.
export function announce(text) {
  const box = $("announce");
  box.textContent = "";
  setTimeout(() => (box.textContent = text), 100);
}

// The exports and Share, in the top bar and in More. More itself opens only onto something to do.
export function setExportable(on) {
  for (const id of ["share", "export-md", "export-json", "more-share", "more-md", "more-json"]) $(id).disabled = !on;
  $("more").disabled = !$("more-menu").querySelector('[role="menuitem"]:not(:disabled)');
}

// `actions`: newChat, focusBox, stop, copyLast, exportAs(kind); `sidebar`: the drawer on phones.
export function initFrame(actions, sidebar) {
  const focusBox = () => {
    sidebar.fold();
    actions.focusBox();
  };
  for (const id of ["new-chat", "new-chat-top"]) $(id).addEventListener("click", actions.newChat);
  for (const [id, kind] of [["export-md", "md"], ["more-md", "md"], ["export-json", "json"], ["more-json", "json"]]) {
    $(id).addEventListener("click", () => actions.exportAs(kind));
  }
  new Menu($("more"), $("more-menu"));
  $("skip").addEventListener("click", (event) => {
    event.preventDefault(); // no #message in the address, which the page reads the conversation from
    focusBox();
  });
  initShortcuts({
    dialog: $("shortcuts"),
    button: $("show-shortcuts"),
    drawerOpen: () => sidebar.unfolded,
    actions: { ...actions, focusBox },
  });
}
