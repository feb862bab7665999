// Markdown rendering of model text: marked, then DOMPurify, then highlight.js on code blocks.
// A growing answer is rendered in chunks: once a top-level block is followed by two more, it is
// frozen (rendered once, never again), so a frame costs the lexer over the unfrozen tail plus its
// last blocks, not the whole answer. A burst of text is frozen a slice per frame, so no frame is long.

import { Marked } from "./vendor/marked/marked.esm.js";
import DOMPurify from "./vendor/dompurify/purify.es.mjs";
import hljs from "./vendor/highlight.js/highlight.min.js";

const escapeHtml = (text) =>
  String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

const markdown = new Marked({
  async: false,
  gfm: true,
  renderer: {
    // HTML written by the model is shown as text, as a person typed it: a model explaining HTML
    // means the tags literally, and nothing it writes becomes an element (DOMPurify stays the guard).
    html({ text }) {
      return escapeHtml(text);
    },
    // Images become links: a picture from elsewhere would tell its host who reads the answer
    // (and the page's CSP blocks other hosts' images anyway).
    image({ href, text }) {
      return `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`;
    },
  },
});

const PURIFY = {
  FORBID_TAGS: ["style", "img", "svg", "math", "form", "input", "button", "textarea", "select", "dialog"],
  FORBID_ATTR: ["style", "id", "name"], // inline styles break the CSP; ids could clobber the page's
  RETURN_DOM_FRAGMENT: true,
};

// Links open in a new tab without access to this page (window.opener).
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener");
  }
});

function renderTokens(tokens, links) {
  tokens.links = links;
  const fragment = DOMPurify.sanitize(markdown.parser(tokens), PURIFY);
  const chunk = document.createElement("div");
  chunk.className = "md-chunk";
  chunk.append(fragment);
  for (const code of chunk.querySelectorAll("pre > code")) decorateCode(code);
  return chunk;
}

function decorateCode(code) {
  const language = (code.className.match(/language-([\w+#.-]+)/) || [])[1];
  if (language && hljs.getLanguage(language)) hljs.highlightElement(code);
  const pre = code.parentElement;
  const frame = document.createElement("div");
  frame.className = "code-frame";
  const bar = document.createElement("div");
  bar.className = "code-bar";
  const label = document.createElement("span");
  label.textContent = language || "text";
  const copy = document.createElement("button");
  copy.type = "button";
  copy.className = "ghost small copy-code";
  copy.textContent = "Copy code";
  bar.append(label, copy);
  pre.replaceWith(frame);
  frame.append(bar, pre);
}

const SLICE = 6000; // characters of Markdown frozen per frame at most

export class MarkdownView {
  constructor(element) {
    this.element = element;
    this.frozen = ""; // the source of the frozen chunks, a prefix of the text
    this.open = null; // the chunk of the blocks still growing
  }

  // Show ``text``; false when part of it is left for the next frame.
  render(text) {
    if (!text.startsWith(this.frozen)) this.reset();
    const tokens = markdown.lexer(text.slice(this.frozen.length));
    let ready = tokens.length - 2; // the last two blocks may still change (a list, a paragraph)
    let raw = "";
    let count = 0;
    while (count < ready && raw.length < SLICE) raw += tokens[count++].raw;
    // Freeze only when the tokens give back the source exactly; otherwise keep redrawing it all.
    if (count && text.startsWith(this.frozen + raw, 0)) {
      this.element.insertBefore(renderTokens(tokens.slice(0, count), tokens.links), this.open);
      this.frozen += raw;
    } else {
      ready = count = 0;
    }
    if (count < ready) {
      // More to freeze on the next frame; the open chunk showed text now frozen, so it goes.
      this.open?.remove();
      this.open = null;
      return false;
    }
    const chunk = renderTokens(tokens.slice(count), tokens.links);
    if (this.open) this.open.replaceWith(chunk);
    else this.element.append(chunk);
    this.open = chunk;
    return true;
  }

  reset() {
    this.element.replaceChildren();
    this.frozen = "";
    this.open = null;
  }
}

// Copy to the clipboard; the Clipboard API exists only on https or loopback pages.
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // permission refused: fall back to the selection
    }
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.className = "offscreen";
  document.body.append(area);
  area.select();
  const done = document.execCommand("copy");
  area.remove();
  return done;
}
