// The human-evaluation page: fetch a comparison, show its two answers as A and B (the server drew
// their order and keeps which model is which), send the vote, show the tally, fetch the next one.
"use strict";

const $ = (id) => document.getElementById(id);
let task = null;

function rater() {
  let name = localStorage.getItem("lmforge.rater");
  if (!name) {  // a stable anonymous id, so a rater is not shown the same comparison twice
    name = "anon-" + Math.random().toString(36).slice(2, 10);
    localStorage.setItem("lmforge.rater", name);
  }
  return name;
}

function showTally(t) {  // null: not known (no answer from the server yet)
  $("tally").textContent = t ? t.votes : "–";
  $("yours").textContent = t ? t.yours : "–";
  $("comparisons").textContent = t ? t.comparisons : "–";
}

function setBusy(on) {
  for (const b of document.querySelectorAll(".votes button")) b.disabled = on;
}

async function next() {
  setBusy(true);
  try {
    const data = await requestJSON("/human/api/next?rater=" + encodeURIComponent(rater()));
    needKey(null);
    if ($("status").className === "error") {  // a new comparison loaded: an old error is over
      $("status").textContent = "";
      $("status").className = "muted";
    }
    showTally(data.tally);
    if (data.done) {
      task = null;
      $("task").hidden = true;
      $("done").hidden = false;
      return;
    }
    task = data.task;
    $("prompt").textContent = data.prompt;
    $("system-box").hidden = !data.system;
    $("system").textContent = data.system || "";
    $("reference-box").hidden = !data.reference;
    $("reference").textContent = data.reference || "";
    $("answer-a").textContent = data.a;
    $("answer-b").textContent = data.b;
    $("score-a").value = "";
    $("score-b").value = "";
    $("task").hidden = false;
    $("done").hidden = true;
    $("task").dataset.task = task;
  } catch (err) {
    task = null;
    $("task").hidden = true;
    showTally(null);
    if (err.status === 401) {
      needKey(err, () => { $("apikey").value = apiKey(); next(); });
    } else {
      $("status").textContent = "error: " + err.message;
      $("status").className = "error";
    }
  } finally {
    setBusy(false);
  }
}

async function vote(choice) {
  if (!task) return;
  setBusy(true);
  const score = (id) => ($(id).value ? Number($(id).value) : null);
  try {
    await requestJSON("/human/api/vote", { task, choice, score_a: score("score-a"), score_b: score("score-b") });
    $("status").textContent = "vote saved";
    $("status").className = "muted";
  } catch (err) {
    $("status").textContent = "error: " + err.message;
    $("status").className = "error";
  }
  await next();
}

for (const b of document.querySelectorAll(".votes button")) {
  b.addEventListener("click", () => vote(b.dataset.choice));
}
$("rater").value = localStorage.getItem("lmforge.rater") || "";
$("rater").addEventListener("change", () => {
  const v = $("rater").value.trim();
  if (v) localStorage.setItem("lmforge.rater", v); else localStorage.removeItem("lmforge.rater");
  next();
});
$("apikey").value = apiKey();
$("apikey").addEventListener("change", () => { setApiKey($("apikey").value.trim()); next(); });
next();
