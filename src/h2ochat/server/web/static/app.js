// The page: wires the modules together, keeps the address in step with the conversation shown,
// and runs an exchange (send, stream, stop, retry, title), one at a time in each conversation.

import * as api from "./api.js";
import { Composer } from "./composer.js";
import { copyText } from "./markdown.js";
import { sentence, streamedEnding, titleFrom } from "./endings.js";
import { Follower } from "./follow.js";
import { MessageView, download, exportJSON, exportMarkdown, leftOutNote } from "./messages.js";
import { ModelPicker } from "./models.js";
import { Offline } from "./offline.js";
import { Running } from "./running.js";
import { SettingsDialog, withSettings } from "./settings.js";
import { Sidebar } from "./sidebar.js";
import { initTheme } from "./theme.js";
import { WelcomeGate } from "./welcome.js";

const $ = (id) => document.getElementById(id);
const facts = JSON.parse(document.querySelector('meta[name="h2ochat"]').content);
const state = { current: null, views: [], starting: false, loadToken: 0 };
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
  menu: $("menu"),
  backdrop: $("backdrop"),
  onOpen: (id) => navigate(`/conversation/${id}`),
  onDeleted: (id) => {
    if (state.current?.id === id) navigate("/");
  },
  onRenamed: (id, title) => {
    if (state.current?.id !== id) return;
    state.current.title = title; // the exports' name and heading too
    document.title = `${title} · h2ochat`;
  },
  onError: (error) => report(error),
});

const running = new Running((id, on) => {
  sidebar.setAnswering(id, on);
  if (id === state.current?.id) composer.setBusy(on);
});

const picker = new ModelPicker({ select: $("model"), composer, onExample: (prompt) => send(prompt) });
const welcome = new WelcomeGate({ facts, model: () => picker.selected, onAccepted: () => composer.focus() });

const settings = new SettingsDialog({
  button: $("settings"),
  dialog: $("settings-dialog"),
  limit: facts.maxNewTokens,
  current: () => state.current,
  defaults: (model) => picker.info(model)?.parameters,
});

// Back after being away: what failed meanwhile is asked again.
const offline = new Offline({ banner: $("offline"), reachable: api.reachable, onBack: () => caughtUp() });
api.onLost(() => offline.lost());

function notice(text) {
  const box = $("page-notice");
  box.textContent = text || "";
  box.hidden = !text;
}

// A failure in words, unless the server was out of reach: the banner says that, once.
function report(error) {
  if (!error.lost) notice(error.message);
}

function caughtUp() {
  sidebar.refresh();
  if (!picker.models.length) api.models().then((models) => picker.show(facts.activeModel, models), report);
  if (conversationInAddress() !== (state.current?.id ?? null)) route();
}

// Models ---------------------------------------------------------------------------------------

$("model").addEventListener("change", () => {
  picker.describe();
  if (welcome.passed) api.acceptSettings(picker.selected).catch(report);
  // A conversation keeps its model: another model means a new chat.
  if (state.current && state.current.model !== picker.selected) navigate("/");
});

// Conversations and the address ---------------------------------------------------------------------

function navigate(path) {
  if (location.pathname !== path) history.pushState(null, "", path);
  route();
}

window.addEventListener("popstate", () => route());

function conversationInAddress() {
  const match = location.pathname.match(/^\/conversation\/([^/]+)$/);
  return match ? decodeURIComponent(match[1]) : null;
}

// An answer running in the conversation left goes on; the one coming back to shows, still growing.
async function route() {
  sidebar.fold();
  const id = conversationInAddress();
  if (id) await openConversation(id);
  else showConversation(null, []);
}

async function openConversation(id) {
  const token = ++state.loadToken;
  if (running.has(id)) return showRun(running.get(id));
  let data;
  // An answer cut by a reload is saved as interrupted a moment after the page comes back: wait for it.
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      data = await api.conversation(id);
    } catch (error) {
      if (token !== state.loadToken) return;
      showConversation(null, []);
      if (error.status === 404) notice("This conversation does not exist, or belongs to another browser.");
      else report(error);
      return;
    }
    if (token !== state.loadToken) return;
    const last = data.messages[data.messages.length - 1];
    if (!last || last.status !== "generating" || running.has(id)) break;
    await new Promise((resolve) => setTimeout(resolve, 150));
  }
  if (token !== state.loadToken) return;
  if (running.has(id)) return showRun(running.get(id)); // begun while this was read
  const { messages, ...conversation } = data;
  showConversation(conversation, messages);
}

function showConversation(conversation, messages) {
  leaveScreen();
  state.current = conversation;
  state.views = messages.map((message, index) => {
    const view = new MessageView($("messages"), { id: message.id, role: message.role, content: message.content });
    if (message.leftOut) view.note(leftOutNote(message.leftOut), "info");
    if (message.role === "assistant") view.setEnding(message, { last: index === messages.length - 1 });
    return view;
  });
  shown();
}

// A conversation whose answer is running: its own views, which kept growing off screen.
function showRun(run) {
  if (state.views === run.views) return; // on screen already
  leaveScreen();
  state.current = run.conversation;
  state.views = run.views;
  $("messages").append(...run.views.map((view) => view.article));
  shown();
}

// Off the screen: the views of a running answer are kept, to come back to; others are done with.
function leaveScreen() {
  notice("");
  const kept = running.get(state.current?.id)?.views === state.views;
  for (const view of state.views) kept ? view.article.remove() : view.remove();
}

function shown() {
  const conversation = state.current;
  if (conversation) picker.show(conversation.model);
  follower.jump(); // a conversation opens on its newest message
  sidebar.select(conversation?.id ?? null);
  settings.enable(conversation);
  document.title = conversation ? `${conversation.title} · h2ochat` : "h2ochat";
  const busy = running.has(conversation?.id);
  if (composer.busy !== busy) composer.setBusy(busy); // not again: it would take the focus from the sidebar
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
  if (running.has(state.current?.id) || state.starting || !text.trim()) return;
  if (!welcome.passed) return welcome.show();
  composer.take();
  notice("");
  if (!state.current) {
    // Until the answer streams (answer() starts its run before its first wait), another send,
    // such as the second click of a double-click on an example, must not make a second conversation.
    state.starting = true;
    try {
      const id = await api.createConversation(picker.selected);
      state.current = { id, title: NEW_CHAT, model: picker.selected, settings: {} };
    } catch (error) {
      composer.setText(text);
      report(error);
      return;
    } finally {
      state.starting = false;
    }
    history.pushState(null, "", `/conversation/${state.current.id}`);
    sidebar.select(state.current.id);
    settings.enable(state.current);
    sidebar.refresh();
  }
  const user = new MessageView($("messages"), { id: api.uuid(), role: "user", content: text });
  state.views.push(user);
  await answer(user);
}

// Streams an answer to `user`: a new one, a retry (`isRetry`, with `parameters`), or more of the
// last answer (`continued`: its view, which grows). It goes on if the person opens another conversation.
async function answer(user, { isRetry = false, parameters = {}, continued = null } = {}) {
  const conversation = state.current;
  const views = state.views;
  const here = () => state.views === views; // this conversation is the one on screen
  const view = continued || new MessageView($("messages"), { id: api.uuid(), role: "assistant" });
  if (!continued) views.push(view);
  view.notes.querySelector(".ending")?.remove();
  refreshChrome();
  view.setStreaming(true);
  follower.jump(); // the person asked: show the answer coming, until they scroll away
  const run = running.start(conversation, views);
  let ok = false;
  const started = { at: new Date().toISOString(), before: continued?.meta };
  try {
    const result = await api.sendMessage(conversation.id, continued ? "" : user.text, {
      messageId: continued ? view.id : user.id,
      answerId: view.id,
      isRetry,
      isContinue: Boolean(continued),
      parameters: withSettings(parameters, conversation),
      signal: run.controller.signal,
      onToken: (token) => view.append(token),
      onStart: ({ leftOut }) => leftOut && view.note(leftOutNote(leftOut), "info"),
      stopping: () => run.stopping,
    });
    await view.drawn();
    view.setEnding(streamedEnding(result, started), { last: true });
    ok = true;
  } catch (error) {
    await view.drawn();
    if (error.name === "AbortError") view.note("Stopped before the answer began.", "info");
    else if (continued) view.note(error.message); // the answer stays as it was
    else refused(user, view, error, views, here());
  } finally {
    view.setStreaming(false);
    running.end(run);
    if (here()) refreshChrome();
  }
  await nameConversation(conversation, ok ? null : user.text, views);
  sidebar.refresh();
}

// A refusal or a lost connection before the answer began stored nothing: the message goes back in
// the box (`here`: its conversation is on screen). The banner alone says that the server is away.
function refused(user, view, error, views, here) {
  if (view.text) {
    view.note(`${sentence(error.message)} The text above is what arrived before that.`);
    return;
  }
  if (error.partial) {
    view.note(error.message); // the answer was begun, and saved empty
    return;
  }
  view.remove();
  views.splice(views.indexOf(view), 1);
  if (error.lost) user.note("Not sent.", "info");
  else user.note(error.message);
  user.unsent = true;
  user.article.classList.add("unsent");
  if (here && !$("message").value) composer.setText(user.text);
}

// After the first answer the model writes a title; when there was no answer (`refusedText`, the
// message that was refused) or the model cannot write one, the person's own words make it.
async function nameConversation(conversation, refusedText, views) {
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
    if (error.status === 404) return; // deleted meanwhile: nothing to name
    const first = views.find((v) => v.role === "user")?.text || "";
    if (refusedText == null) return nameConversation(conversation, first, views);
    if (!error.lost) notice(`No title was made: ${error.message}`);
    return;
  }
  sidebar.setTitle(conversation.id, conversation.title);
  if (state.current?.id === conversation.id) document.title = `${conversation.title} · h2ochat`;
}

function stop() {
  running.stop(state.current?.id);
}

function retry() {
  const last = state.views[state.views.length - 1];
  const user = state.views[state.views.length - 2];
  if (running.has(state.current?.id) || !last || last.role !== "assistant" || !user || user.role !== "user") return;
  last.remove();
  state.views.pop();
  // A model that answers greedily would give the same text again: a retry samples instead.
  const greedy = !picker.info(state.current.model)?.parameters?.do_sample;
  answer(user, { isRetry: true, parameters: greedy ? { do_sample: true, temperature: 0.7 } : {} });
}

function continueLast() {
  const last = state.views[state.views.length - 1];
  const user = state.views[state.views.length - 2];
  if (running.has(state.current?.id) || !last || last.role !== "assistant") return;
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

// Export, new chat -------------------------------------------------------------------------------

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

async function start() {
  initTheme($("theme"));
  const listed = sidebar.refresh(); // in parallel with the models: one round trip less before the page is usable
  let models = [];
  try {
    models = await api.models();
  } catch (error) {
    report(error);
  }
  picker.show(facts.activeModel, models);
  if (!welcome.passed) welcome.show();
  await Promise.all([route(), listed]);
  document.body.dataset.ready = "true"; // for tests and the benchmark: the page is usable
  performance.mark("h2ochat-ready");
  if (welcome.passed) composer.focus();
}

start();
