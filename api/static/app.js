// The mwpeer dashboard. Everything a peer or a model says is put on the page
// as text (textContent, setAttribute): nothing from the network becomes HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const short = (id) => id && id.length > 14 ? id.slice(0, 6) + "…" + id.slice(-6) : (id || "");
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
// setText changes an element's text only when it differs, so that a
// refresh keeps the user's selection.
function setText(e, s) { if (e.textContent !== s) e.textContent = s; }
function setAttr(e, k, v) { if (e.getAttribute(k) !== v) e.setAttribute(k, v); }
const NS = "http://www.w3.org/2000/svg";
function svgEl(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
const ago = (ms) => ms < 0 ? "now" : ms < 120000 ? `${Math.round(ms / 1000)} s` : ms < 7200000 ? `${Math.round(ms / 60000)} min` : `${Math.round(ms / 3600000)} h`;

// ---- Polling: one request in flight per endpoint, each with a timeout ----

const requestTimeout = 5000;

// getJSON fetches path with a deadline; it throws an Error whose message a
// person can read.
async function getJSON(path, timeout = requestTimeout) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeout);
  try {
    const r = await fetch(path, { signal: ctl.signal, cache: "no-store" });
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      const e = new Error((body.error && body.error.message) || `${path}: HTTP ${r.status}`);
      e.status = r.status;
      throw e;
    }
    return await r.json();
  } catch (e) {
    if (e.name === "AbortError") throw new Error(`no answer from ${path} within ${timeout / 1000} s`);
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

// poll runs task now and then every ms after the previous run ended, so a
// slow or frozen peer never has more than one request of ours per task.
function poll(task, ms) {
  const run = async () => {
    try { await task(); } catch (e) { /* each task reports its own errors */ }
    setTimeout(run, ms);
  };
  run();
}

// ---- Stale data ----

let lastOK = 0; // when /api/status last answered
let staleSince = 0;
function markFresh() {
  lastOK = Date.now(); staleSince = 0;
  document.body.classList.remove("is-stale");
  $("stale").hidden = true;
}
function markStale(why) {
  if (!staleSince) staleSince = Date.now();
  document.body.classList.add("is-stale");
  const s = $("stale");
  s.hidden = false;
  setText(s, lastOK
    ? `Stale: this peer has not answered for ${ago(Date.now() - lastOK)} (${why}). The data below is from ${new Date(lastOK).toLocaleTimeString()}.`
    : `This peer does not answer (${why}).`);
}

// ---- State shared by the views ----

const state = { status: null, peers: null, models: null, experts: null, rtt: null, detail: new Map() };

// ---- This peer ----

async function refreshStatus() {
  let st;
  try {
    st = await getJSON("/api/status");
  } catch (e) {
    markStale(e.message);
    return;
  }
  markFresh();
  state.status = st;
  if (st.generated) {
    engineLog.push({ at: Date.now(), requests: st.generated.requests, tokens: st.generated.tokens });
    while (engineLog.length && Date.now() - engineLog[0].at > 11 * 60 * 1000) engineLog.shift();
    drawTPS();
  }
  setText($("peer-id"), st.id);
  setText($("summary"), `${st.catalog_size} peers known · ${st.connected_peers} connected · ${st.reachability}`);
  const conns = st.connections || [];
  const transports = [...new Set(conns.map((c) => c.transport + (c.relayed ? " (relayed)" : "")))];
  const rows = [
    ["version", st.version || "unknown"], ["engine", st.engine || "none"],
    ["models", (st.models || []).join(", ") || "none"], ["domains", (st.domains || []).join(", ") || "none"],
    ["region", st.region || "not set"],
    ["location", st.location ? `${st.location.lat.toFixed(2)}, ${st.location.lon.toFixed(2)}` : "not set"],
    ["uptime", ago(st.uptime_s * 1000)], ["reachability", st.reachability],
    ["connections", `${conns.length}${transports.length ? " · " + transports.join(", ") : ""}`],
    ["relay reservations", (st.relay_reservations || []).map(short).join(", ") || "none"],
    ["hole punching", st.hole_punching ? "ready" : "not ready"],
    ["DHT", `${st.dht_mode}, ${st.dht_routing_table} in table`],
    ["announce", `every ${st.announce.interval_s} s, TTL ${st.announce.ttl_s} s, ${st.announce.accepted} accepted`],
    ["rejected", Object.entries(st.rejected_announcements || {}).filter(([, n]) => n > 0).map(([k, n]) => `${k}=${n}`).join(" ") || "none"],
    ["listening", (st.listen_addrs || []).join(" ")],
    ["bootstrap", st.bootstrap],
  ];
  const kv = $("status");
  if (kv.children.length !== rows.length * 2) {
    kv.replaceChildren();
    for (const [k] of rows) kv.append(el("div", k), el("div", "", k === "bootstrap" || k === "listening" ? "mono" : ""));
  }
  rows.forEach(([, v], i) => setText(kv.children[2 * i + 1], String(v ?? "")));
  drawMap();
}

// ---- Peers: the health table, updated in place ----

const peerRows = new Map(); // id -> {tr, cells}

function connOf(p) {
  const conns = (state.status && state.status.connections) || [];
  const c = conns.filter((c) => c.peer === p.id);
  const kinds = [...new Set(c.map((x) => x.transport + (x.relayed ? ", relayed" : "")))];
  return p.conn + (kinds.length ? ` · ${kinds.join(" / ")}` : "");
}

function health(p) {
  const st = state.status;
  const interval = st ? st.announce.interval_s * 1000 : 10000, ttl = st ? st.announce.ttl_s * 1000 : 60000;
  const age = Date.now() - Date.parse(p.last_seen);
  if (age > ttl) return ["gone", "past its TTL: it stopped announcing"];
  if (age > 2 * interval) return ["late", "late: missed a heartbeat"];
  return ["ok", "announcing"];
}

function copyButton(text, label) {
  const b = el("button", "copy", "small secondary");
  b.type = "button";
  b.setAttribute("aria-label", label);
  b.dataset.copy = text;
  return b;
}

document.addEventListener("click", async (ev) => {
  const b = ev.target.closest("button[data-copy]");
  if (!b) return;
  try { await navigator.clipboard.writeText(b.dataset.copy); b.textContent = "copied"; }
  catch (e) { window.prompt("Copy the ID:", b.dataset.copy); }
  setTimeout(() => { b.textContent = "copy"; }, 1500);
});

function peerRow(p) {
  let r = peerRows.get(p.id);
  if (!r) {
    const tr = el("tr");
    const idCell = el("td");
    const dot = el("span", null, "dot");
    const idText = el("span", short(p.id), "mono peer-id");
    idText.title = p.id;
    idCell.append(dot, idText, " ", copyButton(p.id, "Copy peer ID " + p.id));
    const cells = { dot, models: el("td"), region: el("td"), rtt: el("td", "", "num"), conn: el("td"), seen: el("td", "", "num"), load: el("td", "", "num hide-narrow"), version: el("td", "", "mono hide-narrow"), trust: el("td", "", "hide-narrow") };
    const regionText = el("span", "", "clip region");
    cells.region.append(regionText); cells.regionText = regionText;
    tr.append(idCell, cells.models, cells.region, cells.rtt, cells.conn, cells.seen, cells.load, cells.version, cells.trust);
    r = { tr, cells };
    peerRows.set(p.id, r);
  }
  const c = r.cells;
  const [kind, why] = health(p);
  setAttr(c.dot, "class", "dot " + kind);
  setAttr(c.dot, "title", why);
  setAttr(c.dot, "aria-label", why);
  setAttr(c.dot, "role", "img");
  setText(c.models, (p.models || []).map((m) => m.name + (m.engine ? ` (${m.engine})` : "")).join(", ") || "–");
  setText(c.regionText, p.region || "–");
  setAttr(c.regionText, "title", p.region || "");
  setText(c.rtt, p.rtt_ms == null ? "?" : `${p.rtt_ms.toFixed(1)} ms`);
  setAttr(c.rtt, "title", `source: ${p.rtt_source}${p.rtt_source === "measured" && kind !== "ok" ? " (last measurement; the peer is " + why + ")" : ""}`);
  setText(c.conn, connOf(p));
  setText(c.seen, ago(Date.now() - Date.parse(p.last_seen)) + " ago");
  setAttr(c.seen, "title", new Date(p.last_seen).toLocaleString());
  setText(c.load, `${p.load}/${p.capacity}`);
  setText(c.version, p.version || "–");
  setAttr(c.version, "title", p.version ? "the version this peer announces (reported)" : "this peer announces no version");
  const t = p.trust;
  setText(c.trust, t ? t.value.toFixed(2) + (t.excluded ? " excluded" : "") : "–");
  setAttr(c.trust, "title", t && t.reasons ? t.reasons.join("; ") : "");
  return r.tr;
}

async function refreshPeers() {
  let ps;
  try { ps = await getJSON("/api/peers?limit=200"); } catch (e) { return; }
  state.peers = ps;
  const tb = $("peers");
  const want = ps.peers.map(peerRow);
  const ids = new Set(ps.peers.map((p) => p.id));
  for (const [id, r] of peerRows) if (!ids.has(id)) { r.tr.remove(); peerRows.delete(id); }
  want.forEach((tr, i) => { if (tb.children[i] !== tr) tb.insertBefore(tr, tb.children[i] || null); });
  setText($("peers-note"), ps.total > ps.peers.length ? `first ${ps.peers.length} of ${ps.total} peers` : ps.total ? `${ps.total} peer${ps.total === 1 ? "" : "s"} in the catalog` : "no other peer known yet");
  drawMap();
  refreshModelsView();
}

// ---- Map ----

function drawMap() {
  const st = state.status, ps = state.peers;
  if (!st) return;
  const pts = [];
  if (st.location) pts.push({ id: st.id, loc: st.location, self: true, label: "this peer" + (st.region ? " · " + st.region : "") });
  for (const p of (ps ? ps.peers : [])) if (p.location) pts.push({ id: p.id, loc: p.location, self: false, label: short(p.id) + (p.region ? " · " + p.region : "") + ` · ${health(p)[1]}`, kind: health(p)[0] });
  const key = JSON.stringify(pts);
  const box = $("map");
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  const svg = svgEl("svg", { viewBox: "0 0 360 180", role: "img", "aria-label": `Map of ${pts.length} peers with a location` });
  svg.append(svgEl("title", {}, "Peers by latitude and longitude"));
  svg.append(svgEl("image", { href: "/static/land-110m.svg", x: 0, y: 0, width: 360, height: 180, preserveAspectRatio: "none" }));
  const color = { ok: "#1a7f37", late: "#b7791f", gone: "#b42318" };
  for (const p of pts) {
    const lat = Math.max(-90, Math.min(90, p.loc.lat)), lon = Math.max(-180, Math.min(180, p.loc.lon));
    const c = svgEl("circle", { cx: (lon + 180).toFixed(2), cy: (90 - lat).toFixed(2), r: p.self ? 3 : 2.2,
      fill: p.self ? "#2f6fec" : color[p.kind] || "#555", stroke: "#fff", "stroke-width": 0.6, class: p.self ? "map-peer map-self" : "map-peer" });
    c.append(svgEl("title", {}, p.label));
    svg.append(c);
  }
  box.replaceChildren(svg);
  const none = (ps ? ps.peers.length : 0) + 1 - pts.length;
  setText($("map-note"), `${pts.length} placed (blue: this peer)${none > 0 ? ` · ${none} without a location` : ""}. Locations are what each peer reports.`);
}

// ---- RTT heatmap ----

const rttColor = { measured: [221, 75], reported: [142, 60], coordinates: [32, 90], distance: [32, 90] };

async function refreshRTT() {
  let m;
  try { m = await getJSON("/api/rtt"); } catch (e) { return; }
  state.rtt = m;
  const ids = (m.peers || []).slice(0, 48);
  const key = JSON.stringify([ids, m.rtt]);
  const box = $("heatmap");
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  if (ids.length < 2) { box.replaceChildren(el("div", "No other peer yet.", "note")); return; }
  const n = ids.length, cell = 14, L = 70, T = 70, W = L + n * cell + 2, H = T + n * cell + 2;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, width: W, role: "img", "aria-label": `Round-trip times between ${n} peers` });
  const label = (id) => id === m.self ? "this peer" : short(id);
  ids.forEach((id, i) => {
    svg.append(svgEl("text", { x: L - 4, y: T + i * cell + cell - 3, "text-anchor": "end", "font-size": 9, fill: "#5b6376" }, label(id)));
    svg.append(svgEl("text", { x: 0, y: 0, "font-size": 9, fill: "#5b6376", transform: `translate(${L + i * cell + cell - 3},${T - 4}) rotate(-60)` }, label(id)));
  });
  ids.forEach((from, i) => ids.forEach((to, j) => {
    const e = (m.rtt[from] || {})[to];
    let fill = "#eef0f4", src = "unknown", text = "unknown";
    if (from === to) { fill = "#ffffff"; src = "self"; text = "same peer"; }
    else if (e && rttColor[e.source]) {
      const [h, s] = rttColor[e.source];
      const light = 88 - 58 * Math.min(1, Math.log10(1 + e.ms) / 3); // 1 ms light, 1 s dark
      fill = `hsl(${h} ${s}% ${light.toFixed(0)}%)`; src = e.source; text = `${e.ms.toFixed(1)} ms (${e.source})`;
    } else if (e) { fill = "#c4c9d4"; src = e.source; }
    const r = svgEl("rect", { x: L + j * cell, y: T + i * cell, width: cell - 1, height: cell - 1, fill, class: "rtt-cell", "data-source": src });
    r.append(svgEl("title", {}, `${label(from)} → ${label(to)}: ${text}`));
    svg.append(r);
  }));
  const wrap = el("div", null, "scroll"); wrap.append(svg);
  box.replaceChildren(wrap);
  if ((m.peers || []).length > ids.length) box.append(el("div", `first ${ids.length} of ${m.peers.length} peers`, "note"));
}

// ---- Models: picker and panel ----

let chosenGone = "";

function refreshModelsView() {
  const ms = state.models, ex = state.experts;
  if (!ms) return;
  const sharded = new Map((ex ? ex.models : []).map((m) => [m.name, m]));
  const servers = new Map();
  for (const p of (state.peers ? state.peers.peers : [])) for (const m of p.models || []) {
    if (!servers.has(m.name)) servers.set(m.name, []);
    servers.get(m.name).push(p.id);
  }
  const self = state.status;
  const md = $("models"); md.replaceChildren();
  for (const m of ms.data) {
    const info = m.mwpeer || {};
    const who = [...(servers.get(m.id) || [])];
    if (info.local && self) who.unshift(self.id);
    const sh = sharded.get(m.id);
    const d = el("div"); d.className = "model-entry";
    d.append(el("div", m.id, "mono"));
    d.append(el("div", `${info.peers} peer${info.peers === 1 ? "" : "s"} · engine ${(info.engines || []).join(", ") || "unknown"} · ${sh ? `sharded (${sh.layers}×${sh.experts} experts)` : "full model on each peer"} · ${info.context ? `context ${info.context} tokens` : "context length not announced"}`, "note"));
    const ids = el("div", who.slice(0, 8).map((id) => id === (self && self.id) ? "this peer" : short(id)).join(", ") + (who.length > 8 ? ` and ${who.length - 8} more` : ""), "note");
    ids.title = who.join("\n");
    d.append(ids);
    md.append(d);
  }
  if (!ms.data.length) md.append(el("div", "No model in the swarm yet.", "err"));
  if (ex && ex.unverified) md.append(el("div", `${ex.unverified} more sharded model(s) announced by peers, manifest not held here`, "note"));

  // The picker: the chosen model stays chosen even when it goes away.
  const sel = $("model"), keep = sel.value;
  const names = ms.data.map((m) => m.id);
  const wanted = ["auto", ...names];
  if (keep !== "auto" && !names.includes(keep)) wanted.push(keep);
  const current = [...sel.options].map((o) => o.value);
  if (JSON.stringify(current) !== JSON.stringify(wanted)) {
    sel.replaceChildren();
    for (const v of wanted) { const o = el("option", v === "auto" ? "auto (any model)" : v); o.value = v; sel.append(o); }
    sel.value = keep;
  }
  for (const o of sel.options) {
    if (o.value === "auto") continue;
    const m = ms.data.find((x) => x.id === o.value);
    setText(o, m ? `${m.id} — ${m.mwpeer.peers} peer${m.mwpeer.peers === 1 ? "" : "s"}${sharded.has(m.id) ? ", sharded" : ""}` : `${o.value} — gone, no peer serves it`);
  }
  checkChosen();
}

function checkChosen() {
  const sel = $("model"), v = sel.value, n = $("model-notice");
  const ms = state.models;
  if (!ms || v === "auto" || ms.data.some((m) => m.id === v)) {
    chosenGone = ""; n.hidden = true; return;
  }
  chosenGone = v;
  n.hidden = false;
  setText(n, `The model "${v}" has left the swarm: no peer serves it now. Pick another model or "auto"; this page will not switch for you.`);
}

async function refreshModels() {
  try { state.models = await getJSON("/v1/models"); } catch (e) { return; }
  refreshModelsView();
}

// ---- Expert placement ----

async function refreshExperts() {
  let ex;
  try { ex = await getJSON("/api/experts"); } catch (e) { return; }
  state.experts = ex;
  const box = $("expert-grids");
  const seen = new Set();
  for (const m of ex.models.slice(0, 8)) {
    seen.add(m.id);
    let d;
    try { d = (await getJSON("/api/experts?model=" + encodeURIComponent(m.id))).models[0]; } catch (e) { continue; }
    if (d) drawExpertGrid(box, d);
  }
  for (const c of [...box.children]) if (c.dataset.model && !seen.has(c.dataset.model)) c.remove();
  if (!ex.models.length) box.replaceChildren(el("div", "No sharded model known here.", "note"));
  else for (const c of [...box.children]) if (!c.dataset.model) c.remove();
  refreshModelsView();
}

function drawExpertGrid(box, m) {
  const key = JSON.stringify([m.replicas, m.warnings, m.runner_count, m.host_count]);
  let div = [...box.children].find((c) => c.dataset.model === m.id);
  if (div && div.dataset.key === key) return;
  if (!div) { div = el("div"); div.dataset.model = m.id; box.append(div); }
  div.dataset.key = key;
  div.replaceChildren();
  div.append(el("h3", `${m.name} · ${m.layers} layers × ${m.experts} experts · ${m.runner_count} runner(s), ${m.host_count} host(s), fewest replicas ${m.min_replicas}`));
  const rep = m.replicas || [];
  let max = 1;
  for (const row of rep) for (const n of row) max = Math.max(max, n);
  const cell = Math.max(6, Math.min(22, Math.floor(600 / Math.max(1, m.experts)))), L = 34, T = 14;
  const W = L + m.experts * cell + 2, H = T + m.layers * cell + 2;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, width: W, role: "img", "aria-label": `Expert placement of ${m.name}: ${m.missing} of ${m.layers * m.experts} experts without a live host` });
  svg.append(svgEl("text", { x: L, y: 10, "font-size": 9, fill: "#5b6376" }, "experts →"));
  rep.forEach((row, l) => {
    svg.append(svgEl("text", { x: L - 4, y: T + l * cell + cell - 2, "text-anchor": "end", "font-size": 9, fill: "#5b6376" }, "L" + l));
    row.forEach((n, e) => {
      const fill = n === 0 ? "#dc2626" : `hsl(221 75% ${(85 - 50 * n / max).toFixed(0)}%)`;
      const r = svgEl("rect", { x: L + e * cell, y: T + l * cell, width: cell - 1, height: cell - 1, fill, class: n === 0 ? "expert-cell missing" : "expert-cell" });
      r.append(svgEl("title", {}, `layer ${l}, expert ${e}: ${n} replica${n === 1 ? "" : "s"}`));
      svg.append(r);
      if (cell >= 14) svg.append(svgEl("text", { x: L + e * cell + (cell - 1) / 2, y: T + l * cell + cell - 4, "text-anchor": "middle", "font-size": 8, fill: n === 0 || n / max > 0.5 ? "#fff" : "#1d2330", "pointer-events": "none" }, String(n)));
    });
  });
  const wrap = el("div", null, "scroll"); wrap.append(svg); div.append(wrap);
  if (m.local) div.append(el("div", `here: ${m.local.dense ? "dense shard, " : ""}${m.local.experts} experts${m.local.fetch ? " · " + m.local.fetch : ""} · calls served ${m.local.served}, remote ${m.local.remote_calls}, failovers ${m.local.failovers}`, "note"));
  for (const w of m.warnings || []) div.append(el("div", w, "err"));
}

// ---- Markdown: a small renderer that builds DOM nodes from text ----
// It knows fenced code, headings, lists, quotes, paragraphs, inline code,
// bold, italics and http(s) links. It never parses HTML: a "<b>" in an
// answer is shown as the four characters it is.

function renderInline(text, parent) {
  const re = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([^*\n]+)\*\*|__([^_\n]+)__|\*([^*\n]+)\*|\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/g;
  let last = 0, m;
  while ((m = re.exec(text))) {
    if (m.index > last) parent.append(text.slice(last, m.index));
    if (m[1]) parent.append(el("code", m[2].trim() === "" ? m[2] : m[2].replace(/^ (.*) $/, "$1")));
    else if (m[3] || m[4]) { const b = el("strong"); renderInline(m[3] || m[4], b); parent.append(b); }
    else if (m[5]) { const i = el("em"); renderInline(m[5], i); parent.append(i); }
    else if (m[6]) {
      const a = el("a", m[6]);
      a.href = m[7]; a.rel = "noopener noreferrer nofollow"; a.target = "_blank";
      parent.append(a);
    }
    last = re.lastIndex;
  }
  if (last < text.length) parent.append(text.slice(last));
}

function renderMarkdown(src) {
  const root = document.createDocumentFragment();
  const lines = String(src).replace(/\r\n?/g, "\n").split("\n");
  let i = 0, para = [];
  const flush = () => {
    if (!para.length) return;
    const p = el("p");
    para.forEach((l, k) => { if (k) p.append(el("br")); renderInline(l, p); });
    root.append(p); para = [];
  };
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*(```+|~~~+)\s*([\w+.#-]*)/);
    if (fence) {
      flush();
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i++; // the closing fence, or the end of an answer still streaming
      const pre = el("pre"), code = el("code", body.join("\n"));
      if (fence[2]) { code.dataset.lang = fence[2]; pre.setAttribute("aria-label", fence[2] + " code"); }
      pre.append(code); root.append(pre);
      continue;
    }
    const h = line.match(/^(#{1,6})\s+(.*)$/);
    if (h) { flush(); const e = el("h" + Math.min(6, h[1].length + 2)); renderInline(h[2], e); root.append(e); i++; continue; }
    if (/^\s*([-*+]|\d+[.)])\s+/.test(line)) {
      flush();
      const ordered = /^\s*\d/.test(line);
      const list = el(ordered ? "ol" : "ul");
      while (i < lines.length && /^\s*([-*+]|\d+[.)])\s+/.test(lines[i]) && /^\s*\d/.test(lines[i]) === ordered) {
        const li = el("li"); renderInline(lines[i].replace(/^\s*([-*+]|\d+[.)])\s+/, ""), li); list.append(li); i++;
      }
      root.append(list);
      continue;
    }
    if (/^>\s?/.test(line)) {
      flush();
      const q = [];
      while (i < lines.length && /^>\s?/.test(lines[i])) q.push(lines[i++].replace(/^>\s?/, ""));
      const bq = el("blockquote"); bq.append(renderMarkdown(q.join("\n"))); root.append(bq);
      continue;
    }
    if (line.trim() === "") { flush(); i++; continue; }
    para.push(line); i++;
  }
  flush();
  return root;
}
window.mwpeerMarkdown = renderMarkdown; // for the browser tests

// ---- Human errors ----

function peerName(id) { return state.status && id === state.status.id ? "this peer" : "peer " + short(id); }

// humanError turns an API error into what happened and what to do.
function humanError(status, code, message, model, promptChars) {
  const msg = String(message || "");
  const dial = msg.match(/failed to dial ([1-9A-HJ-NP-Za-km-z]{20,})/);
  const reason = /connection refused/.test(msg) ? "it refused the connection" : /timeout|deadline/i.test(msg) ? "it did not answer in time" : /no route|unreachable/i.test(msg) ? "no route to it" : "the connection failed";
  const gone = model !== "auto" && state.models && !state.models.data.some((m) => m.id === model);
  const pick = `No peer serves the model "${model}" any more. Pick another model or "auto" and send again.`;
  if (dial) return `Could not reach ${peerName(dial[1])}: ${reason}. It has probably left the swarm; ` + (gone ? pick : "try again and routing will pick another peer.");
  if ((code === "model_not_found" || status === 404) && model === "auto") return `No peer in the swarm serves any model yet. ${msg.replace(/^.*serves any model: /, "To fix it: ")}.`;
  if (code === "model_not_found" || status === 404) return pick;
  if (code === "unsupported") return `"${model}" cannot do this: ${msg}`;
  if (code === "context_length_exceeded") return `The conversation is too long for "${model}": ${msg.replace(/^this prompt/, "it")}.`;
  if (/context|too long|exceeds|too many tokens/i.test(msg)) return `The conversation is too long for the model (${promptChars} characters). Shorten the prompt or start a new conversation.`;
  if (code === "no_expert_available" || code === "busy" || code === "experts_failed" || status === 503 || status === 502) {
    const long = promptChars > 6000 ? ` The conversation is ${promptChars} characters long, which may be more than the models here accept: shorten it or start a new conversation.` : " Wait a moment and send again, or pick another model.";
    return `No peer could take this prompt right now (${/busy/i.test(msg) ? "every expert is busy" : "no expert available"}).${long}`;
  }
  if (code === "timeout" || status === 504) return "No answer arrived in time. The peers may be overloaded; try again or ask for a shorter answer.";
  if (status === 401 || status === 403) return `This peer refused the request (${msg}).`;
  if (status === 400 || status === 413) return `The request was refused: ${msg}`;
  if (status === 0) return `This page's peer did not answer (${msg}). It may have stopped; the answer was not sent.`;
  return `Something went wrong (${status || "stream"}): ${msg}`;
}

// ---- Chat ----

const storeKey = "mwpeer.chat.v1";
let history = []; // {role, content, meta, error}
try { history = JSON.parse(localStorage.getItem(storeKey) || "[]"); if (!Array.isArray(history)) history = []; } catch (e) { history = []; }
function save() { try { localStorage.setItem(storeKey, JSON.stringify(history.slice(-200))); } catch (e) { /* full or disabled */ } }

let streaming = null; // {ctl, turn}
const answersLog = []; // {at, tps} for the chart: this page's answers
const engineLog = []; // {at, requests, tokens}: this peer's engine, from /api/status

function metaText(m) {
  if (!m) return "";
  const parts = [];
  if (m.model) parts.push(m.model);
  if (m.experts && m.experts.length) parts.push("answered by " + m.experts.map(peerName).join(", "));
  if (m.failovers) parts.push(`after ${m.failovers} failover${m.failovers === 1 ? "" : "s"} (a peer went away or failed; another answered)`);
  if (m.ttft_ms != null) parts.push(`first token ${Math.round(m.ttft_ms)} ms`);
  if (m.tps != null) parts.push(`${m.tps.toFixed(1)} tokens/s`);
  else if (m.tpsTooFast) parts.push("tokens/s: arrived at once, too fast to measure");
  if (m.tokens != null) parts.push(`${m.tokens} tokens`);
  if (m.agreement != null) parts.push(`agreement ${(m.agreement * 100).toFixed(0)}%`);
  if (m.strategy) parts.push(m.strategy);
  if (m.stopped) parts.push("stopped by you");
  return parts.join(" · ");
}

function turnNode(t) {
  const d = el("div", null, "msg " + t.role);
  if (t.role === "user") { d.textContent = t.content; d.setAttribute("aria-label", "You said"); return d; }
  const body = el("div", null, "body");
  body.append(renderMarkdown(t.content));
  d.append(body);
  const err = el("div", t.error || "", "err errmsg"); if (!t.error) err.hidden = true;
  const meta = el("div", metaText(t.meta), "meta");
  d.append(err, meta);
  return d;
}

function renderHistory() {
  const c = $("conversation");
  c.replaceChildren(...history.map(turnNode));
  c.scrollTop = c.scrollHeight;
}

function setStreaming(on) {
  $("send").disabled = on;
  $("stop").disabled = !on;
  $("conversation").setAttribute("aria-busy", on ? "true" : "false");
}

async function send() {
  if (streaming) return;
  const prompt = $("prompt").value.trim();
  if (!prompt) return;
  const model = $("model").value, strategy = $("strategy").value;
  const messages = history.filter((t) => !t.error && t.content).map((t) => ({ role: t.role, content: t.content }));
  messages.push({ role: "user", content: prompt });
  const promptChars = messages.reduce((n, m) => n + m.content.length, 0);
  const user = { role: "user", content: prompt };
  const ans = { role: "assistant", content: "", meta: { model: model === "auto" ? "" : model, strategy } };
  history.push(user, ans);
  const conv = $("conversation");
  conv.append(turnNode(user));
  const node = turnNode(ans); conv.append(node);
  const body = node.querySelector(".body"), meta = node.querySelector(".meta"), errBox = node.querySelector(".errmsg");
  const waiting = el("span", "waiting for the first token", "waiting"); body.append(waiting);
  const started = performance.now();
  const tick = setInterval(() => { if (waiting.isConnected) waiting.textContent = `waiting for the first token (${Math.round((performance.now() - started) / 1000)} s, ${strategy})`; }, 1000);
  conv.scrollTop = conv.scrollHeight;
  $("prompt").value = "";
  const ctl = new AbortController();
  streaming = { ctl };
  setStreaming(true);
  const fail = (text, raw) => { ans.error = text; errBox.textContent = text; errBox.title = raw || ""; errBox.hidden = false; };
  let first = 0, chunks = 0, pending = false;
  const paint = () => { pending = false; body.replaceChildren(renderMarkdown(ans.content)); conv.scrollTop = conv.scrollHeight; };
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" }, signal: ctl.signal,
      body: JSON.stringify({ model, stream: true, stream_options: { include_usage: true }, messages, mwpeer: { strategy } }),
    });
    if (!r.ok) {
      const e = await r.json().catch(() => ({}));
      const er = e.error || {};
      fail(humanError(r.status, er.code, er.message || r.statusText, model, promptChars), er.message);
    } else {
      const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = "";
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const line = buf.slice(0, i); buf = buf.slice(i + 2);
          if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
          let ev;
          try { ev = JSON.parse(line.slice(6)); } catch (e) { continue; }
          if (ev.error) { fail("The answer was cut off: " + humanError(0, ev.error.code, ev.error.message, model, promptChars).replace(/^This page's peer did not answer.*$/, ev.error.message), ev.error.message); continue; }
          if (ev.model && !ans.meta.model) ans.meta.model = ev.model;
          for (const c of ev.choices || []) if (c.delta && c.delta.content) {
            if (!first) first = performance.now();
            chunks++;
            ans.content += c.delta.content;
            if (!pending) { pending = true; requestAnimationFrame(paint); }
          }
          if (ev.mwpeer) Object.assign(ans.meta, { experts: ev.mwpeer.experts, failovers: ev.mwpeer.failovers, ttft_ms: ev.mwpeer.ttft_ms, agreement: ev.mwpeer.agreement });
          if (ev.usage) ans.meta.tokens = ev.usage.completion_tokens;
        }
      }
    }
  } catch (e) {
    if (e.name === "AbortError") ans.meta.stopped = true;
    else fail(humanError(0, "", e.message, model, promptChars), e.message);
  } finally {
    clearInterval(tick);
    const end = performance.now();
    const tokens = ans.meta.tokens != null ? ans.meta.tokens : chunks;
    // Tokens after the first over the time they took to arrive; a stream
    // that came in one piece is too quick to measure.
    if (first && end - first >= 100 && tokens > 1) ans.meta.tps = (tokens - 1) / ((end - first) / 1000);
    else if (first && tokens > 1) ans.meta.tpsTooFast = true;
    if (ans.meta.ttft_ms == null && first) ans.meta.ttft_ms = first - started;
    paint();
    if (!ans.content && !ans.error && ans.meta.stopped) body.replaceChildren(el("em", "stopped before the first token"));
    meta.textContent = metaText(ans.meta);
    answersLog.push({ at: Date.now(), tps: ans.meta.tps });
    streaming = null;
    setStreaming(false);
    save();
    drawTPS();
    $("prompt").focus();
  }
  explainRoute(messages, model);
}

// ---- Why this expert ----

async function explainRoute(messages, model) {
  const box = $("why");
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), requestTimeout);
  let d;
  try {
    const r = await fetch("/api/route", { method: "POST", headers: { "Content-Type": "application/json" }, signal: ctl.signal,
      body: JSON.stringify({ model: model === "auto" ? "*" : model, messages }) });
    if (!r.ok) { const e = await r.json().catch(() => ({})); throw new Error((e.error && e.error.message) || "HTTP " + r.status); }
    d = await r.json();
  } catch (e) {
    box.replaceChildren(el("div", "Routing could not explain this prompt: " + (e.name === "AbortError" ? "no answer in time" : e.message), "note"));
    return;
  } finally { clearTimeout(timer); }
  const chosen = new Set((d.chosen || []).map((c) => c.peer + "/" + c.model));
  const frag = document.createDocumentFragment();
  frag.append(el("div", `Domains: ${(d.domains || []).map((x) => `${x.domain || x.name || "?"} ${(x.score ?? 0).toFixed ? (x.score ?? 0).toFixed(2) : x.score}`).join(", ") || "none"} · k = ${d.k}`, "note"));
  const parts = ["relevance", "speed", "capacity", "load", "distance", "failures"];
  const wrap = el("div", null, "scroll");
  const t = el("table"); const hr = el("tr");
  for (const h of ["Candidate", "Score", ...parts]) { const th = el("th", h); th.scope = "col"; hr.append(th); }
  const thead = el("thead"); thead.append(hr); t.append(thead);
  const tb = el("tbody");
  for (const c of (d.candidates || []).slice(0, 8)) {
    const tr = el("tr");
    const who = el("td", `${chosen.has(c.peer + "/" + c.model) ? "✔ " : ""}${c.local ? "this peer" : short(c.peer)} · ${c.model}`, "mono"); who.title = c.peer;
    tr.append(who, el("td", c.score.toFixed(3), "num"));
    for (const p of parts) {
      const v = (c.parts || {})[p] ?? 0;
      const td = el("td"); td.title = `${p}: ${v.toFixed(3)}`;
      const bar = el("div", null, "bar"); bar.style.width = Math.max(1, Math.round(Math.abs(v) * 100)) + "%";
      td.append(bar, el("span", v.toFixed(2), "sr-only"));
      tr.append(td);
    }
    tb.append(tr);
  }
  t.append(tb); wrap.append(t); frag.append(wrap);
  frag.append(el("div", "✔ chosen. Routing was asked again for the same conversation right after the answer; the parts are its score inputs (0 to 1, higher is better).", "note"));
  box.replaceChildren(frag);
}

// ---- Tokens/s chart ----

function drawTPS() {
  const now = Date.now(), span = 10 * 60 * 1000;
  const s = answersLog.filter((a) => now - a.at < span);
  const W = 600, H = 120, L = 40, R = 8, T = 8, B = 18;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${s.length} answers in the last 10 minutes` });
  const x = (at) => L + (W - L - R) * (1 - (now - at) / span);
  const measured = s.filter((a) => a.tps != null);
  // This peer's engine: tokens/s between status samples, requests per
  // minute from its counter (for its own user and for others).
  const rates = [];
  const perMin = new Array(10).fill(0);
  for (let i = 1; i < engineLog.length; i++) {
    const a = engineLog[i - 1], b = engineLog[i], dt = (b.at - a.at) / 1000;
    if (now - b.at >= span || dt <= 0 || b.tokens < a.tokens) continue; // a restarted peer starts again from 0
    rates.push({ at: b.at, tps: (b.tokens - a.tokens) / dt });
    perMin[Math.min(9, Math.floor((now - b.at) / 60000))] += b.requests - a.requests;
  }
  if (!engineLog.length) for (const a of s) perMin[Math.min(9, Math.floor((now - a.at) / 60000))]++;
  const maxTPS = Math.max(1, ...measured.map((a) => a.tps), ...rates.map((r) => r.tps));
  const maxReq = Math.max(1, ...perMin);
  svg.append(svgEl("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#e3e6ec" }));
  perMin.forEach((n, k) => {
    if (!n) return;
    const h = (H - T - B) * n / maxReq;
    svg.append(svgEl("rect", { x: x(now - (k + 1) * 60000) + 1, y: H - B - h, width: (W - L - R) / 10 - 2, height: h, fill: "#16a34a", opacity: 0.35, class: "req-bar" }));
  });
  if (rates.length > 1) svg.append(svgEl("polyline", { points: rates.map((r) => `${x(r.at).toFixed(1)},${(T + (H - T - B) * (1 - r.tps / maxTPS)).toFixed(1)}`).join(" "), fill: "none", stroke: "#d97706", "stroke-width": 1.5, class: "engine-tps" }));
  for (const a of measured) svg.append(svgEl("circle", { cx: x(a.at), cy: T + (H - T - B) * (1 - a.tps / maxTPS), r: 3, fill: "#2f6fec", class: "tps-point" }));
  svg.append(svgEl("text", { x: L - 4, y: T + 8, "text-anchor": "end", "font-size": 10, fill: "#5b6376" }, maxTPS.toFixed(0)));
  svg.append(svgEl("text", { x: L, y: H - 4, "font-size": 10, fill: "#5b6376" }, "−10 min"));
  svg.append(svgEl("text", { x: W - R, y: H - 4, "text-anchor": "end", "font-size": 10, fill: "#5b6376" }, `now · up to ${maxReq} req/min`));
  $("tps-chart").replaceChildren(svg);
}

// ---- Ledger ----

function credits(micro) {
  const m = Math.round(micro / 1000), a = Math.abs(m);
  return (m < 0 ? "-" : "") + Math.floor(a / 1000) + "." + String(a % 1000).padStart(3, "0");
}
const ledgerEvery = 5000, ledgerKeep = 120;
const ledgerSamples = [];

async function refreshLedger() {
  let lg;
  try { lg = await getJSON("/api/ledger"); } catch (e) {
    if (e.status === 404 || e.status === 501) { $("ledger-body").hidden = true; $("ledger-none").hidden = false; }
    return;
  }
  $("ledger-none").hidden = true; $("ledger-body").hidden = false;
  const t = lg.totals;
  const kv = $("ledger-totals"); kv.replaceChildren();
  for (const [k, v] of [["earned", credits(t.earned)], ["spent", credits(t.spent)], ["balance", credits(t.balance)],
    ["receipts", `${t.receipts} signed · ${t.unsigned} unsigned`], ["peers", String(t.peers)]]) kv.append(el("div", k), el("div", v, "mono"));
  const top = [...(lg.peers || [])].sort((a, b) => Math.abs(b.balance) - Math.abs(a.balance) || b.receipts - a.receipts).slice(0, 10);
  const tb = $("ledger-peers"); tb.replaceChildren();
  for (const p of top) {
    const tr = el("tr");
    const id = el("td", short(p.id), "mono"); id.title = p.id; tr.append(id);
    tr.append(el("td", credits(p.earned), "num mono"), el("td", credits(p.spent), "num mono"), el("td", credits(p.balance), "num mono"));
    tr.append(el("td", p.unsigned ? `${p.receipts} + ${p.unsigned} unsigned` : String(p.receipts), "num"));
    tb.append(tr);
  }
  if (!top.length) { const tr = el("tr"), td = el("td", "no counterparts yet"); td.colSpan = 5; tr.append(td); tb.append(tr); }
  ledgerSamples.push({ at: Date.now(), earned: t.earned, spent: t.spent });
  if (ledgerSamples.length > ledgerKeep) ledgerSamples.splice(0, ledgerSamples.length - ledgerKeep);
  drawLedgerChart();
}

function drawLedgerChart() {
  const W = 600, H = 160, L = 64, R = 8, T = 8, B = 20;
  const s = ledgerSamples, last = s[s.length - 1];
  const span = s.length > 1 ? last.at - s[0].at : 0;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `Credits over the last ${ago(span)}: earned ${credits(last.earned)}, spent ${credits(last.spent)}` });
  svg.append(svgEl("title", {}, "Earned and spent credits over time"));
  if (s.length < 2) {
    svg.append(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#6b7385", "font-size": 12 }, "collecting samples…"));
    $("ledger-chart").replaceChildren(svg);
    return;
  }
  let lo = Infinity, hi = -Infinity;
  for (const p of s) { lo = Math.min(lo, p.earned, p.spent); hi = Math.max(hi, p.earned, p.spent); }
  if (hi === lo) { hi += 1000; lo = Math.max(0, lo - 1000); }
  const x = (at) => L + (W - L - R) * (at - s[0].at) / span;
  const y = (v) => T + (H - T - B) * (hi - v) / (hi - lo);
  const label = { fill: "#6b7385", "font-size": 11 };
  svg.append(svgEl("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#e3e6ec" }), svgEl("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#e3e6ec" }));
  svg.append(svgEl("text", { ...label, x: L - 6, y: T + 9, "text-anchor": "end" }, credits(hi)));
  svg.append(svgEl("text", { ...label, x: L - 6, y: H - B, "text-anchor": "end" }, credits(lo)));
  svg.append(svgEl("text", { ...label, x: L, y: H - 5 }, "−" + ago(span)));
  svg.append(svgEl("text", { ...label, x: W - R, y: H - 5, "text-anchor": "end" }, "now"));
  for (const [key, color] of [["earned", "#2f6fec"], ["spent", "#c2410c"]]) {
    const pts = s.map((p) => `${x(p.at).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
    svg.append(svgEl("polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 2, "stroke-linejoin": "round" }));
  }
  $("ledger-chart").replaceChildren(svg);
}

// ---- Wiring ----

$("chat-form").addEventListener("submit", (e) => { e.preventDefault(); send(); });
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
});
$("stop").addEventListener("click", () => { if (streaming) streaming.ctl.abort(); });
$("clear").addEventListener("click", () => { if (streaming) streaming.ctl.abort(); history = []; save(); renderHistory(); $("why").replaceChildren(el("div", "Send a prompt to see how routing scored the candidates.", "note")); });
$("model").addEventListener("change", checkChosen);
$("copy-self").addEventListener("click", async () => {
  const id = $("peer-id").textContent;
  try { await navigator.clipboard.writeText(id); $("copy-self").textContent = "copied"; } catch (e) { window.prompt("Copy the ID:", id); }
  setTimeout(() => { $("copy-self").textContent = "copy"; }, 1500);
});
setInterval(() => { if (staleSince) markStale("no answer"); }, 1000);

renderHistory();
drawTPS();
poll(refreshStatus, 3000);
poll(refreshPeers, 3000);
poll(refreshModels, 3000);
poll(refreshRTT, 5000);
poll(refreshExperts, 5000);
poll(refreshLedger, ledgerEvery);
