// The page of a shared conversation (/r/<id>): its messages rendered as the chat page renders them
// (markdown.js: marked, then DOMPurify), read-only, and "Continue this conversation", which copies it
// into the reader's own session (the server starts one if needed) and opens the copy in the chat page.
// The data comes with the page (server/web/shared.py); someone else wrote it, so it reaches the DOM
// only as text or through the sanitizer.

import { continueShare } from "./api.js";
import { copyText, MarkdownView } from "./markdown.js";
import { initTheme } from "./theme.js";

const $ = (id) => document.getElementById(id);
const share = JSON.parse(document.querySelector('meta[name="h2ochat-share"]').content);

function dateOf(stored) {
  const when = new Date(stored);
  return Number.isNaN(when.getTime()) ? stored : when.toLocaleDateString(undefined, { dateStyle: "long" });
}

function about() {
  const parts = [`Model: ${share.model}`, `shared on ${dateOf(share.createdAt)}`];
  if (share.expiresAt) parts.push(`this link expires on ${dateOf(share.expiresAt)}`);
  return parts.join(" · ");
}

function article(message) {
  const user = message.role === "user";
  const element = document.createElement("article");
  element.className = `message ${message.role}`;
  // Not "You", as on the chat page: the reader did not write these questions.
  element.setAttribute("aria-label", user ? "User" : "Assistant");
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = user ? "User" : "Assistant";
  const body = document.createElement("div");
  body.className = user ? "body plain" : "body markdown";
  element.append(who, body);
  if (user) body.textContent = message.content;
  else {
    const view = new MarkdownView(body);
    while (!view.render(message.content)); // a long answer is frozen a slice per call
  }
  const note = endingOf(message);
  if (note) {
    const p = document.createElement("p");
    p.className = "note info";
    p.textContent = note;
    element.append(p);
  }
  return element;
}

function endingOf(message) {
  if (message.role !== "assistant") return null;
  if (message.status === "interrupted") return "This answer was cut short before it was complete.";
  if (message.finishReason === "length") return "This answer reached its length limit.";
  return null;
}

async function continueIt(button) {
  button.disabled = true;
  $("error").hidden = true;
  try {
    const id = await continueShare(share.continueModel, share.id);
    location.assign(new URL(`conversation/${encodeURIComponent(id)}`, document.baseURI).href);
  } catch (error) {
    $("error").textContent = error.message;
    $("error").hidden = false;
    button.disabled = false;
  }
}

function start() {
  initTheme(null); // the reader's remembered theme, if they chose one on the chat page
  $("title").textContent = share.title;
  $("about").textContent = about();
  $("messages").append(...share.messages.map(article));
  $("messages").addEventListener("click", async (event) => {
    const button = event.target.closest("button.copy-code");
    if (!button) return;
    const code = button.closest(".code-frame")?.querySelector("code");
    const label = button.textContent;
    button.textContent = (await copyText(code?.textContent ?? "")) ? "Copied" : "Copy failed";
    setTimeout(() => (button.textContent = label), 1200);
  });
  $("continue").addEventListener("click", (event) => continueIt(event.currentTarget));
  document.body.dataset.ready = "true"; // for the tests: the page is drawn
}

start();
