// Shared by the lmforge pages: the API key (kept in this browser only) and JSON requests.
"use strict";

function apiKey() { return localStorage.getItem("lmforge.apiKey") || ""; }
function setApiKey(k) { localStorage.setItem("lmforge.apiKey", k); }

// A link may carry the key (/human#key=...), as an admin hands raters their rater key: keep it
// in this browser and take it out of the address bar.
(function keyFromLink() {
  const m = location.hash.match(/^#key=(.+)$/);
  if (!m) return;
  setApiKey(decodeURIComponent(m[1]));
  history.replaceState(null, "", location.pathname + location.search);
})();

function headers() {
  const h = { "Content-Type": "application/json" };
  if (apiKey()) h["Authorization"] = "Bearer " + apiKey();
  return h;
}

// GET or POST JSON; throws Error(message) with the server's OpenAI-style error message and the
// HTTP status as err.status (401: a key is missing or wrong).
async function requestJSON(url, body) {
  const opts = body === undefined ? { headers: headers() }
                                  : { method: "POST", headers: headers(), body: JSON.stringify(body) };
  const resp = await fetch(url, opts);
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error((data.error && data.error.message) || resp.status + " " + resp.statusText);
    err.status = resp.status;
    throw err;
  }
  return data;
}

// Show the "this server needs a key" box (id `needkey`: a message, an input, a button) and call
// `retry` once a key is entered there; hide it with needKey(null).
function needKey(err, retry) {
  const box = document.getElementById("needkey");
  if (!err) { box.hidden = true; return; }
  document.getElementById("needkey-msg").textContent = (apiKey() ? "The key kept in this browser was refused. "
    : "This server needs a key. ") + "Enter the rater key you were given (or the API key). Server: " + err.message;
  box.hidden = false;
  const input = document.getElementById("needkey-input");
  input.value = "";
  input.focus();
  document.getElementById("needkey-form").onsubmit = (e) => {
    e.preventDefault();
    setApiKey(input.value.trim());
    retry();
  };
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
