// swift's live page: the pool, the downloads, their sources and piece maps.
//
// Rules: everything shown is data, set with textContent (never innerHTML);
// the page talks only to the node that served it (JSON-RPC at /jsonrpc, its
// WebSocket notifications); the secret comes from #secret=TOKEN once (then the
// fragment is cleared) or from the form, and is kept for this tab only.
"use strict";

const POLL_MS = 1500;          // a periodic look, besides the notifications
const RECONNECT_MS = 2000;     // after the WebSocket closed
const MAX_EVENTS = 20;
const STORE = "swift-rpc-secret";

let secret = null;
let nextId = 1;
let refreshing = false;
let again = false;
let socket = null;

function takeSecret() {
  const match = /(?:^#|&)secret=([^&]*)/.exec(location.hash);
  if (match) {
    sessionStorage.setItem(STORE, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  secret = sessionStorage.getItem(STORE);
}

function withToken(params) {
  return secret === null ? params : ["token:" + secret, ...params];
}

async function post(body) {
  const res = await fetch("/jsonrpc", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body), credentials: "omit", cache: "no-store",
  });
  return res.json();
}

class RpcFailure extends Error {
  constructor(error) { super(error.message); this.code = error.code; }
}

async function call(method, params) {
  const answer = await post({ jsonrpc: "2.0", id: nextId++, method, params });
  if (answer.error) throw new RpcFailure(answer.error);
  return answer.result;
}

function rpc(method, ...params) { return call(method, withToken(params)); }

// each call carries the token; system.multicall itself does not (aria2's convention)
function multicall(calls) {
  return call("system.multicall", [calls.map(([methodName, ...params]) => ({ methodName, params: withToken(params) }))]);
}

// -- formatting ----------------------------------------------------------------------
function bytes(n) {
  n = Number(n) || 0;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}
function rate(n) { return bytes(n) + "/s"; }

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function say(text, isError) {
  const p = document.getElementById("message");
  p.textContent = text || "";
  p.className = isError ? "warning" : "muted";
}

function event(text) {
  const list = document.getElementById("events");
  list.prepend(el("li", new Date().toLocaleTimeString() + "  " + text));
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

function nameOf(d) {
  const path = d.files && d.files[0] && d.files[0].path;
  if (path) return path.split("/").pop();
  const uri = d.files && d.files[0] && d.files[0].uris[0] && d.files[0].uris[0].uri;
  return uri ? uri.split("?")[0].split("/").pop() || uri : d.gid;
}

// -- drawing -------------------------------------------------------------------------
function drawPieces(canvas, d) {
  const pieces = Number(d.numPieces) || 0;
  const width = Math.max(1, Math.min(pieces, 1024));
  canvas.width = width;
  canvas.height = 1;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#eef0f4";
  ctx.fillRect(0, 0, width, 1);
  if (!pieces) return;
  ctx.fillStyle = d.status === "error" ? "#c44" : "#3a7bd5";
  const hex = d.bitfield || "";
  for (let i = 0; i < pieces; i++) {
    const nibble = parseInt(hex[i >> 2] || "0", 16);
    if (nibble & (8 >> (i & 3))) ctx.fillRect(Math.floor(i * width / pieces), 0, Math.max(1, width / pieces), 1);
  }
}

function button(label, cls, gid, action) {
  const b = el("button", label, cls);
  b.type = "button";
  b.dataset.gid = gid;
  b.addEventListener("click", async () => {
    try { await action(); event(label + " " + gid); } catch (e) { say(label + ": " + e.message, true); }
    refresh();
  });
  return b;
}

function renderDownload(d, sources) {
  const box = el("div", null, "download");
  box.dataset.gid = d.gid;
  const title = el("div", null, "title");
  title.append(el("span", nameOf(d), "name"), el("span", d.status, "status " + d.status));
  const buttons = el("span", null, "buttons");
  if (d.status === "active") buttons.append(button("Pause", "pause", d.gid, () => rpc("aria2.pause", d.gid)));
  if (d.status === "paused") buttons.append(button("Resume", "resume", d.gid, () => rpc("aria2.unpause", d.gid)));
  if (d.status === "active" || d.status === "paused")
    buttons.append(button("Cancel", "cancel", d.gid, () => rpc("aria2.remove", d.gid)));
  else buttons.append(button("Clear", "clear", d.gid, () => rpc("aria2.removeDownloadResult", d.gid)));
  title.append(buttons);
  box.append(title);
  const uri = d.files && d.files[0] && d.files[0].uris[0] ? d.files[0].uris[0].uri : "";
  box.append(el("div", uri, "url muted"));
  const bar = el("progress");
  bar.max = Number(d.totalLength) || 1;
  bar.value = Number(d.completedLength) || 0;
  box.append(bar);
  const canvas = el("canvas");
  canvas.title = "piece map: " + d.numPieces + " pieces of " + bytes(d.pieceLength);
  drawPieces(canvas, d);
  box.append(canvas);
  const total = Number(d.totalLength);
  const pct = total ? Math.floor(100 * Number(d.completedLength) / total) + "%  " : "";
  const line = el("div", pct + bytes(d.completedLength) + " of " + (total ? bytes(total) : "?") +
    (d.status === "active" ? " at " + rate(d.downloadSpeed) : ""), "muted");
  line.title = "saved in " + d.dir;
  box.append(line);
  if (d.errorMessage) box.append(el("div", d.errorMessage, "error"));
  const list = el("ul", null, "sources");
  for (const s of sources || []) {
    list.append(el("li", s.name + (s.local === "true" ? " (this machine)" : "  " + s.peerId) + ": " +
      bytes(s.completedLength) + (d.status === "active" ? " at " + rate(s.downloadSpeed) : "")));
  }
  box.append(list);
  return box;
}

function renderPool(pool, downloads, sourcesByGid) {
  const doing = new Map();   // key → [{name, rate}]
  for (const d of downloads) {
    for (const s of sourcesByGid.get(d.gid) || []) {
      if (d.status !== "active") continue;
      const key = s.local === "true" ? "local" : s.peerId;
      if (!doing.has(key)) doing.set(key, []);
      doing.get(key).push({ name: nameOf(d), rate: Number(s.downloadSpeed) || 0 });
    }
  }
  const body = document.querySelector("#pool tbody");
  body.replaceChildren();
  const row = (name, key, slots, work) => {
    const tr = el("tr");
    const total = work.reduce((sum, w) => sum + w.rate, 0);
    tr.append(el("td", name), el("td", key), el("td", slots),
      el("td", work.length ? work.map((w) => w.name).join(", ") : "idle"), el("td", work.length ? rate(total) : ""));
    body.append(tr);
  };
  row(pool.name + " (this node)", pool.key, "", doing.get("local") || []);
  for (const p of pool.peers) row(p.name, p.key, p.slots, doing.get(p.key) || []);
  document.getElementById("pool-warning").textContent = pool.warning || "";
  document.getElementById("node-name").textContent = pool.name + "  " + pool.key;
}

// -- refreshing ----------------------------------------------------------------------
function askSecret(message) {
  const form = document.getElementById("secret-form");
  form.hidden = false;
  say(message, true);
}

async function refresh() {
  if (refreshing) { again = true; return; }
  refreshing = true;
  try {
    const [active, waiting, stopped, stat, pool] = await multicall([
      ["aria2.tellActive"], ["aria2.tellWaiting", 0, 1000], ["aria2.tellStopped", 0, 1000],
      ["aria2.getGlobalStat"], ["swift.getPool"]]);
    for (const r of [active, waiting, stopped, stat, pool]) if (!Array.isArray(r)) throw new RpcFailure(r);
    const downloads = [...active[0], ...waiting[0], ...stopped[0]];
    downloads.sort((a, b) => (a.gid < b.gid ? 1 : -1));
    const peers = downloads.length ? await multicall(downloads.map((d) => ["aria2.getPeers", d.gid])) : [];
    const sourcesByGid = new Map(downloads.map((d, i) => [d.gid, Array.isArray(peers[i]) ? peers[i][0] : []]));
    document.getElementById("secret-form").hidden = true;
    renderPool(pool[0], downloads, sourcesByGid);
    const s = stat[0];
    document.getElementById("global").textContent =
      s.numActive + " active, " + s.numWaiting + " paused, " + s.numStopped + " stopped  ·  " + rate(s.downloadSpeed);
    const box = document.getElementById("downloads");
    box.replaceChildren(...downloads.map((d) => renderDownload(d, sourcesByGid.get(d.gid))));
    document.getElementById("no-downloads").hidden = downloads.length > 0;
  } catch (e) {
    if (e.message === "Unauthorized") askSecret(secret === null ? "This node needs its RPC secret." : "That secret is wrong.");
    else say("cannot reach the node: " + e.message, true);
  } finally {
    refreshing = false;
    if (again) { again = false; setTimeout(refresh, 0); }
  }
}

function connect() {
  socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/jsonrpc");
  const badge = document.getElementById("live");
  socket.addEventListener("open", () => { badge.textContent = "live"; badge.className = "badge on"; });
  socket.addEventListener("close", () => {
    badge.textContent = "offline"; badge.className = "badge off";
    setTimeout(connect, RECONNECT_MS);
  });
  socket.addEventListener("message", (msg) => {
    let data;
    try { data = JSON.parse(msg.data); } catch (e) { return; }
    if (typeof data.method === "string" && Array.isArray(data.params)) {
      const gid = data.params[0] && data.params[0].gid;
      event(data.method.replace("aria2.onDownload", "").toLowerCase() + " " + gid);
      refresh();
    }
  });
}

function start() {
  takeSecret();
  document.getElementById("secret-form").addEventListener("submit", (e) => {
    e.preventDefault();
    secret = document.getElementById("secret-input").value;
    sessionStorage.setItem(STORE, secret);
    refresh();
  });
  document.getElementById("add-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = document.getElementById("add-url");
    try {
      const gid = await rpc("aria2.addUri", [input.value]);
      say("added as " + gid);
      input.value = "";
    } catch (err) { say(err.message, true); }
    refresh();
  });
  connect();
  refresh();
  setInterval(refresh, POLL_MS);
}

document.addEventListener("DOMContentLoaded", start);
