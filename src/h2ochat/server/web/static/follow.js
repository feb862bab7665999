// The view follows a growing answer while the reader is at the bottom of the chat; scrolling up
// lets go of it, and a "Jump to latest" button brings the reader back and follows again.

const NEAR = 50; // px from the bottom that still count as "at the bottom"

export class Follower {
  constructor(scroller, content, button) {
    Object.assign(this, { scroller, button, following: true });
    // Only the reader moves the view up: growth below never fires a scroll event, so every
    // scroll event that leaves the bottom is the reader's own.
    scroller.addEventListener("scroll", () => this.scrolled(), { passive: true });
    // Runs after layout and before paint, once per frame in which the messages changed size.
    new ResizeObserver(() => this.grown()).observe(content);
    button.addEventListener("click", () => this.jump());
  }

  distance() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight;
  }

  scrolled() {
    this.following = this.distance() <= NEAR;
    this.button.hidden = this.following;
  }

  grown() {
    if (this.following) this.scroller.scrollTop = this.scroller.scrollHeight;
    else this.button.hidden = this.distance() <= NEAR;
  }

  // To the newest message, and follow it from there.
  jump() {
    this.following = true;
    this.button.hidden = true;
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }
}
