// The answers being generated, at most one per conversation. An answer keeps streaming, with its
// message views, while the person reads or writes in another conversation: its fetch stays open,
// so the server goes on generating, and coming back puts the same views, still growing, on screen.

import * as api from "./api.js";

export class Running {
  constructor(onChange) {
    this.onChange = onChange; // (conversation id, running): for the sidebar's mark and the composer
    this.runs = new Map();
  }

  has(id) {
    return id != null && this.runs.has(id);
  }

  get(id) {
    return id == null ? undefined : this.runs.get(id);
  }

  // `views`: the conversation's message views, the array the screen shows while it is current.
  start(conversation, views) {
    const run = { conversation, views, controller: new AbortController(), stopping: false, abortTimer: 0 };
    this.runs.set(conversation.id, run);
    this.onChange(conversation.id, true);
    return run;
  }

  end(run) {
    clearTimeout(run.abortTimer);
    if (this.runs.get(run.conversation.id) !== run) return;
    this.runs.delete(run.conversation.id);
    this.onChange(run.conversation.id, false);
  }

  stop(id) {
    const run = this.get(id);
    if (!run || run.stopping) return;
    run.stopping = true;
    // The server stops, saves the partial answer and ends the stream; reading it to the end keeps
    // on screen exactly what was saved. If the end does not come, the fetch is abandoned.
    api.stopGenerating(id).catch(() => run.controller.abort());
    run.abortTimer = setTimeout(() => run.controller.abort(), 3000);
  }
}
