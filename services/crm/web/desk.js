// Hotline agent desktop: plain JS, no build step. Talks to the CRM REST API (/api) and the
// live feed (/ws). The session is an HttpOnly cookie, so this script never sees the token.
"use strict";

const STATES = {
  logged_out: "未登录 Logged out", ready: "就绪 Ready", not_ready: "示忙 Not Ready",
  ringing: "振铃 Ringing", on_call: "通话中 On call", wrap_up: "话后处理 Wrap-up",
  unspecified: "未知 Unknown",
};
const REASONS = {
  meal: "用餐 Meal", meeting: "会议 Meeting", training: "培训 Training",
  restroom: "洗手间 Restroom", helping: "协助同事 Helping", break: "休息 Break", other: "其他 Other",
};
const END_REASONS = {
  caller_hangup: "客户挂机 Caller hung up", agent_hangup: "座席挂机 Agent hung up",
  far_end: "对端释放 Far end", system: "系统 System", rejected: "拒绝 Rejected",
  error: "故障 Error", timeout: "超时 Timeout", unspecified: "结束 Ended",
};

const $ = (id) => document.getElementById(id);
const desk = {
  me: null, socket: null, reconnectMs: 1000, signedOut: true, phoneLoggedIn: false,
  stateSince: Date.now(), talkStart: null, currentCall: null, board: new Map(),
};

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (!response.ok) {
    const message = (data && data.error) || `${response.status} ${response.statusText}`;
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
function deskError(message) {
  const el = $("desk-error");
  el.textContent = message || "";
  show(el, Boolean(message));
}

// -- sign-in ------------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const err = $("login-error");
  show(err, false);
  $("login-btn").disabled = true;
  try {
    const result = await api("POST", "/api/login",
      { username: $("username").value.trim(), password: $("password").value });
    $("password").value = "";
    await enterDesk(result.user, true);
  } catch (e) {
    err.textContent = e.status === 401 ? "用户名或密码错误 Wrong username or password"
      : e.status === 429 ? `尝试次数过多 ${e.message}` : e.message;
    show(err, true);
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
  show($("desk-view"), false);
  show($("whoami"), false);
  show($("login-view"), true);
  $("username").focus();
}

async function enterDesk(user, freshLogin) {
  desk.me = user;
  desk.signedOut = false;
  setText("agent-name", user.display_name || user.username);
  setText("agent-ext", user.extension);
  show($("login-view"), false);
  show($("whoami"), true);
  show($("desk-view"), true);
  const takesCalls = Boolean(user.agent_id);
  show($("seat-card"), takesCalls);  // supervisors and QA have no seat of their own
  show($("board-card"), ["supervisor", "team_leader", "admin"].includes(user.role));
  connectFeed();
  refreshCalls();
  if (takesCalls) await resumeSeat(freshLogin);
}

// After a web sign-in the phone is logged in at once; after a page reload the seat is
// resumed as the ACD has it, so a reload during a call does not try to log in again.
async function resumeSeat(freshLogin) {
  if (!freshLogin) {
    try {
      const agent = await api("GET", "/api/agent");
      if (agent.state !== "logged_out") { applyAgent(agent); return; }
    } catch (e) {
      if (e.status !== 404) { deskError(e.message); return; }
    }
  }
  await phoneLogin();
}

// -- the seat in the ACD ------------------------------------------------------------------

function applyAgent(agent) {
  renderState(agent.state, agent.reason);
  desk.phoneLoggedIn = agent.state !== "logged_out";
  const btn = $("phone-btn");
  btn.dataset.action = desk.phoneLoggedIn ? "logout" : "login";
  btn.textContent = desk.phoneLoggedIn ? "登出话机 Log out" : "登录话机 Log in to phone";
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

function renderState(state, reason) {
  const el = $("state");
  if (el.dataset.state !== state) desk.stateSince = Date.now();
  el.dataset.state = state;
  el.textContent = STATES[state] || state;
  $("state-reason").textContent = reason ? (REASONS[reason] || reason) : "";
  $("ready-btn").disabled = state === "ready" || state === "logged_out";
  $("notready-btn").disabled = state === "logged_out";
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
    if (desk.signedOut) return;
    if (event.code === 4001) { leaveDesk(); return; }  // logged out or session expired
    setTimeout(connectFeed, desk.reconnectMs);
    desk.reconnectMs = Math.min(desk.reconnectMs * 2, 15000);
  };
}

function mine(msg) { return desk.me && desk.me.agent_id && msg.agent_id === desk.me.agent_id; }

function onFeed(msg) {
  if (msg.type === "hello" || msg.type === "pong") return;
  updateBoard(msg);
  if (!mine(msg)) return;
  if (msg.type === "offer") popCall(msg);
  else if (msg.type === "state") {
    applyAgent({ state: msg.state, reason: msg.reason, extension: msg.extension });
  } else if (msg.type === "connected") callConnected(msg);
  else if (msg.type === "ended") callEnded(msg);
}

function popCall(msg) {
  desk.currentCall = msg.call_id;
  desk.talkStart = null;
  const panel = $("call-panel");
  panel.dataset.status = "offered";
  panel.dataset.callId = msg.call_id;
  // When the ACD offered the call and when this desk showed it: the pop must be within 1 s.
  panel.dataset.offeredAt = msg.offered_at_ms || "";
  panel.dataset.poppedAt = Date.now();
  $("call-status").textContent = "来电振铃 Incoming call";
  show($("talk-timer"), false);
  setText("caller-number", msg.ani);
  setText("queue-name", msg.queue);
  setText("dialled-number", msg.dnis);
  const c = msg.customer;
  $("customer-card").dataset.known = c ? "true" : "false";
  $("customer-name").textContent = c ? c.name : "未知来电 Unknown caller";
  setText("customer-phone", c ? c.phone : "");
  setText("customer-vip", c ? (c.vip_tier > 0 ? `VIP ${c.vip_tier}` : "普通 Standard") : "");
  setText("customer-email", c ? c.email : "");
  setText("customer-notes", c ? c.notes : "");
  show(panel, true);
}

function callConnected(msg) {
  if (desk.currentCall !== msg.call_id) popCall({ call_id: msg.call_id, queue: msg.queue });
  desk.talkStart = Date.now();
  $("call-panel").dataset.status = "connected";
  $("call-status").textContent = "通话中 Connected";
  show($("talk-timer"), true);
}

function callEnded(msg) {
  if (desk.currentCall !== msg.call_id) return;
  desk.talkStart = null;
  $("call-panel").dataset.status = "ended";
  $("call-status").textContent = `已结束 ${END_REASONS[msg.reason] || msg.reason}`;
  refreshCalls();
}

function updateBoard(msg) {
  if ($("board-card").hidden || !msg.agent_id) return;
  const row = desk.board.get(msg.agent_id) || { agent_id: msg.agent_id };
  if (msg.type === "state") Object.assign(row, { state: msg.state, reason: msg.reason,
    extension: msg.extension || row.extension, call: msg.call_id || "" });
  else if (msg.type === "offer") Object.assign(row, { call: `${msg.ani} → ${msg.queue}` });
  else if (msg.type === "ended") row.call = "";
  desk.board.set(msg.agent_id, row);
  const body = $("agents-board");
  body.replaceChildren(...[...desk.board.values()]
    .sort((a, b) => a.agent_id.localeCompare(b.agent_id, undefined, { numeric: true }))
    .map((r) => tableRow([r.agent_id, r.extension, STATES[r.state] || r.state,
      r.reason ? (REASONS[r.reason] || r.reason) : "", r.call])));
}

// -- recent calls -------------------------------------------------------------------------

function tableRow(cells) {
  const tr = document.createElement("tr");
  for (const value of cells) {
    const td = document.createElement("td");
    td.textContent = value == null || value === "" ? "—" : String(value);
    tr.appendChild(td);
  }
  return tr;
}

async function refreshCalls() {
  try {
    const { cdrs } = await api("GET", "/api/cdrs?limit=20");
    $("recent-calls").replaceChildren(...cdrs.map((c) => tableRow([
      c.started_at ? new Date(c.started_at).toLocaleString() : "", c.ani, c.queue, c.agent_id,
      c.wait_ms == null ? "" : clock(c.wait_ms), c.talk_ms == null ? "" : clock(c.talk_ms),
      c.abandoned ? "放弃 Abandoned" : (END_REASONS[c.end_reason] || c.end_reason ||
        "进行中 In progress"),
    ])));
  } catch (e) {
    if (e.status === 401) leaveDesk();
  }
}

// -- start --------------------------------------------------------------------------------

function tick() {
  $("state-timer").textContent = clock(Date.now() - desk.stateSince);
  if (desk.talkStart) $("talk-timer").textContent = clock(Date.now() - desk.talkStart);
}

document.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", signIn);
  $("logout-btn").addEventListener("click", signOut);
  $("ready-btn").addEventListener("click", goReady);
  $("notready-btn").addEventListener("click", goNotReady);
  $("phone-btn").addEventListener("click",
    () => ($("phone-btn").dataset.action === "logout" ? phoneLogout() : phoneLogin()));
  $("refresh-calls").addEventListener("click", refreshCalls);
  setInterval(tick, 500);
  try {
    await enterDesk(await api("GET", "/api/me"), false);
  } catch (_) {
    leaveDesk();
  }
});
