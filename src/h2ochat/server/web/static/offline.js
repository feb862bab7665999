// When the server cannot be reached: one banner, however many requests fail; while it shows, a check
// every few seconds; once the server answers, the banner goes and the page is brought up to date.

export class Offline {
  constructor({ banner, reachable, onBack, every = 3000 }) {
    Object.assign(this, { banner, reachable, onBack, every });
    this.checking = false;
  }

  // A request did not reach the server: check it, and say so until it answers.
  lost() {
    if (this.checking) return;
    this.checking = true;
    this.check();
  }

  async check() {
    if (!(await this.reachable())) {
      this.banner.hidden = false;
      setTimeout(() => this.check(), this.every);
      return;
    }
    this.checking = false;
    if (this.banner.hidden) return; // it answered the first check: a blip, nothing to say or redo
    this.banner.hidden = true;
    this.onBack();
  }
}
