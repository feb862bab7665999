// Keyboard shortcuts (ChatGPT's where it has one), and the dialog listing them, opened by its button,
// "?" (outside a text field) or Ctrl+/. On a Mac, ⌘ works where Ctrl does and the dialog says ⌘.

const MAC = /Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgent);

// The command a key press asks for, or null.
export function commandFor(event, { typing }) {
  const mod = event.ctrlKey || event.metaKey;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  if (event.altKey) return null;
  if (mod && event.shiftKey && key === "o") return "newChat";
  if (mod && event.shiftKey && key === "c") return "copyLast";
  if (mod && key === "/") return "help"; // Shift too: on some layouts "/" is a shifted key
  if (!mod && key === "Escape") return event.shiftKey ? "focusBox" : "stop";
  if (!mod && key === "?" && !typing) return "help";
  return null;
}

function typing(element) {
  return Boolean(element?.closest?.('input, textarea, select, [contenteditable=""], [contenteditable="true"]'));
}

// `actions`: newChat, focusBox, stop, copyLast; `drawerOpen()`: whether the phone's drawer is open.
export function initShortcuts({ dialog, button, actions, drawerOpen }) {
  if (MAC) for (const key of dialog.querySelectorAll("kbd[data-mod]")) key.textContent = "⌘";
  const show = () => dialog.open || dialog.showModal();
  button.addEventListener("click", show);
  document.addEventListener("keydown", (event) => {
    // Handled already (a menu's or the drawer's Escape, a rename's), or half of an input method's composition.
    if (event.defaultPrevented || event.isComposing) return;
    const command = commandFor(event, { typing: typing(event.target) });
    // An open dialog has the keyboard to itself; Escape there closes it, and nothing else.
    if (!command || document.querySelector("dialog[open]")) return;
    if (command === "stop" && drawerOpen()) return;
    if (command !== "stop") event.preventDefault(); // Escape stays the browser's too (it stops a page load)
    if (command === "help") show();
    else actions[command]();
  });
}
