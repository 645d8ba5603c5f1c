// Hotline agent desktop: plain JS, no build step. Talks to the CRM REST API (/api) and the
// live feed (/ws). The session is an HttpOnly cookie, so this script never sees the token.
// This file is the desk's core (sign-in, seat, feed, screen pop, lock); call.js holds the
// in-call panel and click-to-dial, wrapup.js the after-call work. Strings come from i18n.js.
"use strict";

const $ = (id) => document.getElementById(id);
const desk = {
  me: null, config: null, socket: null, reconnectMs: 1000, signedOut: true,
  phoneLoggedIn: false, state: "logged_out", reason: "", stateSince: Date.now(),
  talkStart: null, currentCall: null, call: null, locked: false,
};

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body, keepalive = false) {
  // keepalive: the request outlives the page (a setting saved as the agent reloads or leaves)
  const init = { method, credentials: "same-origin", headers: {}, keepalive };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (!response.ok) {
    // the server says what was wrong (in English); the desk says what kind of problem it is
    // in the desk's language first
    const detail = (data && data.error) || `${response.status} ${response.statusText}`;
    const kind = label("err", String(response.status));
    const message = kind === String(response.status) ? detail : `${kind}: ${detail}`;
    if (response.status === 423 && desk.me && !desk.locked) showLock();
    throw new ApiError(response.status, message);
  }
  return data;
}

function show(el, visible) { el.hidden = !visible; }
function setText(id, text) { $(id).textContent = text == null || text === "" ? "—" : String(text); }
function clock(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const mm = String(Math.floor(s / 60)).padStart(2, "0");
  return `${mm}:${String(s % 60).padStart(2, "0")}`;
}
function showError(id, message) {
  const el = $(id);
  el.textContent = message || "";
  show(el, Boolean(message));
}
const deskError = (message) => showError("desk-error", message);
function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text != null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

// -- sign-in ------------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  showError("login-error", "");
  $("login-btn").disabled = true;
  try {
    const result = await api("POST", "/api/login",
      { username: $("username").value.trim(), password: $("password").value });
    $("password").value = "";
    await enterDesk(result.user, true);
  } catch (e) {
    showError("login-error", e.status === 401 ? t("login.wrong")
      : e.status === 429 ? t("login.throttled", { msg: e.message }) : e.message);
  } finally {
    $("login-btn").disabled = false;
  }
}

async function signOut() {
  desk.signedOut = true;
  try {
    if (desk.phoneLoggedIn) await api("POST", "/api/agent/logout");
  } catch (_) { /* the ACD may already have logged us out */ }
  try { await api("POST", "/api/logout"); } catch (_) { /* session may have expired */ }
  leaveDesk();
}

function leaveDesk() {
  desk.signedOut = true;
  if (desk.socket) desk.socket.close();
  desk.me = null;
  desk.locked = false;
  forgetCall();
  show($("desk-view"), false);
  show($("whoami"), false);
  show($("lock-view"), false);
  show($("login-view"), true);
  $("username").focus();
}

async function enterDesk(user, freshLogin) {
  desk.me = user;
  desk.signedOut = false;
  setLanguage(pickLanguage(user.language));
  $("lang-select").value = currentLanguage;
  setText("agent-name", user.display_name || user.username);
  setText("agent-ext", user.extension);
  show($("login-view"), false);
  show($("whoami"), true);
  if (user.locked) { showLock(); return; }
  show($("desk-view"), true);
  desk.config = await api("GET", "/api/desk/config");
  fillReasons();
  const takesCalls = Boolean(user.agent_id);
  show($("seat-card"), takesCalls);  // supervisors and QA have no seat of their own
  setupDial();
  setupWrapUp();
  connectFeed();
  refreshCalls();
  refreshCallbacks();
  if (takesCalls) await resumeSeat(freshLogin);
}

// After a web sign-in the phone is logged in at once; after a page reload (or an unlock) the
// seat is resumed as the ACD has it, with the call it is on.
async function resumeSeat(freshLogin) {
  if (!freshLogin) {
    try {
      const agent = await api("GET", "/api/agent");
      if (agent.state !== "logged_out") {
        applyAgent(agent);
        if (agent.call_id) await restoreCall(agent);
        return;
      }
    } catch (e) {
      if (e.status !== 404) { deskError(e.message); return; }
    }
  }
  await phoneLogin();
}

// -- the seat in the ACD ------------------------------------------------------------------

function fillReasons() {
  const select = $("reason");
  const chosen = select.value;
  select.replaceChildren(...desk.config.not_ready_reasons.map(
    (r) => el("option", label("reason", r), { value: r })));
  if (chosen) select.value = chosen;
}

function applyAgent(agent) {
  renderState(agent.state, agent.reason, agent.state_since_ms);
  desk.phoneLoggedIn = agent.state !== "logged_out";
  const btn = $("phone-btn");
  btn.dataset.action = desk.phoneLoggedIn ? "logout" : "login";
  btn.dataset.i18n = desk.phoneLoggedIn ? "seat.phone_logout" : "seat.phone_login";
  btn.textContent = t(btn.dataset.i18n);
  if (agent.extension) setText("agent-ext", agent.extension);
}

async function seatCommand(path, body) {
  deskError("");
  try {
    applyAgent(await api("POST", path, body));
  } catch (e) {
    if (e.status === 401) { leaveDesk(); return; }
    deskError(e.message);
  }
}

const phoneLogin = () => seatCommand("/api/agent/login", {});
const phoneLogout = () => seatCommand("/api/agent/logout");
const goReady = () => seatCommand("/api/agent/state", { state: "ready" });
const goNotReady = () => seatCommand("/api/agent/state",
  { state: "not_ready", reason: $("reason").value });

function renderState(state, reason, sinceMs) {
  const node = $("state");
  if (node.dataset.state !== state) desk.stateSince = sinceMs || Date.now();
  desk.state = state;
  desk.reason = reason || "";
  node.dataset.state = state;
  node.textContent = label("state", state);
  $("state-reason").textContent = reason ? label("reason", reason) : "";
  $("ready-btn").disabled = state === "ready" || state === "logged_out";
  $("notready-btn").disabled = state === "logged_out";
  onStateForWrapUp(state);
}

// -- the live feed ------------------------------------------------------------------------

function connectFeed() {
  if (desk.socket && desk.socket.readyState <= WebSocket.OPEN) return;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/ws`);
  desk.socket = socket;
  socket.onopen = () => { desk.reconnectMs = 1000; $("feed-status").dataset.connected = "true"; };
  socket.onmessage = (event) => {
    try { onFeed(JSON.parse(event.data)); } catch (e) { console.error("bad feed message", e); }
  };
  socket.onclose = (event) => {
    $("feed-status").dataset.connected = "false";
    if (desk.signedOut || desk.locked) return;
    if (event.code === 4001) { leaveDesk(); return; }  // logged out or session expired
    if (event.code === 4003) { showLock(); return; }  // locked in another tab
    setTimeout(connectFeed, desk.reconnectMs);
    desk.reconnectMs = Math.min(desk.reconnectMs * 2, 15000);
  };
}

function mine(msg) { return desk.me && desk.me.agent_id && msg.agent_id === desk.me.agent_id; }

function onFeed(msg) {
  if (msg.type === "hello" || msg.type === "pong" || desk.locked) return;
  if (!mine(msg)) return;  // watchers get everyone's: their board (board.js) follows those
  if (msg.type === "offer") popCall(msg);
  else if (msg.type === "state") {
    applyAgent({ state: msg.state, reason: msg.reason, extension: msg.extension,
      state_since_ms: msg.since_ms });
  } else if (msg.type === "connected") callConnected(msg);
  else if (msg.type === "ended") callEnded(msg);
  else onCallStep(msg);  // call.js: held, resumed, transferred, consult, conference
}

// -- the call and its customer ------------------------------------------------------------

function popCall(msg) {
  finishWrapUpForNewCall();
  desk.currentCall = msg.call_id;
  desk.call = { held: false, muted: false, consult: null, parties: new Map(), holdStart: null,
    ani: msg.ani || "" };
  desk.talkStart = null;
  const panel = $("call-panel");
  panel.dataset.status = "offered";
  panel.dataset.callId = msg.call_id;
  // When the ACD offered the call and when this desk showed it: the pop must be within 1 s.
  panel.dataset.offeredAt = msg.offered_at_ms || "";
  panel.dataset.poppedAt = Date.now();
  $("call-status").textContent = t(msg.outbound ? "call.outbound" : "call.incoming");
  show($("talk-timer"), false);
  setText("caller-number", msg.ani);
  setText("queue-name", msg.queue);
  setText("dialled-number", msg.dnis);
  showCustomer(msg.customer);
  renderCallControls();
  show(panel, true);
}

function showCustomer(c) {
  desk.customer = c || null;
  $("customer-card").dataset.known = c ? "true" : "false";
  $("customer-name").textContent = c ? c.name : t("call.unknown_caller");
  setText("customer-phone", c ? c.phone : "");
  setText("customer-vip", c ? (c.vip_tier > 0 ? `VIP ${c.vip_tier}` : t("customer.standard")) : "");
  setText("customer-email", c ? c.email : "");
  setText("customer-notes", c ? c.notes : "");
  show($("customer-dial-btn"), Boolean(c && c.phone && desk.me && desk.me.extension));
  $("history").replaceChildren();
  if (c) loadHistory(c.id);
}

function callConnected(msg) {
  if (desk.currentCall !== msg.call_id) popCall({ call_id: msg.call_id, queue: msg.queue });
  desk.talkStart = Date.now();
  $("call-panel").dataset.status = "connected";
  $("call-status").textContent = t("call.connected");
  show($("talk-timer"), true);
  renderCallControls();
}

function callEnded(msg) {
  if (desk.currentCall !== msg.call_id) return;
  desk.talkStart = null;
  if (desk.call) { desk.call.held = false; desk.call.holdStart = null; }
  $("call-panel").dataset.status = "ended";
  $("call-status").textContent = t("call.ended", { reason: label("end", msg.reason) });
  renderCallControls();
  startWrapUp(msg.call_id);  // wrapup.js
  refreshCalls();
}

// After a reload or an unlock: the call the ACD says we are on, from the CDR and the customer.
async function restoreCall(agent) {
  try {
    const cdr = await api("GET", `/api/cdrs/${encodeURIComponent(agent.call_id)}`);
    let customer = null;
    if (cdr.ani) {
      try {
        customer = await api("GET", `/api/customers?phone=${encodeURIComponent(cdr.ani)}`);
      } catch (_) { customer = null; }
    }
    popCall({ call_id: agent.call_id, ani: cdr.ani, dnis: cdr.dnis, queue: cdr.queue, customer });
    if (agent.state === "on_call") {
      callConnected({ call_id: agent.call_id, queue: cdr.queue });
      if (cdr.answered_at) desk.talkStart = Date.parse(cdr.answered_at);
    } else if (agent.state === "wrap_up") {
      callEnded({ call_id: agent.call_id, reason: cdr.end_reason || "unspecified" });
    }
  } catch (e) {
    deskError(e.message);
  }
}

function forgetCall() {
  desk.currentCall = null;
  desk.call = null;
  desk.customer = null;
  desk.talkStart = null;
  for (const id of ["caller-number", "queue-name", "dialled-number", "customer-name",
    "customer-phone", "customer-vip", "customer-email", "customer-notes"]) $(id).textContent = "";
  $("history").replaceChildren();
  $("parties").replaceChildren();
  show($("call-panel"), false);
  show($("wrapup-card"), false);
}

// -- screen lock --------------------------------------------------------------------------

async function lockScreen() {
  try { await api("POST", "/api/lock"); } catch (e) { deskError(e.message); return; }
  showLock();
}

function showLock() {
  desk.locked = true;
  if (desk.socket) desk.socket.close();
  closeTransferDialog();
  forgetCall();  // nothing of the call or the customer stays in the page
  $("recent-calls").replaceChildren();
  $("callbacks").replaceChildren();
  $("lookup-history").replaceChildren();  // nor of a customer looked up
  show($("lookup-result"), false);
  $("lookup-phone").value = "";
  desk.found = null;
  show($("desk-view"), false);
  show($("lock-view"), true);
  $("lock-hint").textContent = t("lock.hint",
    { name: desk.me ? (desk.me.display_name || desk.me.username) : "" });
  $("lock-password").value = "";
  $("lock-password").focus();
}

async function unlock(event) {
  event.preventDefault();
  showError("lock-error", "");
  try {
    await api("POST", "/api/unlock", { password: $("lock-password").value });
  } catch (e) {
    if (e.status === 401) { leaveDesk(); return; }
    showError("lock-error", e.message);
    return;
  }
  $("lock-password").value = "";
  desk.locked = false;
  show($("lock-view"), false);
  await enterDesk(await api("GET", "/api/me"), false);
}

async function chooseLanguage() {
  setLanguage($("lang-select").value);
  if (desk.config) fillReasons();
  if (desk.state) renderState(desk.state, desk.reason);
  renderCallControls();
  refreshCalls();
  if (desk.me && !desk.locked) {
    try {
      await api("POST", "/api/me/language", { language: currentLanguage }, true);
    } catch (_) { /* kept locally */ }
  }
}

// -- recent calls ------------------------------------------------------------------------

function tableRow(cells) {
  const tr = document.createElement("tr");
  for (const value of cells) tr.appendChild(el("td", value == null || value === "" ? "—" : value));
  return tr;
}

function dispositionLabel(code) {
  const found = desk.config && desk.config.dispositions.find((d) => d.code === code);
  return found ? (found[currentLanguage] || found.en) : code;
}

async function refreshCalls() {
  if (!desk.me || desk.locked) return;
  try {
    const { cdrs } = await api("GET", "/api/cdrs?limit=20");
    $("recent-calls").replaceChildren(...cdrs.map((c) => tableRow([
      c.started_at ? new Date(c.started_at).toLocaleString(currentLanguage) : "", c.ani, c.queue,
      c.agent_id, c.wait_ms == null ? "" : clock(c.wait_ms),
      c.talk_ms == null ? "" : clock(c.talk_ms), c.hold_count ? clock(c.hold_ms) : "",
      c.abandoned ? t("result.abandoned")
        : (c.end_reason ? label("end", c.end_reason) : t("result.in_progress")),
      c.disposition ? dispositionLabel(c.disposition.code) : "",
    ])));
  } catch (e) {
    if (e.status === 401) leaveDesk();
  }
}

// -- start --------------------------------------------------------------------------------

function tick() {
  $("state-timer").textContent = clock(Date.now() - desk.stateSince);
  if (desk.talkStart) $("talk-timer").textContent = clock(Date.now() - desk.talkStart);
  tickHold();  // call.js
  tickWrapUp();  // wrapup.js
}

document.addEventListener("DOMContentLoaded", async () => {
  setLanguage(pickLanguage(""));
  $("lang-select").value = currentLanguage;
  $("lang-select").addEventListener("change", chooseLanguage);
  $("login-form").addEventListener("submit", signIn);
  $("unlock-form").addEventListener("submit", unlock);
  $("logout-btn").addEventListener("click", signOut);
  $("lock-btn").addEventListener("click", lockScreen);
  $("ready-btn").addEventListener("click", goReady);
  $("notready-btn").addEventListener("click", goNotReady);
  $("phone-btn").addEventListener("click",
    () => ($("phone-btn").dataset.action === "logout" ? phoneLogout() : phoneLogin()));
  $("refresh-calls").addEventListener("click", refreshCalls);
  setupCallPanel();  // call.js
  setInterval(tick, 250);
  try {
    await enterDesk(await api("GET", "/api/me"), false);
  } catch (_) {
    leaveDesk();
  }
});
