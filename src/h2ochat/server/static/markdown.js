// Markdown rendering of model text: marked, then DOMPurify, then highlight.js on code blocks.
// A growing answer is re-rendered block by block: the top-level blocks whose source did not change
// keep their DOM nodes, so each frame costs the lexer plus the last block, not the whole answer.

import { Marked } from "./vendor/marked/marked.esm.js";
import DOMPurify from "./vendor/dompurify/purify.es.mjs";
import hljs from "./vendor/highlight.js/highlight.min.js";

const escapeHtml = (text) =>
  String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

const markdown = new Marked({
  gfm: true,
  renderer: {
    // Images become links: a picture from elsewhere would tell its host who reads the answer
    // (and the page's CSP blocks other hosts' images anyway).
    image({ href, text }) {
      return `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`;
    },
  },
});

const PURIFY = {
  FORBID_TAGS: ["style", "img", "form", "input", "button", "textarea", "select", "dialog"],
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

function renderBlock(token, links) {
  const tokens = [token];
  tokens.links = links;
  const fragment = DOMPurify.sanitize(markdown.parser(tokens), PURIFY);
  const block = document.createElement("div");
  block.className = "md-block";
  block.append(fragment);
  for (const code of block.querySelectorAll("pre > code")) decorateCode(code);
  return block;
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

export class MarkdownView {
  constructor(element) {
    this.element = element;
    this.blocks = []; // {raw, node} per top-level Markdown block on screen
    this.linkKeys = "";
  }

  render(text) {
    const tokens = markdown.lexer(text);
    const linkKeys = Object.keys(tokens.links).join("\n");
    let keep = 0;
    // A new reference definition may change any earlier block: then everything is redone.
    if (linkKeys === this.linkKeys) {
      while (keep < tokens.length && keep < this.blocks.length && this.blocks[keep].raw === tokens[keep].raw) keep++;
    }
    this.linkKeys = linkKeys;
    for (const block of this.blocks.splice(keep)) block.node.remove();
    for (const token of tokens.slice(keep)) {
      const node = renderBlock(token, tokens.links);
      this.element.append(node);
      this.blocks.push({ raw: token.raw, node });
    }
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
