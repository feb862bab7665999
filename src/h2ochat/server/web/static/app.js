// The page: wires the modules together, keeps the address in step with the conversation shown,
// and runs an exchange (send, stream, stop, retry, edit, title), one at a time in each conversation.
// The conversation is a tree (tree.js); the page shows its active branch.

import * as api from "./api.js";
import { Branches } from "./branches.js";
import { Composer } from "./composer.js";
import { announce, initFrame, setExportable, showTitle } from "./frame.js";
import { copyText } from "./markdown.js";
import { sentence, streamedEnding } from "./endings.js";
import { Follower } from "./follow.js";
import { MessageView, exportConversation, leftOutNote } from "./messages.js";
import { ModelPicker } from "./models.js";
import { Offline } from "./offline.js";
import { SystemPromptDialog } from "./prompt.js";
import { Running } from "./running.js";
import { SettingsDialog, withSettings } from "./settings.js";
import { Portability } from "./portability.js";
import { DevicesDialog, LinkDialog } from "./devices.js";
import { KeysDialog, showPerson } from "./keys.js";
import { ShareDialog, SharedLinks } from "./shares.js";
import { NEW_CHAT, Sidebar } from "./sidebar.js";
import { initTheme } from "./theme.js";
import { Tree } from "./tree.js";
import { WelcomeGate } from "./welcome.js";
import { WebSearch, showSources } from "./websearch.js";

const $ = (id) => document.getElementById(id);
const facts = JSON.parse(document.querySelector('meta[name="h2ochat"]').content);
const state = { current: null, views: [], tree: new Tree(), starting: false, loadToken: 0 };
const RESAMPLE = { do_sample: true, temperature: 0.7 };

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
  drawer: { aside: $("sidebar"), menu: $("menu"), close: $("close-drawer"), backdrop: $("backdrop"), behind: [$("skip"), $("main")] },
  onOpen: (id) => navigate(`conversation/${id}`),
  onDeleted: (id, next) => {
    if (state.current?.id === id) navigate("./");
    // Focus was on the deleted row: to the conversation now in its place, if on screen, else the message box.
    if (next && getComputedStyle(next).visibility !== "hidden") next.focus();
    else composer.focus();
  },
  onRenamed: (id, title) => {
    if (state.current?.id !== id) return;
    state.current.title = title; // the exports' name and heading too
    showTitle(title);
  },
  onError: (error) => report(error),
});

initFrame({ newChat, focusBox: () => composer.focus(), stop, copyLast, exportAs }, sidebar);

const running = new Running((id, on) => {
  sidebar.setAnswering(id, on);
  if (id === state.current?.id) composer.setBusy(on);
});

const picker = new ModelPicker({ select: $("model"), composer, onExample: (prompt) => send(prompt) });
const welcome = new WelcomeGate({ facts, model: () => picker.selected, onAccepted: () => composer.focus() });

const settings = new SettingsDialog({
  buttons: [$("settings"), $("more-settings")],
  dialog: $("settings-dialog"),
  limit: facts.maxNewTokens,
  current: () => state.current,
  defaults: (model) => picker.info(model)?.parameters,
});

const systemPrompt = new SystemPromptDialog({
  buttons: [$("system-prompt-button"), $("more-prompt")],
  dialog: $("prompt-dialog"),
  current: () => state.current,
  picker,
});

new Branches({
  container: $("messages"),
  confirm: $("confirm-message"),
  page: {
    current: () => state.current,
    tree: () => state.tree,
    views: () => state.views,
    busy: () => running.has(state.current?.id) || state.starting,
    reload: () => state.current && openConversation(state.current.id),
    answer,
    // A model that answers greedily would give the same text again: a retry samples instead.
    retryParameters: () => (picker.info(state.current.model)?.parameters?.do_sample ? {} : RESAMPLE),
    focusBox: () => composer.focus(),
    report,
  },
});

const webSearch = new WebSearch($("web-search"));
new ShareDialog({ buttons: [$("share"), $("more-share")], dialog: $("share-dialog"), current: () => state.current });
new SharedLinks({ button: $("shared-links"), dialog: $("shares-dialog") });
new Portability({ button: $("import-history"), dialog: $("import-dialog"), onImported: () => sidebar.refresh() });
new DevicesDialog({ button: $("devices-button"), dialog: $("devices-dialog") });
new KeysDialog({ button: $("api-keys-button"), dialog: $("keys-dialog") });
showPerson({
  line: $("person"),
  keysButton: $("api-keys-button"),
  usageLink: $("usage-link"),
  signIn: $("sign-in"),
  signOut: $("sign-out"),
});
const linking = new LinkDialog({ buttons: [$("have-code"), $("welcome-have-code")], dialog: $("link-dialog") });

// Back after being away: what failed meanwhile is asked again.
const offline = new Offline({
  banner: $("offline"),
  reachable: api.reachable,
  onBack: () => {
    api.serverBack(); // answers waiting for it reattach now
    caughtUp();
  },
});
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
  if (state.current && state.current.model !== picker.selected) navigate("./");
});

// Conversations and the address ---------------------------------------------------------------------

// Addresses are relative to the <base href> the server writes (its base path, "/" or "/chat/"):
// "./" is the new chat (not "": pushState takes "" as "stay"), "conversation/<id>" a conversation.
const BASE = new URL(document.baseURI).pathname;

function navigate(path) {
  if (location.pathname !== new URL(path, document.baseURI).pathname) history.pushState(null, "", path);
  route();
}

window.addEventListener("popstate", () => route());

function conversationInAddress() {
  // The page at "/chat" (no slash) is under the base "/chat/" too.
  const here = location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length) : "";
  const match = here.match(/^conversation\/([^/]+)$/);
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
  // Without resumable answers, one cut by a reload is saved as interrupted a moment after the page
  // comes back: wait for it. With them, it goes on, and the page follows it (resume).
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
    if (facts.resumable || !last || last.status !== "generating" || running.has(id)) break;
    await new Promise((resolve) => setTimeout(resolve, 150));
  }
  if (token !== state.loadToken) return;
  if (running.has(id)) return showRun(running.get(id)); // begun while this was read
  const { messages, ...conversation } = data;
  showConversation(conversation, messages);
  const answer = state.views[state.views.length - 1];
  const stored = messages.find((message) => message.id === answer?.id);
  if (facts.resumable && stored?.role === "assistant" && stored.status === "generating") resume(conversation, answer);
}

// An answer being generated (begun before a reload, or in another tab or device): its events from the
// first, so the view grows as the server writes it; once it ends, the conversation is read again.
async function resume(conversation, view) {
  const { views, tree } = state;
  const run = running.start(conversation, views);
  run.tree = tree;
  view.text = "";
  view.draw();
  view.notes.querySelector(".ending")?.remove();
  view.setStreaming(true);
  refreshChrome();
  let failure = null;
  try {
    await api.followRun(conversation.id, { id: null, seq: 0 }, {
      signal: run.controller.signal,
      onToken: (token) => view.append(token),
      onWaiting: (on) => view.showWaiting(on),
      stopping: () => run.stopping,
    });
    await view.drawn();
  } catch (error) {
    failure = error;
  } finally {
    view.showWaiting(false);
    view.setStreaming(false);
    running.end(run);
  }
  if (failure) return report(failure);
  if (state.views !== views) return;
  await openConversation(conversation.id); // as stored: its ending, all of a continued answer's text
  state.views.findLast((shown) => shown.id === view.id)?.setStreaming(false); // written, as after a send
}

// Answers running in conversations not followed here (begun before a reload, or in another tab):
// marked in the sidebar until they end, asked about every few seconds while there are any.
let elsewhere = new Set();

async function markRunningElsewhere() {
  let listed;
  try {
    listed = await api.runningAnswers();
  } catch {
    return; // the next answer sent, or the next load, asks again
  }
  const now = new Set(listed.map((run) => run.conversationId).filter((id) => !running.has(id)));
  for (const id of elsewhere) if (!now.has(id) && !running.has(id)) sidebar.setAnswering(id, false);
  for (const id of now) sidebar.setAnswering(id, true);
  elsewhere = now;
  if (elsewhere.size) setTimeout(markRunningElsewhere, 3000);
}

// The conversation's active branch (its tree from `messages`, every message of it).
function showConversation(conversation, messages) {
  leaveScreen();
  state.current = conversation;
  state.tree = new Tree({ ...conversation, messages });
  if (!conversation) systemPrompt.reset(); // a new chat starts with the model's system prompt
  const branch = state.tree.path();
  state.views = branch.map((message, index) => {
    const view = new MessageView($("messages"), { id: message.id, role: message.role, content: message.content });
    if (message.leftOut) view.note(leftOutNote(message.leftOut), "info");
    if (message.role === "assistant") view.setEnding(message, { last: index === branch.length - 1 });
    if (message.sources) showSources(view, message.sources);
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
  state.tree = run.tree;
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
  showTitle(conversation?.title);
  const busy = running.has(conversation?.id);
  if (composer.busy !== busy) composer.setBusy(busy); // not again: it would take the focus from the sidebar
  refreshChrome();
}

function refreshChrome() {
  const empty = state.views.length === 0;
  $("empty").hidden = !empty;
  settings.enable(state.current); // before the exports: More opens if either has something to do
  setExportable(state.current && !empty);
  state.views.forEach((view, i) => {
    view.setRetry(i === state.views.length - 1 && view.role === "assistant");
    view.setBranch(state.tree);
  });
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
      const preprompt = systemPrompt.take();
      const id = await api.createConversation(picker.selected, preprompt);
      state.current = { id, title: NEW_CHAT, model: picker.selected, settings: {} };
      state.current.preprompt = preprompt ?? picker.info(picker.selected)?.preprompt ?? "";
    } catch (error) {
      composer.setText(text);
      report(error);
      return;
    } finally {
      state.starting = false;
    }
    history.pushState(null, "", `conversation/${state.current.id}`);
    sidebar.select(state.current.id);
    sidebar.refresh();
  }
  const user = new MessageView($("messages"), { id: api.uuid(), role: "user", content: text });
  state.tree.add({ id: user.id, role: "user", content: text, parentId: state.tree.leaf });
  state.views.push(user);
  await answer(user);
}

// Streams an answer to `user`: a new one, a retry (`isRetry`, with `parameters`), an edited question
// (`edited`: the id of the one it replaces), or more of the last answer (`continued`: its view,
// which grows). It goes on if the person opens another conversation.
async function answer(user, { isRetry = false, parameters = {}, continued = null, edited = null } = {}) {
  const conversation = state.current;
  const { views, tree } = state;
  const here = () => state.views === views; // this conversation is the one on screen
  const view = continued || new MessageView($("messages"), { id: api.uuid(), role: "assistant" });
  if (!continued) views.push(view);
  if (!continued) tree.add({ id: view.id, role: "assistant", parentId: user.id });
  view.notes.querySelector(".ending")?.remove();
  refreshChrome();
  view.setStreaming(true);
  announce(""); // the last answer's "ready" is old news
  follower.jump(); // the person asked: show the answer coming, until they scroll away
  const run = running.start(conversation, views);
  run.tree = tree;
  let ok = false;
  let failure = null;
  const started = { at: new Date().toISOString(), before: continued?.meta };
  try {
    // The switch: a new question (not a retry or more of an answer) is searched for first.
    const searched = webSearch.on && !continued && !isRetry ? await webSearch.run(conversation.id, user.text, view) : null;
    const result = await api.sendMessage(conversation.id, continued ? "" : user.text, {
      webSearchId: searched?.searchId || "",
      messageId: continued ? view.id : edited || user.id, // an edit names the question it replaces
      answerId: view.id,
      isRetry,
      isContinue: Boolean(continued),
      parameters: withSettings(parameters, conversation),
      signal: run.controller.signal,
      onToken: (token) => view.append(token),
      onStart: ({ leftOut }) => leftOut && view.note(leftOutNote(leftOut), "info"),
      onWaiting: (on) => view.showWaiting(on),
      stopping: () => run.stopping,
    });
    await view.drawn();
    if (searched) showSources(view, searched.sources);
    view.setEnding(streamedEnding(result, started), { last: true });
    if (here()) announce(result.stopped ? "Answer stopped" : "Answer ready");
    ok = true;
  } catch (error) {
    await view.drawn();
    if (error.name === "AbortError") {
      view.note("Stopped before the answer began.", "info");
      if (here()) announce("Answer stopped");
    } else if (continued) view.note(error.message); // the answer stays as it was
    else if (isRetry) failure = error; // the server's tree says what is left: it is read again below
    else refused(user, view, error, views, tree, here());
  } finally {
    view.showWaiting(false);
    view.setStreaming(false);
    if (tree.get(view.id)) tree.get(view.id).content = view.text;
    running.end(run);
    if (here()) refreshChrome();
  }
  if (isRetry && !ok && here() && !running.has(conversation.id)) {
    await openConversation(conversation.id); // what the server kept of a failed retry or edit
    if (failure) report(failure);
  } else if (ok && (edited || !tree.rootId)) await adopt(conversation, tree, user, view);
  const first = () => views.find((v) => v.role === "user")?.text || "";
  const named = await sidebar.name(conversation, ok ? null : user.text, first);
  if (named && state.current?.id === conversation.id) showTitle(conversation.title);
  sidebar.refresh();
}

// The tree as the server keeps it, for the ids the page could not know: the root of a chat begun
// here (Export JSON names it), an edited question's (`user`, the parent of `view`, its answer).
async function adopt(conversation, tree, user, view) {
  const data = await api.conversation(conversation.id).catch(() => null);
  if (!data || running.has(conversation.id)) return; // another answer began: its end adopts
  Object.assign(tree, new Tree(data));
  const id = tree.get(view.id)?.parentId;
  if (id) user.id = user.article.dataset.id = id;
  if (state.tree === tree) refreshChrome();
}

// A refusal or a lost connection before the answer began stored nothing: the message goes back in
// the box (`here`: its conversation is on screen). The banner alone says that the server is away.
function refused(user, view, error, views, tree, here) {
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
  tree.drop(user.id); // and its answer: neither is stored
  user.markUnsent(error);
  if (here && !$("message").value) composer.setText(user.text);
}

function stop() {
  running.stop(state.current?.id);
}

// Export, new chat, copy -------------------------------------------------------------------------

function exportAs(kind) {
  exportConversation(kind, state.current, state.views, state.tree);
}

function newChat() {
  navigate("./");
  composer.focus();
}

async function copyLast() {
  const last = state.views.findLast((view) => view.role === "assistant" && view.text);
  if (!last) return announce("There is no answer to copy yet.");
  announce((await copyText(last.text)) ? "Copied the last answer" : "The answer could not be copied.");
}

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
  linking.fromLink(); // a code's link (#link=CODE): above the welcome gate, which linking may make moot
  await Promise.all([route(), listed]);
  if (facts.resumable) markRunningElsewhere();
  document.body.dataset.ready = "true"; // for tests and the benchmark: the page is usable
  performance.mark("h2ochat-ready");
  if (welcome.passed) composer.focus();
}

start();
