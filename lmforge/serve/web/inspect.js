// The inspect page: POST /inspect/api once per text, then draw the chosen layer/head's attention
// map; hovering a query token highlights its row and shades the keys by its attention weights.
"use strict";

const $ = (id) => document.getElementById(id);
let result = null;  // the last /inspect/api answer
let active = -1;  // the hovered query row

function visible(label) { return label.replace(/ /g, "\u00b7"); }
function blue(p) { return `rgba(47, 91, 211, ${Math.min(1, p).toFixed(3)})`; }
function heat(bits) {  // pale yellow (0 bits) to dark red (16 bits and more)
  const t = Math.min(bits / 16, 1);
  return `rgb(${255 - 90 * t}, ${240 - 230 * t}, ${170 - 140 * t})`;
}

function currentMap() {
  if (!result) return null;
  return result.maps[Number($("layer").value) || 0];
}

function fillSelect(select, options) {
  const keep = select.value;
  select.replaceChildren(...options.map(([value, text]) => {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = text;
    return o;
  }));
  if (options.some(([value]) => String(value) === keep)) select.value = keep;
}

function tokenRow(box, labels, onHover) {
  box.replaceChildren(...labels.map((label, i) => {
    const s = document.createElement("span");
    s.textContent = visible(label);
    s.dataset.index = i;
    if (onHover) s.addEventListener("mouseenter", () => onHover(i));
    return s;
  }));
}

function drawMap() {
  const m = currentMap();
  if (!m) return;
  const head = Number($("head").value) || 0;
  const probs = m.probs[head];
  $("maptitle").textContent = `${m.name} (${m.stack}), head ${head}`;
  tokenRow($("queries"), m.queries, highlight);
  tokenRow($("keys"), m.keys, null);
  const grid = $("grid");
  grid.style.gridTemplateColumns = `auto repeat(${m.keys.length}, 18px)`;
  const cells = [document.createElement("div")];
  cells[0].className = "row-label";
  for (const k of m.keys) {
    const d = document.createElement("div");
    d.className = "col-label";
    d.textContent = visible(k);
    cells.push(d);
  }
  probs.forEach((row, i) => {
    const label = document.createElement("div");
    label.className = "row-label";
    label.textContent = visible(m.queries[i]);
    label.dataset.row = i;
    label.addEventListener("mouseenter", () => highlight(i));
    cells.push(label);
    row.forEach((p, j) => {
      const d = document.createElement("div");
      d.className = "cell";
      d.dataset.row = i;
      d.title = `${m.queries[i]} \u2192 ${m.keys[j]}: ${p.toFixed(3)}`;
      d.style.background = blue(p);
      d.addEventListener("mouseenter", () => highlight(i));
      cells.push(d);
    });
  });
  grid.replaceChildren(...cells);
  highlight(active >= 0 && active < m.queries.length ? active : m.queries.length - 1);
}

function highlight(i) {
  const m = currentMap();
  if (!m) return;
  active = i;
  const probs = m.probs[Number($("head").value) || 0][i];
  $("grid").dataset.row = i;
  for (const d of $("grid").querySelectorAll("div.cell, div.row-label")) {
    d.classList.toggle("active", d.dataset.row === String(i));
  }
  for (const s of $("queries").children) s.classList.toggle("active", s.dataset.index === String(i));
  for (const s of $("keys").children) s.style.background = blue(probs[Number(s.dataset.index)]);
}

function drawSurprise() {
  const s = result.surprise;
  $("meanbits").textContent = `(mean ${s.mean_bits.toFixed(2)} bits per token)`;
  tokenRow($("surprise"), s.tokens.map((t) => t.token), null);
  s.tokens.forEach((t, i) => {
    const span = $("surprise").children[i];
    span.style.background = heat(t.bits);
    span.title = `${t.bits.toFixed(2)} bits; expected: ` + t.top.map((x) => `${JSON.stringify(x.token)} ${x.prob.toFixed(3)}`).join(", ");
  });
}

async function inspect() {
  $("go").disabled = true;
  $("status").className = "muted";
  $("status").textContent = "reading...";
  try {
    result = await requestJSON("/inspect/api", { model: $("model").value || null, text: $("text").value });
    fillSelect($("layer"), result.maps.map((m, i) => [i, `${m.layer} ${m.stack}`]));
    fillSelect($("head"), result.maps[0].probs.map((_, h) => [h, String(h)]));
    active = -1;
    drawMap();
    drawSurprise();
    $("status").textContent = `${result.tokens.length} tokens, ${result.maps.length} attention maps`;
    document.body.dataset.ready = "1";
  } catch (err) {
    $("status").className = "error";
    $("status").textContent = "error: " + err.message;
  } finally {
    $("go").disabled = false;
  }
}

async function loadModels() {
  try {
    const data = await requestJSON("/v1/models");
    fillSelect($("model"), data.data.map((m) => [m.id, m.id]));
    if (data.data.length) inspect();
  } catch (err) {
    $("status").className = "error";
    $("status").textContent = "cannot list models: " + err.message + " (API key?)";
  }
}

$("go").addEventListener("click", inspect);
$("layer").addEventListener("change", drawMap);
$("head").addEventListener("change", drawMap);
$("apikey").value = apiKey();
$("apikey").addEventListener("change", () => { setApiKey($("apikey").value.trim()); loadModels(); });
loadModels();
