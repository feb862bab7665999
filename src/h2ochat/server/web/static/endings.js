// How an answer ended, in words a person uses, and what it cost, shown on demand.
// `message` is an answer as the server stores it (GET /api/conversation/<id>), or as the page
// measured it while it streamed: { status, finishReason, interruption, generatedTokens, createdAt, updatedAt }.

// How an answer that streamed here ended (`result`: api.sendMessage's), as the server stores it;
// `started.before`: what a continued answer was before it went on.
export function streamedEnding(result, started) {
  const before = started.before;
  return {
    status: result.stopped ? "interrupted" : "done",
    interruption: result.stopped ? "stop-generating" : null,
    finishReason: result.details?.finish_reason ?? null,
    generatedTokens: (before?.generatedTokens || 0) + (result.details?.generated_tokens ?? 0),
    createdAt: before?.createdAt || started.at,
    updatedAt: new Date().toISOString(),
  };
}

// A note under the answer: why it ended, when that is worth saying; null when it simply ended.
export function endingNote(message) {
  if (message.status === "interrupted") return interruptionNote(message);
  if (message.status === "generating") return "This answer is still being generated elsewhere.";
  if (message.finishReason === "length") return `Reached the ${count(message.generatedTokens)}-token limit.`;
  return null;
}

export function interruptionNote(message) {
  const why = message.interruption || "";
  if (/stop-generating/.test(why)) return "Stopped: you stopped this answer before it was complete.";
  if (/client disconnected/.test(why)) {
    return "Interrupted: the page lost its connection to the server before the answer was complete.";
  }
  if (/shutting down|server stopped/.test(why)) return "Interrupted: the server stopped before the answer was complete.";
  if (/write time|stopped reading/.test(why)) return "Interrupted: the page stopped reading the answer before it was complete.";
  if (why.startsWith("error: ")) return sentence(`Interrupted: the model failed (${why.slice(7)})`);
  return sentence(`Interrupted: this answer was not completed${why ? ` (${why})` : ""}`);
}

// One line of facts: tokens, speed, ending, time.
export function detailsText(message) {
  const parts = [];
  const tokens = message.generatedTokens;
  if (tokens != null) parts.push(`${count(tokens)} ${tokens === 1 ? "token" : "tokens"}`);
  const seconds = (Date.parse(message.updatedAt) - Date.parse(message.createdAt)) / 1000;
  if (tokens && seconds > 0) parts.push(`${(tokens / seconds).toFixed(1)} tokens a second`);
  parts.push(endedHow(message));
  const when = new Date(message.createdAt);
  if (!Number.isNaN(when.getTime())) parts.push(when.toLocaleString());
  return parts.join(" · ");
}

function endedHow(message) {
  if (message.status === "interrupted") return "interrupted";
  if (message.status === "generating") return "still being written";
  return (
    {
      eos_token: "the model finished",
      length: "reached the token limit",
      stop_sequence: "reached a stop sequence",
    }[message.finishReason] || "finished"
  );
}

// Sentences end with a full stop, whoever wrote them (the server's messages often do not).
export function sentence(text) {
  const trimmed = String(text).trim();
  return /[.!?…:)]$/.test(trimmed) ? trimmed : `${trimmed}.`;
}

// A title from the person's own words (the server's title_from_message, for when no answer came):
// Markdown marks dropped, at most 60 characters, cut at a word.
export function titleFrom(text) {
  const plain = String(text).replace(/[*_`#>[\]]+/g, "").split(/\s+/).filter(Boolean).join(" ");
  if (plain.length <= 60) return plain || "New Chat";
  return `${plain.slice(0, 59).replace(/\s+\S*$/, "").replace(/[\s,;:\-\u2013]+$/, "")}…`;
}

const count = (n) => Number(n || 0).toLocaleString("en");
