// The page: wires the modules together, keeps the address in step with the conversation shown,
// and runs an exchange (send, stream, stop, retry, title).

import * as api from "./api.js";
import { Composer } from "./composer.js";
import { copyText } from "./markdown.js";
import { sentence, titleFrom } from "./endings.js";
import { Follower } from "./follow.js";
import { MessageView, download, exportJSON, exportMarkdown, leftOutNote } from "./messages.js";
import { Sidebar } from "./sidebar.js";
import { initTheme } from "./theme.js";

const $ = (id) => document.getElementById(id);
const facts = JSON.parse(document.querySelector('meta[name="h2ochat"]').content);
const state = { models: [], current: null, views: [], streaming: null, starting: false, loadToken: 0 };
const NEW_CHAT = "New Chat"; // the server's title for a conversation nobody has named yet

const composer = new Composer({
  form: $("composer"),
  textarea: $("message"),
  send: $("send"),
  stop: $("stop"),
  counter: $("counter"),
  limit: facts.maxInputChars,
  onSend: (text) => send(text),
  onStop: () => stop(),
});

const follower = new Follower($("chat"), $("messages"), $("jump"));

const sidebar = new Sidebar({
  list: $("conversation-list"),
  empty: $("list-empty"),
  search: $("search"),
  confirm: $("confirm"),
  onOpen: (id) => navigate(`/conversation/${id}`),
  onDeleted: (id) => {
    if (state.current?.id === id) navigate("/");
  },
  onRenamed: (id, title) => {
    if (state.current?.id !== id) return;
    state.current.title = title; // the exports' name and heading too
    document.title = `${title} · h2ochat`;
  },
  onError: (error) => notice(error.message),
});

function notice(text) {
  const box = $("page-notice");
  box.textContent = text || "";
  box.hidden = !text;
}

// Models ---------------------------------------------------------------------------------------

const selectedModel = () => $("model").value;
const modelInfo = (name) => state.models.find((m) => m.id === name);

function showModels(preferred) {
  const select = $("model");
  select.replaceChildren(
    ...state.models.map((m) => {
      const option = new Option(m.displayName, m.id);
      option.title = m.description || "";
      return option;
    }),
  );
  if (preferred && modelInfo(preferred)) select.value = preferred;
  describeModel();
}

function describeModel() {
  const model = modelInfo(selectedModel());
  $("model-description").textContent = model ? `${model.displayName}. ${model.description || ""}` : "";
  composer.setTokenLimit(model?.maxInputTokens);
  $("welcome-model").textContent = model ? model.displayName : "a language model";
  $("welcome-description").textContent = model?.description || "";
  const examples = (model?.promptExamples || []).map((example) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "example";
    const title = document.createElement("strong");
    title.textContent = example.title;
    const prompt = document.createElement("span");
    prompt.textContent = example.prompt;
    button.append(title, prompt);
    button.addEventListener("click", () => send(example.prompt));
    return button;
  });
  $("examples").replaceChildren(...examples);
}

$("model").addEventListener("change", () => {
  describeModel();
  if (facts.accepted || !facts.welcomeGate) api.acceptSettings(selectedModel()).catch((e) => notice(e.message));
  // A conversation keeps its model: another model means a new chat.
  if (state.current && state.current.model !== selectedModel()) navigate("/");
});

// Conversations and the address ---------------------------------------------------------------------

function navigate(path) {
  if (location.pathname !== path) history.pushState(null, "", path);
  route();
}

window.addEventListener("popstate", () => route());

async function route() {
  closeSidebar();
  const match = location.pathname.match(/^\/conversation\/([^/]+)$/);
  if (state.streaming && state.streaming.conversationId !== match?.[1]) stop();
  if (match) await openConversation(decodeURIComponent(match[1]));
  else showConversation(null, []);
}

async function openConversation(id) {
  const token = ++state.loadToken;
  let data;
  // An answer cut by a reload is saved as interrupted a moment after the page comes back: wait for it.
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      data = await api.conversation(id);
    } catch (error) {
      if (token !== state.loadToken) return;
      showConversation(null, []);
      notice(error.status === 404 ? "This conversation does not exist, or belongs to another browser." : error.message);
      return;
    }
    if (token !== state.loadToken) return;
    const last = data.messages[data.messages.length - 1];
    if (!last || last.status !== "generating" || state.streaming?.conversationId === id) break;
    await new Promise((resolve) => setTimeout(resolve, 150));
  }
  if (token !== state.loadToken) return;
  const { messages, ...conversation } = data;
  showConversation(conversation, messages);
}

function showConversation(conversation, messages) {
  if (state.streaming && state.streaming.conversationId === conversation?.id) return; // already on screen
  notice("");
  for (const view of state.views) view.remove();
  state.current = conversation;
  state.views = [];
  messages.forEach((message, index) => {
    const view = new MessageView($("messages"), { id: message.id, role: message.role, content: message.content });
    if (message.leftOut) view.note(leftOutNote(message.leftOut), "info");
    if (message.role === "assistant") view.setEnding(message, { last: index === messages.length - 1 });
    state.views.push(view);
  });
  if (conversation) showModels(conversation.model);
  follower.jump(); // a conversation opens on its newest message
  sidebar.select(conversation?.id ?? null);
  document.title = conversation ? `${conversation.title} · h2ochat` : "h2ochat";
  refreshChrome();
}

function refreshChrome() {
  const empty = state.views.length === 0;
  $("empty").hidden = !empty;
  $("export-md").disabled = $("export-json").disabled = !state.current || empty;
  state.views.forEach((view, i) => view.setRetry(i === state.views.length - 1 && view.role === "assistant"));
}

// An exchange -------------------------------------------------------------------------------------

async function send(text) {
  if (state.streaming || state.starting || !text.trim()) return;
  if (facts.welcomeGate && !facts.accepted) return showWelcome();
  composer.take();
  notice("");
  if (!state.current) {
    // Until the answer streams (answer() sets state.streaming before its first wait), another send,
    // such as the second click of a double-click on an example, must not make a second conversation.
    state.starting = true;
    try {
      const id = await api.createConversation(selectedModel());
      state.current = { id, title: NEW_CHAT, model: selectedModel() };
    } catch (error) {
      composer.setText(text);
      notice(error.message);
      return;
    } finally {
      state.starting = false;
    }
    history.pushState(null, "", `/conversation/${state.current.id}`);
    sidebar.select(state.current.id);
    sidebar.refresh();
  }
  const user = new MessageView($("messages"), { id: api.uuid(), role: "user", content: text });
  state.views.push(user);
  await answer(user);
}

// Streams an answer to `user`: a new one, a retry (`isRetry`, with `parameters`), or more of the
// last answer (`continued`: its view, which grows).
async function answer(user, { isRetry = false, parameters = {}, continued = null } = {}) {
  const conversation = state.current;
  const view = continued || new MessageView($("messages"), { id: api.uuid(), role: "assistant" });
  if (!continued) state.views.push(view);
  view.notes.querySelector(".ending")?.remove();
  refreshChrome();
  view.setStreaming(true);
  follower.jump(); // the person asked: show the answer coming, until they scroll away
  const streaming = { conversationId: conversation.id, controller: new AbortController(), stopping: false };
  state.streaming = streaming;
  composer.setBusy(true);
  let ok = false;
  const before = continued ? { tokens: continued.meta?.generatedTokens || 0, at: continued.meta?.createdAt } : null;
  const started = new Date().toISOString();
  try {
    const result = await api.sendMessage(conversation.id, continued ? "" : user.text, {
      messageId: continued ? view.id : user.id,
      answerId: view.id,
      isRetry,
      isContinue: Boolean(continued),
      parameters,
      signal: streaming.controller.signal,
      onToken: (token) => view.append(token),
      onStart: ({ leftOut }) => leftOut && view.note(leftOutNote(leftOut), "info"),
      stopping: () => streaming.stopping,
    });
    await view.drawn();
    const ended = {
      status: result.stopped ? "interrupted" : "done",
      interruption: result.stopped ? "stop-generating" : null,
      finishReason: result.details?.finish_reason ?? null,
      generatedTokens: (before?.tokens || 0) + (result.details?.generated_tokens ?? 0),
      createdAt: before?.at || started,
      updatedAt: new Date().toISOString(),
    };
    view.setEnding(ended, { last: true });
    ok = true;
  } catch (error) {
    await view.drawn();
    if (error.name === "AbortError") view.note("Stopped before the answer began.", "info");
    else if (continued) view.note(error.message); // the answer stays as it was
    else refused(user, view, error);
  } finally {
    view.setStreaming(false);
    clearTimeout(streaming.abortTimer);
    if (state.streaming === streaming) state.streaming = null;
    composer.setBusy(false);
    refreshChrome();
  }
  await nameConversation(conversation, ok ? null : user.text);
  sidebar.refresh();
}

// A refusal or a lost connection before the answer began stored nothing: the message goes back in the box.
function refused(user, view, error) {
  if (view.text) {
    view.note(`${sentence(error.message)} The text above is what arrived before that.`);
    return;
  }
  if (error.partial) {
    view.note(error.message); // the answer was begun, and saved empty
    return;
  }
  view.remove();
  state.views = state.views.filter((v) => v !== view);
  user.note(error.message);
  user.unsent = true;
  user.article.classList.add("unsent");
  if (!$("message").value) composer.setText(user.text);
}

// After the first answer the model writes a title; when there was no answer (`refusedText`, the
// message that was refused) or the model cannot write one, the person's own words make it.
async function nameConversation(conversation, refusedText) {
  // A title the person gave it in the sidebar, even while the answer streamed, stays.
  const listed = sidebar.titleOf(conversation.id);
  if (conversation.title !== NEW_CHAT || (listed && listed !== NEW_CHAT)) return;
  try {
    if (refusedText == null) conversation.title = await api.summarize(conversation.id);
    else {
      const title = titleFrom(refusedText);
      await api.rename(conversation.id, title);
      conversation.title = title;
    }
  } catch (error) {
    if (refusedText == null) return nameConversation(conversation, state.views.find((v) => v.role === "user")?.text || "");
    notice(`No title was made: ${error.message}`);
    return;
  }
  sidebar.setTitle(conversation.id, conversation.title);
  if (state.current === conversation) document.title = `${conversation.title} · h2ochat`;
}

function stop() {
  const streaming = state.streaming;
  if (!streaming || streaming.stopping) return;
  streaming.stopping = true;
  // The server stops, saves the partial answer and ends the stream; reading it to the end keeps
  // on screen exactly what was saved. If the end does not come, the fetch is abandoned.
  api.stopGenerating(streaming.conversationId).catch(() => streaming.controller.abort());
  streaming.abortTimer = setTimeout(() => streaming.controller.abort(), 3000);
}

function retry() {
  const last = state.views[state.views.length - 1];
  const user = state.views[state.views.length - 2];
  if (state.streaming || !last || last.role !== "assistant" || !user || user.role !== "user") return;
  last.remove();
  state.views.pop();
  // A model that answers greedily would give the same text again: a retry samples instead.
  const greedy = !modelInfo(state.current.model)?.parameters?.do_sample;
  answer(user, { isRetry: true, parameters: greedy ? { do_sample: true, temperature: 0.7 } : {} });
}

function continueLast() {
  const last = state.views[state.views.length - 1];
  const user = state.views[state.views.length - 2];
  if (state.streaming || !last || last.role !== "assistant") return;
  answer(user, { continued: last });
}

$("messages").addEventListener("click", async (event) => {
  const button = event.target.closest("button");
  if (!button) return;
  const article = button.closest("article");
  if (button.classList.contains("copy-code")) {
    const copied = await copyText(button.closest(".code-frame").querySelector("code").textContent);
    flash(button, copied ? "Copied" : "Copy failed");
  } else if (button.dataset.action === "copy") {
    const view = state.views.find((v) => v.article === article);
    flash(button, (await copyText(view ? view.text : "")) ? "Copied" : "Copy failed");
  } else if (button.dataset.action === "retry") {
    retry();
  } else if (button.dataset.action === "continue") {
    continueLast();
  } else if (button.dataset.action === "details") {
    state.views.find((v) => v.article === article)?.toggleDetails();
  }
});

function flash(button, text) {
  const label = button.textContent;
  button.textContent = text;
  setTimeout(() => (button.textContent = label), 1200);
}

// Export, sidebar on narrow screens, welcome gate ------------------------------------------------------

const sent = () => state.views.filter((view) => !view.unsent);

function exported(kind) {
  const conversation = state.current;
  const safe = conversation.title.replace(/[^\w. -]+/g, "_").slice(0, 60) || "conversation";
  if (kind === "md") download(`${safe}.md`, "text/markdown", exportMarkdown(conversation, sent()));
  else download(`${safe}.json`, "application/json", exportJSON(conversation, sent()));
}

$("export-md").addEventListener("click", () => exported("md"));
$("export-json").addEventListener("click", () => exported("json"));
$("new-chat").addEventListener("click", () => {
  navigate("/");
  composer.focus();
});

function closeSidebar() {
  document.body.classList.remove("sidebar-open");
  $("menu").setAttribute("aria-expanded", "false");
  $("backdrop").hidden = true;
}

$("menu").addEventListener("click", () => {
  const open = !document.body.classList.contains("sidebar-open");
  document.body.classList.toggle("sidebar-open", open);
  $("menu").setAttribute("aria-expanded", String(open));
  $("backdrop").hidden = !open;
  if (open) $("search").focus();
});
$("backdrop").addEventListener("click", closeSidebar);

function showWelcome() {
  const dialog = $("welcome");
  if (!dialog.open) dialog.showModal();
  $("start").focus();
}

$("welcome").addEventListener("cancel", (event) => event.preventDefault()); // Escape does not skip it
$("welcome-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await api.acceptSettings(selectedModel());
  } catch (error) {
    $("welcome-error").textContent = error.message;
    $("welcome-error").hidden = false;
    return;
  }
  facts.accepted = true;
  $("welcome").close();
  composer.focus();
});

async function start() {
  initTheme($("theme"));
  const listed = sidebar.refresh(); // in parallel with the models: one round trip less before the page is usable
  try {
    state.models = await api.models();
  } catch (error) {
    notice(error.message);
  }
  showModels(facts.activeModel);
  if (facts.welcomeGate && !facts.accepted) showWelcome();
  await Promise.all([route(), listed]);
  document.body.dataset.ready = "true"; // for tests and the benchmark: the page is usable
  performance.mark("h2ochat-ready");
  if (!$("welcome").open) composer.focus();
}

start();
