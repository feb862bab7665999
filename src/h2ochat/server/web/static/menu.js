// A menu button (the phone's "More"): opens a short list of commands. Arrow keys, Home and End move
// between them; Escape closes it and returns to the button; Tab or a click elsewhere closes it.

export class Menu {
  constructor(button, menu) {
    Object.assign(this, { button, menu });
    button.addEventListener("click", () => (menu.hidden ? this.open() : this.close(true)));
    // Before the item's own click handler runs (this one captures): a dialog the item opens then
    // gives the focus back to the More button when it closes, not to the hidden item.
    menu.addEventListener("click", (event) => event.target.closest('[role="menuitem"]') && this.close(true), true);
    menu.addEventListener("keydown", (event) => this.key(event));
    document.addEventListener("pointerdown", (event) => {
      if (!menu.hidden && !menu.contains(event.target) && !button.contains(event.target)) this.close(false);
    });
  }

  items() {
    return [...this.menu.querySelectorAll('[role="menuitem"]:not(:disabled)')];
  }

  open() {
    this.menu.hidden = false;
    this.button.setAttribute("aria-expanded", "true");
    this.items()[0]?.focus();
  }

  close(refocus) {
    if (this.menu.hidden) return;
    this.menu.hidden = true;
    this.button.setAttribute("aria-expanded", "false");
    if (refocus) this.button.focus();
  }

  key(event) {
    const items = this.items();
    const at = items.indexOf(document.activeElement);
    const move = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: items.length - 1 }[event.key];
    if (move !== undefined && items.length) {
      event.preventDefault();
      items[(move + items.length) % items.length].focus();
    } else if (event.key === "Escape") {
      event.preventDefault(); // the menu's Escape, not the page's (which stops an answer)
      this.close(true);
    } else if (event.key === "Tab") {
      this.close(false);
    }
  }
}
