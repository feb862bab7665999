// The chat protocol (PROTOCOL.md) and the server's JSON reads, as the page uses them.
// Every failure becomes a ChatError whose message a person can read.
// Paths are relative: fetch resolves them against the page's <base href>, the server's base path
// ("/" or "/chat/"), so the page works behind a proxy at a sub-path with no other knowledge of it.

export class ChatError extends Error {
  constructor(message, { status = 0, partial = false, lost = false } = {}) {
    super(message);
    this.status = status;
    this.partial = partial;
    this.lost = lost; // the server was not reached, or the connection broke: the page's banner says so
  }
}

const LOST = "The connection to the server was lost. Check that it is running, then try again.";

let lostListener = () => {};

// Called whenever a request does not reach the server or its connection breaks.
export function onLost(listener) {
  lostListener = listener;
}

// Answers waiting for the server to come back (followRun) try again at once when told it answers.
const back = new EventTarget();

export function serverBack() {
  back.dispatchEvent(new Event("back"));
}

function lost(partial = false) {
  lostListener();
  return new ChatError(LOST, { partial, lost: true });
}

// Whether the server answers now; its own failure is not reported as a lost request.
export async function reachable() {
  try {
    return (await fetch("api/models", { cache: "no-store", signal: AbortSignal.timeout(5000) })).ok;
  } catch {
    return false;
  }
}

async function request(method, path, { json, form, file, signal } = {}) {
  const init = { method, signal, headers: { Accept: "application/json" } };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (file !== undefined) {
    // A file as it is: a zip, or JSON (types a browser preflights across origins, as the server asks).
    init.headers["Content-Type"] = /\.zip$/i.test(file.name) ? "application/zip" : "application/json";
    init.body = file;
  } else if (form !== undefined) {
    init.body = new URLSearchParams(form); // form-encoded: the server checks its Referer
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw lost();
  }
  if (!response.ok) throw await failure(response);
  return response;
}

// What a refusal means, in words: the server's own message, plus when to try again for 429.
async function failure(response) {
  let message = "";
  try {
    const body = await response.json();
    message = body.message || body.error || "";
  } catch {
    // not JSON: a proxy's page, say; the status says enough
  }
  if (response.status === 429) {
    const wait = response.headers.get("Retry-After");
    message = message || "Too many messages.";
    if (wait && !/try again/i.test(message)) message += ` Try again in ${wait} s.`;
  } else if (response.status >= 500) {
    message = `The server failed (HTTP ${response.status})${message ? ": " + message : ""}.`;
  } else if (!message) {
    message = `The server refused the request (HTTP ${response.status}).`;
  }
  return new ChatError(message, { status: response.status });
}

export async function getJSON(path) {
  return (await request("GET", path)).json();
}

export const models = () => getJSON("api/models");

// The composer's switch: whether this server has a web search engine, and the person's last choice.
export async function webSearchSetting() {
  const { json } = await getJSON("api/v2/user/settings");
  return { available: Boolean(json?.webSearchAvailable), on: Boolean(json?.searchEnabled) };
}

// Kept with the session, so a reload or another device of it starts with the same choice.
export const saveSearchEnabled = (on) => call("POST", "api/v2/user/settings", { json: { searchEnabled: on } });

// Run a web search for `prompt` (2023's route): onEvent(event) for each progress line; the search's id.
export async function webSearch(id, prompt, onEvent) {
  const query = new URLSearchParams({ prompt });
  const response = await request("GET", `conversation/${encodeURIComponent(id)}/web-search?${query}`);
  const text = await response.text();
  let searchId = "";
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const event = JSON.parse(line);
    if (event.type === "result") searchId = event.id;
    else onEvent(event);
  }
  return searchId;
}
export const conversation = (id) => getJSON(`api/conversation/${encodeURIComponent(id)}`);

export function conversations(query = "") {
  return getJSON(query ? `api/conversations?q=${encodeURIComponent(query)}` : "api/conversations");
}

// A request whose answer carries nothing the page needs: its body is still read to the end, or the
// browser drops the response and its network log shows a request that succeeded as failed.
async function call(method, path, options) {
  const response = await request(method, path, options);
  await response.arrayBuffer().catch(() => {}); // the status already said it was done
}

export function acceptSettings(model) {
  return call("POST", "settings", {
    form: {
      ethicsModalAccepted: "true",
      shareConversationsWithModelAuthors: "false",
      ethicsModalAcceptedAt: "",
      activeModel: model,
    },
  });
}

// `preprompt`: the conversation's system prompt; null or undefined: the model's own.
export async function createConversation(model, preprompt) {
  const json = preprompt == null ? { model } : { model, preprompt };
  const body = await (await request("POST", "conversation", { json })).json();
  return body.conversationId;
}

// A copy of a shared conversation (/r/<shareId>) in this browser's session; the new conversation's id.
export async function continueShare(model, shareId) {
  const body = await (await request("POST", "conversation", { json: { model, fromShare: shareId } })).json();
  return body.conversationId;
}

// Shared links (docs/protocol.md section 14). `days`: the link's expiry; null: until revoked.
export async function share(id, days = null) {
  const json = days ? { expires_in_days: days } : {};
  return (await request("POST", `conversation/${id}/share`, { json })).json(); // {shareId, url}
}
export const shares = () => getJSON("api/shares");
export const revokeShare = (shareId) => call("DELETE", `api/shares/${encodeURIComponent(shareId)}`);

// Devices (docs/protocol.md section 17): one history in several browsers.
export const deviceCode = async () => (await request("POST", "api/devices/code", { json: {} })).json();
export const linkDevice = (code) => call("POST", "api/devices/link", { json: { code } });
export const devices = () => getJSON("api/devices");
export const detachDevice = async (id) => (await request("DELETE", `api/devices/${encodeURIComponent(id)}`)).json();

// People (README "People: sign-in for teams"): who the identity proxy says this is, and their API keys.
export async function person() {
  const [{ json: user }, { json: flags }] = await Promise.all([getJSON("api/v2/user"), getJSON("api/v2/feature-flags")]);
  const signIn = Boolean(flags?.loginEnabled);
  if (!user) return { signIn, person: null };
  return { signIn, person: { name: user.username, isAdmin: Boolean(flags?.isAdmin), canSignOut: !user.logoutDisabled } };
}
export const signOut = () => call("POST", "logout", { json: {} });
export const apiKeys = () => getJSON("api/keys");
export const makeApiKey = async (name) => (await request("POST", "api/keys", { json: { name } })).json();
export const revokeApiKey = (id) => call("DELETE", `api/keys/${encodeURIComponent(id)}`);

export const rename = (id, title) => call("PATCH", `conversation/${id}`, { json: { title } });
export const saveSettings = (id, settings) => call("PATCH", `conversation/${id}`, { json: { settings } });
export const remove = (id) => call("DELETE", `conversation/${id}`);
export const savePreprompt = (id, preprompt) => call("PATCH", `conversation/${id}`, { json: { preprompt } });

// The tree (docs/protocol.md): each call answers with the leaf the active branch now ends at.
const messagePath = (id, messageId) => `conversation/${id}/message/${encodeURIComponent(messageId)}`;

export async function setActive(id, messageId) {
  const response = await request("PATCH", `conversation/${id}`, { json: { activeMessageId: messageId } });
  return (await response.json()).activeMessageId;
}

export async function removeMessage(id, messageId) {
  return (await (await request("DELETE", messagePath(id, messageId))).json()).activeMessageId;
}

export const vote = (id, messageId, score) => call("POST", `${messagePath(id, messageId)}/vote`, { json: { score } });
export async function runningAnswers() {
  return (await (await request("GET", "api/running")).json()).running;
}

export const stopGenerating = (id) => call("POST", `conversation/${id}/stop-generating`);

export async function summarize(id) {
  return (await (await request("POST", `conversation/${id}/summarize`)).json()).title;
}

export const GENERATION = "H2ochat-Generation-Id";

// Send a message and call onToken(text) for each token as it arrives. Resolves with how the answer
// ended: {finished: true} or, when stopping was asked for, {stopped: true}; anything else throws.
// The server keeps generating an answer it names the run of (GENERATION) when the connection breaks:
// the rest is then read with followRun, from the last event this stream gave.
export async function sendMessage(
  id,
  inputs,
  {
    messageId,
    answerId,
    isRetry = false,
    isContinue = false,
    parameters = {},
    webSearchId = "",
    signal,
    onToken,
    onStart,
    onWaiting,
    stopping,
  },
) {
  const options = {
    id: messageId,
    response_id: answerId,
    is_retry: isRetry,
    use_cache: false,
    web_search_id: webSearchId,
  };
  if (isContinue) options.is_continue = true;
  // details: the final event then says how the answer ended and how many tokens it took.
  const body = { inputs, parameters: { ...parameters, details: true }, stream: true, options };
  const response = await request("POST", `conversation/${id}`, { json: body, signal });
  onStart?.({ leftOut: Number(response.headers.get("H2ochat-Left-Out") || 0) });
  const run = { id: response.headers.get(GENERATION), seq: 0 };
  const handlers = { signal, onToken, onWaiting, stopping };
  const decoder = new EventDecoder();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (error) {
      if (error.name === "AbortError" || signal?.aborted) return { stopped: true };
      if (run.id) return followRun(id, run, handlers);
      throw lost(true);
    }
    if (chunk.done) break;
    for (const data of decoder.push(chunk.value)) {
      run.seq += 1;
      const result = take(JSON.parse(data), handlers);
      if (result) return result;
    }
  }
  if (stopping?.()) return { stopped: true };
  if (run.id) return followRun(id, run, handlers);
  throw new ChatError("The answer ended before it was complete; the server may have restarted.", { partial: true });
}

// Reattach (docs/protocol.md): the events of the run `run.id` (null: the conversation's newest) after
// `run.seq`, then the live ones until it ends. While the server cannot be reached it tries again,
// sooner when the browser says it is back online, the page is shown again or the server answers
// (serverBack), until `signal` aborts; onWaiting(true) says it waits, onWaiting(false) that it is back.
export async function followRun(id, run, { signal, onToken, onWaiting, stopping }) {
  const handlers = { signal, onToken, stopping };
  for (let attempt = 0; ; attempt++) {
    const query = new URLSearchParams({ fromSeq: String(run.seq) });
    if (run.id) query.set("generationId", run.id);
    let response;
    try {
      response = await fetch(`conversation/${id}/stream?${query}`, { signal, headers: { Accept: "text/event-stream" } });
    } catch (error) {
      if (error.name === "AbortError" || signal?.aborted) return { stopped: true };
      lostListener();
      onWaiting?.(true);
      await networkBack(attempt, signal);
      continue;
    }
    onWaiting?.(false);
    if (!response.ok) throw await failure(response);
    run.id ||= response.headers.get(GENERATION);
    try {
      const result = await readRun(response, run, handlers);
      if (result) return result;
      attempt = -1; // closed with no end, after a while: reconnect at once
    } catch (error) {
      if (error instanceof ChatError) throw error;
      if (error.name === "AbortError" || signal?.aborted) return { stopped: true };
      await networkBack(attempt, signal);
    }
  }
}

async function readRun(response, run, handlers) {
  const decoder = new EventDecoder();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const chunk = await reader.read();
      if (chunk.done) return null;
      for (const frame of decoder.frames(chunk.value)) {
        if (frame.event === "end") return runEnded(JSON.parse(frame.data).status, handlers);
        const seq = Number(frame.id);
        if (frame.event !== "update" || !(seq > run.seq)) continue; // had it already
        run.seq = seq;
        const result = take(JSON.parse(frame.data), handlers);
        if (result) return result;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// The run ended without the answer's own last event, which says how (a stop, in any tab, has one):
// a stop asked for here, or a server that stopped while generating it (the next start marks it).
function runEnded(status, { stopping }) {
  if (stopping?.()) return { stopped: true };
  if (status === "interrupted") {
    throw new ChatError("The server stopped before the answer was complete.", { partial: true });
  }
  throw new ChatError(`The answer ended (${status}) before it was complete.`, { partial: true });
}

// A pause before trying again: shorter each time the browser says it can reach the network again.
function networkBack(attempt, signal) {
  const wait = Math.min(500 * 2 ** attempt, 5000);
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      window.removeEventListener("online", done);
      back.removeEventListener("back", done);
      document.removeEventListener("visibilitychange", shown);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const shown = () => document.visibilityState === "visible" && done();
    const timer = setTimeout(done, wait);
    window.addEventListener("online", done);
    back.addEventListener("back", done);
    document.addEventListener("visibilitychange", shown);
    signal?.addEventListener("abort", done);
  });
}

// One event of an answer (TGI's shape): its token to onToken; how it ended once that is known.
function take(event, { onToken, stopping }) {
  if (event.error !== undefined) {
    // A stop asked for here, or in another tab: the answer ends as far as it got.
    if (stopping?.() || /stop-generating was requested/.test(event.error)) return { stopped: true };
    throw new ChatError(inStreamMessage(event), { partial: true });
  }
  if (!event.token.special) onToken(event.token.text);
  if (event.generated_text !== null && event.generated_text !== undefined) {
    return { finished: true, details: event.details || {} };
  }
  return null;
}

function inStreamMessage(event) {
  switch (event.error_type) {
    case "overloaded":
      return `The model is busy: ${event.error}. Try again in a moment.`;
    case "validation":
      return `The message was refused: ${event.error}`;
    case "incomplete_generation":
      return `The answer was cut short: ${event.error}`;
    default:
      return `The model failed: ${event.error}`;
  }
}

// An event-stream decoder (WHATWG rules): text in, the complete events out.
export class EventDecoder {
  constructor() {
    this.buffer = "";
    this.data = [];
    this.event = "";
    this.id = "";
  }

  // The data of each complete event.
  push(text) {
    return this.frames(text).map((frame) => frame.data);
  }

  // Each complete event: {data, event ("message" unless named), id (the last one given)}.
  frames(text) {
    this.buffer += text;
    const out = [];
    // A CR at the very end may be the first half of a CRLF: keep it for the next chunk.
    const lines = this.buffer.split(/\r\n|\r(?!$)|\n/);
    this.buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (this.data.length) out.push({ data: this.data.join("\n"), event: this.event || "message", id: this.id });
        this.data = [];
        this.event = "";
        continue;
      }
      const colon = line.indexOf(":");
      if (colon === 0) continue; // a comment
      const name = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (name === "data") this.data.push(value);
      else if (name === "event") this.event = value;
      else if (name === "id" && !value.includes("\0")) this.id = value;
    }
    return out;
  }
}

// A version 4 UUID; crypto.randomUUID exists only on https or loopback pages, this works on plain http too.
export function uuid() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// Export and import (docs/protocol.md section 16): what an import added ({imported, skipped, conversations}).
export async function importHistory(file) {
  return (await request("POST", "api/import", { file })).json();
}
