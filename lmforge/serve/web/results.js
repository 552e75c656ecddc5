// The results view: ratings and win rates from /human/api/results.
"use strict";

const $ = (id) => document.getElementById(id);
const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%");
const num = (x, d = 0) => (x === null || x === undefined ? "–" : x.toFixed(d));
const ci = (c, f) => (c ? `${f(c[0])} – ${f(c[1])}` : "–");

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    td.textContent = c;
    tr.append(td);
  }
  return tr;
}

async function load() {
  try {
    const r = await requestJSON("/human/api/results");
    needKey(null);
    $("summary").textContent = `${r.votes} votes on ${r.comparisons} comparisons`;
    $("summary").dataset.votes = r.votes;
    const models = $("models").querySelector("tbody");
    models.innerHTML = "";
    for (const m of r.models) {
      models.append(row([m.name, num(m.rating), ci(m.rating_ci, num), pct(m.win_rate), ci(m.win_rate_ci, pct),
                         m.games, m.wins, m.losses, m.ties, m.both_bad, num(m.mean_score, 2),
                         ci(m.score_ci, (x) => num(x, 2))]));
    }
    const pairs = $("pairs").querySelector("tbody");
    pairs.innerHTML = "";
    for (const p of r.pairs) {
      pairs.append(row([`${p.a} vs ${p.b}`, p.games, p.a_wins, p.b_wins, p.ties, p.both_bad,
                        pct(p.a_win_rate), ci(p.a_win_rate_ci, pct)]));
    }
    $("method").textContent = r.method;
  } catch (err) {
    $("summary").textContent = "error: " + err.message;
    if (err.status === 401) needKey(err, () => { $("apikey").value = apiKey(); load(); });
  }
}

$("refresh").addEventListener("click", load);
$("apikey").value = apiKey();
$("apikey").addEventListener("change", () => { setApiKey($("apikey").value.trim()); load(); });
load();
