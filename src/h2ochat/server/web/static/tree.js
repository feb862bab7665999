// A conversation as a tree (issue 20): every message has one parent, the hidden system root holds the
// system prompt, and the active branch runs from the root to the leaf the person last looked at.
// Pure code, no DOM and no requests: the page asks it what to show and which version is which.

export class Tree {
  // `data`: GET /api/conversation/<id>'s body; nothing for a new chat, whose root the page has not read.
  constructor(data = {}) {
    this.rootId = data.rootMessageId ?? null;
    this.nodes = new Map(); // id -> message, in creation order
    this.kids = new Map(); // parent id (null: the top, for a root not read yet) -> child ids, oldest first
    let previous = this.rootId;
    for (const message of data.messages || []) {
      // A server from before the tree sends no parentId: its list is one branch.
      const parentId = message.parentId !== undefined ? message.parentId : previous;
      this.add({ ...message, parentId });
      previous = message.id;
    }
    this.leaf = data.activeMessageId ?? previous ?? null;
  }

  get(id) {
    return this.nodes.get(id);
  }

  children(parentId) {
    return this.kids.get(parentId ?? null) || [];
  }

  // A message joins the tree and becomes the leaf of the active branch.
  // (The server's `children` and `ancestors` are worked out here again, so they stay true as the tree grows.)
  add({ id, role, content = "", parentId = null, score = 0, children, ancestors, ...rest }) {
    const key = parentId ?? null;
    if (!this.nodes.has(id)) {
      if (!this.kids.has(key)) this.kids.set(key, []);
      this.kids.get(key).push(id);
    }
    const node = { ...rest, id, role, content, parentId: key, score };
    this.nodes.set(id, node);
    if (role !== "system") this.leaf = id;
    return node;
  }

  // A message that was never stored (refused), with what hangs below it; the branch ends at its parent.
  drop(id) {
    const node = this.nodes.get(id);
    if (!node) return;
    for (const child of [...this.children(id)]) this.drop(child);
    const siblings = this.children(node.parentId);
    siblings.splice(siblings.indexOf(id), 1);
    this.nodes.delete(id);
    this.kids.delete(id);
    if (this.leaf === id) this.leaf = node.parentId;
  }

  // Ids from the root to the message's parent.
  ancestors(id) {
    const out = [];
    for (let at = this.nodes.get(id)?.parentId; at != null; at = this.nodes.get(at)?.parentId) out.unshift(at);
    return out;
  }

  // The active branch, root left out: the messages the page shows, oldest first.
  path() {
    if (this.leaf == null || !this.nodes.has(this.leaf)) return [];
    return [...this.ancestors(this.leaf), this.leaf].map((id) => this.nodes.get(id)).filter((m) => m && m.role !== "system");
  }

  // Where a message stands among its versions (its parent's children): {index: 1-based, count}.
  version(id) {
    const node = this.nodes.get(id);
    if (!node) return null;
    const siblings = this.children(node.parentId);
    return { index: siblings.indexOf(id) + 1, count: siblings.length };
  }

  // The sibling `step` versions away (-1: previous, 1: next), or null past either end.
  neighbour(id, step) {
    const node = this.nodes.get(id);
    const siblings = node ? this.children(node.parentId) : [];
    return siblings[siblings.indexOf(id) + step] ?? null;
  }

  // Every message but the root (its text is `preprompt`, its id `rootMessageId`), for Export JSON.
  toJSON() {
    return [...this.nodes.values()]
      .filter((node) => node.id !== this.rootId && node.role !== "system")
      .map((node) => ({
        id: node.id,
        role: node.role,
        content: node.content,
        parentId: node.parentId,
        ancestors: this.ancestors(node.id),
        children: [...this.children(node.id)],
        score: node.score ?? 0,
        ...(node.createdAt ? { createdAt: node.createdAt } : {}),
      }));
  }
}
