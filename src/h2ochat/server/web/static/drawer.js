// The sidebar on narrow screens: a drawer over the page, opened by the menu button. While it is open
// the page behind it is inert (out of reach of Tab, clicks and screen readers); Escape, its close
// button, the backdrop or a choice in it closes it.

const NARROW = window.matchMedia("(max-width: 768px)");

export class Drawer {
  constructor({ sidebar, button, close, backdrop, behind }) {
    Object.assign(this, { sidebar, button, closeButton: close, backdrop, behind });
    button.addEventListener("click", () => this.open());
    close.addEventListener("click", () => this.close());
    backdrop.addEventListener("click", () => this.close());
    document.addEventListener("keydown", (event) => {
      if (event.key !== "Escape" || !this.isOpen || event.defaultPrevented) return;
      event.preventDefault(); // Escape closes the drawer, and does nothing else (such as stop an answer)
      this.close();
    });
    // Widened past phone size, the sidebar stands beside the page again, which must not stay inert.
    NARROW.addEventListener("change", () => NARROW.matches || this.close());
  }

  get isOpen() {
    return document.body.classList.contains("sidebar-open");
  }

  open() {
    document.body.classList.add("sidebar-open");
    this.button.setAttribute("aria-expanded", "true");
    this.backdrop.hidden = false;
    for (const element of this.behind) element.inert = true;
    // The close button, not the search box: focusing a text field would raise a phone's keyboard.
    this.closeButton.focus();
  }

  close() {
    if (!this.isOpen) return;
    const inside = this.sidebar.contains(document.activeElement);
    document.body.classList.remove("sidebar-open");
    this.button.setAttribute("aria-expanded", "false");
    this.backdrop.hidden = true;
    for (const element of this.behind) element.inert = false;
    if (inside) this.button.focus(); // focus left in the folded drawer would be lost
  }
}
