// Shared by the lmforge pages: the API key (kept in this browser only) and JSON requests.
"use strict";

function apiKey() { return localStorage.getItem("lmforge.apiKey") || ""; }
function setApiKey(k) { localStorage.setItem("lmforge.apiKey", k); }

function headers() {
  const h = { "Content-Type": "application/json" };
  if (apiKey()) h["Authorization"] = "Bearer " + apiKey();
  return h;
}

// GET or POST JSON; throws Error(message) with the server's OpenAI-style error message.
async function requestJSON(url, body) {
  const opts = body === undefined ? { headers: headers() }
                                  : { method: "POST", headers: headers(), body: JSON.stringify(body) };
  const resp = await fetch(url, opts);
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error((data.error && data.error.message) || resp.status + " " + resp.statusText);
  return data;
}

// Read a server-sent-events response, calling onData(parsed JSON) for each `data:` event until [DONE].
async function readEvents(resp, onData) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const payload = line.slice(5).trim();
        if (payload === "[DONE]") return;
        onData(JSON.parse(payload));
      }
    }
  }
}
