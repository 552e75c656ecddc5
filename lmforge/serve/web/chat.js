// The chat page: keeps the conversation here and sends it whole on every turn, streaming the reply
// from /v1/chat/completions (server-sent events) into the page as it is generated.
"use strict";

const $ = (id) => document.getElementById(id);
const conversation = [];  // {role, content} of user and assistant turns
const shown = new WeakMap();  // conversation entry -> its element on the page
let busy = false;

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const label = document.createElement("span");
  label.className = "role";
  label.textContent = role === "user" ? "you" : $("model").value || "model";
  const body = document.createElement("span");
  body.className = "content";
  body.textContent = text;
  div.append(label, body);
  $("messages").append(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function number(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

function request() {
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  const body = { model: $("model").value, messages: messages.concat(conversation), stream: true,
                 stream_options: { include_usage: true } };
  for (const [key, id] of [["temperature", "temperature"], ["top_p", "top_p"], ["max_tokens", "max_tokens"],
                           ["seed", "seed"]]) {
    const v = number(id);
    if (v !== null) body[key] = v;
  }
  return body;
}

async function send(text) {
  busy = true;
  $("send").disabled = true;
  $("status").textContent = "";
  $("status").className = "muted";
  const turn = { role: "user", content: text };
  conversation.push(turn);
  shown.set(turn, addMessage("user", text));
  const div = addMessage("assistant", "");
  div.classList.add("streaming");
  div.dataset.chunks = "0";
  const body = div.querySelector(".content");
  let reply = "", notice = "";
  try {
    let resp, dropped = 0;
    for (;;) {
      resp = await fetch("/v1/chat/completions", { method: "POST", headers: headers(),
                                                   body: JSON.stringify(request()) });
      if (resp.ok) break;
      const data = await resp.json().catch(() => ({}));
      const error = data.error || {};
      // Too long for the model: drop the oldest exchange and try again, as `lmforge chat` does.
      if (error.code === "context_length_exceeded" && conversation.length > 1) {
        for (const old of conversation.splice(0, conversation[1].role === "assistant" ? 2 : 1)) {
          if (shown.has(old)) shown.get(old).classList.add("dropped");
        }
        dropped += 1;
        continue;
      }
      throw new Error(error.message || resp.statusText);
    }
    if (dropped) {
      notice = `context full: dropped the ${dropped} oldest exchange${dropped > 1 ? "s" : ""} (dimmed); `;
      $("status").textContent = notice;
    }
    await readEvents(resp, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) {
        $("status").textContent = notice + `${chunk.usage.prompt_tokens} prompt tokens, ` +
                                  `${chunk.usage.completion_tokens} generated`;
      }
      for (const choice of chunk.choices || []) {
        const piece = (choice.delta && choice.delta.content) || "";
        if (piece) {
          reply += piece;
          body.textContent = reply;
          div.dataset.chunks = String(Number(div.dataset.chunks) + 1);
        }
        if (choice.finish_reason === "length") div.dataset.cut = "length";
      }
    });
    if (reply.trim()) {
      const answer = { role: "assistant", content: reply };
      conversation.push(answer);
      shown.set(answer, div);
    }
    else body.textContent = "(empty reply)";
    div.dataset.done = "1";
  } catch (err) {
    conversation.pop();  // the message was not answered: it is not part of the conversation
    div.remove();
    const p = $("status");
    p.textContent = "error: " + err.message;
    p.className = "error";
  } finally {
    div.classList.remove("streaming");
    busy = false;
    $("send").disabled = false;
    $("input").focus();
  }
}

async function loadModels() {
  try {
    const data = await requestJSON("/v1/models");
    const select = $("model");
    select.innerHTML = "";
    for (const m of data.data) {
      const opt = document.createElement("option");
      opt.value = m.id;
      opt.textContent = m.context_length ? `${m.id} (${m.context_length}-token context)` : m.id;
      select.append(opt);
    }
    if (!data.data.length) $("status").textContent = "this server has no models to chat with";
  } catch (err) {
    $("status").textContent = "cannot list models: " + err.message + " (API key in Settings?)";
    $("settings").open = true;
  }
}

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value.trim();
  if (!text || busy) return;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});
$("reset").addEventListener("click", () => {
  conversation.length = 0;
  $("messages").innerHTML = "";
  $("status").textContent = "new conversation";
});
$("apikey").value = apiKey();
$("apikey").addEventListener("change", () => { setApiKey($("apikey").value.trim()); loadModels(); });
loadModels();
