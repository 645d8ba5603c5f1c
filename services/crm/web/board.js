// Hotline supervisor board (班组监控): plain JS, no build step, loaded by the desk page after
// desk.js (whose `api` helper it uses).
// For supervisors, team leaders and admins it adds a board to the desk: a snapshot on load
// (GET /api/supervision/board: the ACD's agents and queues), then live from the feed (/ws:
// agent state changes and queue changes); the rolling KPIs are fetched again from the ACD when
// a call leaves a queue. Actions (supervisors and admins; the server checks the role and
// audits each): Not Ready with a reason, Ready, log out; listen, whisper, barge, stop; force
// release. Strings are in Chinese and English side by side, as on the desk.
"use strict";

(() => {
  const WATCHERS = ["supervisor", "team_leader", "admin"];
  const ACTORS = ["supervisor", "admin"];
  const T = {
    title: ["班组监控", "Supervisor board"],
    queues: ["队列", "Queues"], agents: ["座席", "Agents"],
    queue: ["队列", "Queue"], waiting: ["排队", "Waiting"], longest: ["最长等待", "Longest wait"],
    sl: ["服务水平", "Service level"], asa: ["平均应答", "ASA"], abandon: ["放弃率", "Abandon rate"],
    staffed: ["在岗/空闲", "Staffed/ready"],
    agent: ["座席", "Agent"], ext: ["分机", "Ext."], state: ["状态", "State"],
    reason: ["原因", "Reason"], inState: ["持续", "Time in state"], call: ["通话", "Call"],
    actions: ["操作", "Actions"], myExt: ["我的分机", "My extension"],
    listen: ["监听", "Listen"], whisper: ["耳语", "Whisper"], barge: ["强插", "Barge"],
    stop: ["退出监听", "Stop"], release: ["强拆", "Force release"], confirm: ["确认强拆?", "Confirm?"],
    notReady: ["示忙", "Not Ready"], ready: ["就绪", "Ready"], logout: ["签出", "Log out"],
    monitoring: ["正在", "Now"], window: ["近", "last"], noData: ["—", ""],
    done: ["已执行", "Done"], held: ["保持中", "On hold"], by: ["由", "by"],
  };
  const STATE_NAMES = {
    logged_out: ["未登录", "Logged out"], ready: ["就绪", "Ready"], not_ready: ["示忙", "Not Ready"],
    ringing: ["振铃", "Ringing"], on_call: ["通话中", "On call"], wrap_up: ["话后处理", "Wrap-up"],
  };
  const REASON_NAMES = {
    meal: ["用餐", "Meal"], meeting: ["会议", "Meeting"], training: ["培训", "Training"],
    restroom: ["洗手间", "Restroom"], helping: ["协助同事", "Helping"], break: ["休息", "Break"],
    other: ["其他", "Other"],
  };
  const both = (pair) => (pair ? `${pair[0]} ${pair[1]}`.trim() : "");
  const t = (key) => both(T[key]);

  const board = {
    me: null, root: null, socket: null, closed: true, reconnectMs: 1000,
    agents: new Map(), queues: new Map(), calls: new Map(), monitor: null, armed: null,
    // the Not Ready reason picked in each agent's row: kept across re-renders (every feed
    // message redraws the rows; a picker reset under the supervisor's hand sends the wrong one)
    reasons: new Map(),
    refreshTimer: null,
    ticker: null, kpiTimer: null,
  };

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") node.textContent = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    node.append(...children.filter((c) => c != null));
    return node;
  }

  // the desk's REST helper (desk.js, loaded before this file): JSON in and out, errors with
  // the server's message
  const call = (method, path, body) => api(method, path, body);

  function clock(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(s / 3600);
    const mm = String(Math.floor((s % 3600) / 60)).padStart(2, "0");
    const ss = String(s % 60).padStart(2, "0");
    return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
  }
  const percent = (v) => (v == null ? "—" : `${Math.round(v * 1000) / 10}%`);

  function note(message, isError) {
    const line = board.root.querySelector("#board-note");
    line.textContent = message || "";
    line.className = isError ? "error" : "muted";
    line.hidden = !message;
  }

  // -- mounting on the desk ------------------------------------------------------------------

  function mount(me) {
    board.me = me;
    board.closed = false;
    const actor = ACTORS.includes(me.role);
    const ext = el("input", { id: "board-extension", value: me.extension || "", size: 6,
      inputMode: "numeric", "data-role": "extension" });
    board.root = el("section", { id: "supervisor-board", className: "card board",
      "data-actor": String(actor) },
      el("h2", {}, t("title"), " ", el("span", { className: "muted", id: "board-status",
        "data-loaded": "false", text: "…" })),
      actor ? el("label", { className: "board-ext" }, t("myExt"), " ", ext) : null,
      el("p", { id: "board-note", hidden: true }),
      el("h3", { text: t("queues") }),
      el("table", { className: "grid" },
        el("thead", {}, el("tr", {}, ...["queue", "waiting", "longest", "sl", "asa", "abandon",
          "staffed"].map((k) => el("th", { text: t(k) })))),
        el("tbody", { id: "board-queues" })),
      el("h3", { text: t("agents") }),
      el("table", { className: "grid" },
        el("thead", {}, el("tr", {}, ...["agent", "ext", "state", "reason", "inState", "call",
          "queue", "actions"].map((k) => el("th", { text: t(k) })))),
        el("tbody", { id: "board-agents" })));
    const view = document.getElementById("desk-view");
    view.insertBefore(board.root, view.firstChild);
    if (!document.querySelector('link[href="/static/board.css"]')) {
      document.head.append(el("link", { rel: "stylesheet", href: "/static/board.css" }));
    }
    connect();
    board.ticker = setInterval(tick, 1000);
    board.refreshTimer = setInterval(() => refresh(false), 15000);
  }

  function unmount() {
    board.closed = true;
    if (board.socket) board.socket.close();
    clearInterval(board.ticker);
    clearInterval(board.refreshTimer);
    if (board.root) board.root.remove();
    board.root = null;
    board.agents.clear();
    board.queues.clear();
  }

  // -- snapshot and live feed ------------------------------------------------------------------

  async function refresh(full) {
    try {
      const snap = await call("GET", "/api/supervision/board");
      if (!board.root) return;
      if (full) {
        board.agents.clear();
        for (const a of snap.agents) board.agents.set(a.agent_id, agentRow(a));
      }
      const now = Date.now();
      for (const q of snap.queues) {
        const kept = board.queues.get(q.queue);
        const waiting = new Map(q.waiting.map((w) => [w.call_id,
          { ani: w.ani, priority: w.priority, since: now - w.waited_ms }]));
        board.queues.set(q.queue, { ...q, waiting: full || !kept ? waiting : kept.waiting });
      }
      const status = board.root.querySelector("#board-status");
      status.dataset.loaded = "true";
      status.textContent = new Date().toLocaleTimeString();
      render();
    } catch (e) {
      if (board.root) note(e.message, true);
    }
  }

  function agentRow(a) {
    return { agent_id: a.agent_id, extension: a.extension, state: a.state, reason: a.reason,
      since: a.state_since_ms || Date.now(), call_id: a.call_id, queue: a.queue };
  }

  function connect() {
    if (board.closed) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/ws`);
    board.socket = socket;
    socket.onopen = () => { board.reconnectMs = 1000; refresh(true); };
    socket.onmessage = (event) => {
      try { onFeed(JSON.parse(event.data)); } catch (e) { console.error("board feed", e); }
    };
    socket.onclose = (event) => {
      if (board.closed || event.code === 4001) return;
      setTimeout(connect, board.reconnectMs);
      board.reconnectMs = Math.min(board.reconnectMs * 2, 15000);
    };
  }

  function onFeed(msg) {
    if (msg.type === "state") {
      const row = board.agents.get(msg.agent_id) || { agent_id: msg.agent_id };
      if (msg.since_ms && row.since && msg.since_ms < row.since) return;  // older than we know
      Object.assign(row, { state: msg.state, reason: msg.reason, call_id: msg.call_id,
        queue: msg.queue, extension: msg.extension || row.extension,
        since: msg.since_ms || Date.now() });
      board.agents.set(msg.agent_id, row);
      render();
    } else if (msg.type === "call") {
      // hold and monitoring marks of a call (the gateway's call-control events)
      const marks = board.calls.get(msg.call_id) || {};
      if (msg.change === "held") marks.held = true;
      else if (msg.change === "resumed") marks.held = false;
      else if (msg.change === "monitored") marks.monitor = { by: msg.supervisor_id, mode: msg.mode };
      else if (msg.change === "unmonitored") marks.monitor = null;
      board.calls.set(msg.call_id, marks);
      render();
    } else if (msg.type === "queue") {
      const q = board.queues.get(msg.queue);
      if (!q) return;
      if (msg.change === "queued") {
        q.waiting.set(msg.call_id, { ani: msg.ani, priority: msg.priority,
          since: Date.now() - Math.max(0, msg.at_ms - msg.enqueued_at_ms) });
      } else {
        q.waiting.delete(msg.call_id);
        scheduleKpis();  // a call left the queue: the rolling figures moved
      }
      render();
    }
  }

  function scheduleKpis() {
    clearTimeout(board.kpiTimer);
    board.kpiTimer = setTimeout(() => refresh(false), 400);
  }

  // -- rendering -------------------------------------------------------------------------------

  function render() {
    if (!board.root) return;
    const now = Date.now();
    const queues = [...board.queues.values()].sort((a, b) => a.queue.localeCompare(b.queue));
    board.root.querySelector("#board-queues").replaceChildren(...queues.map((q) => {
      const waits = [...q.waiting.values()].map((w) => now - w.since);
      // agents of this queue staffed (ready, ringing, on a call, in wrap-up) / ready, as the
      // ACD counted them at the last snapshot
      const counts = q.agents_by_state || {};
      const ready = counts.ready || 0;
      const working = ["ready", "ringing", "on_call", "wrap_up"]
        .reduce((n, s) => n + (counts[s] || 0), 0);
      return el("tr", { "data-queue": q.queue },
        el("td", { text: q.queue }),
        el("td", { "data-field": "waiting", text: String(q.waiting.size) }),
        el("td", { "data-field": "longest", text: waits.length ? clock(Math.max(...waits)) : "—" }),
        el("td", { "data-field": "service_level", text: percent(q.service_level),
          title: `${t("window")} ${Math.round(q.window_s / 60)} min, n=${q.window_ended}` }),
        el("td", { "data-field": "asa", text: q.asa_ms == null ? "—" : clock(q.asa_ms) }),
        el("td", { "data-field": "abandon_rate", text: percent(q.abandon_rate) }),
        el("td", { "data-field": "staffed", text: `${working}/${ready}` }));
    }));
    const actor = ACTORS.includes(board.me.role);
    const agents = [...board.agents.values()].sort((a, b) =>
      a.agent_id.localeCompare(b.agent_id, undefined, { numeric: true }));
    board.root.querySelector("#board-agents").replaceChildren(...agents.map((a) => el("tr",
      { "data-agent": a.agent_id, "data-state": a.state || "" },
      el("td", { text: a.agent_id }),
      el("td", { text: a.extension || "—" }),
      el("td", {}, el("span", { className: "state", "data-state": a.state || "",
        text: both(STATE_NAMES[a.state]) || a.state || "—" })),
      el("td", { text: a.reason ? (both(REASON_NAMES[a.reason]) || a.reason) : "—" }),
      el("td", { className: "timer", "data-field": "in_state", "data-since": String(a.since),
        text: clock(now - a.since) }),
      el("td", { "data-field": "call", "data-call": a.call_id || "" }, a.call_id || "—",
        ...callMarks(a.call_id)),
      el("td", { "data-field": "queue", text: a.queue || "—" }),
      el("td", { className: "board-actions" }, ...(actor ? actions(a) : [])))));
  }

  function callMarks(callId) {
    const marks = callId && board.calls.get(callId);
    if (!marks) return [];
    const out = [];
    if (marks.held) out.push(el("span", { className: "mark", "data-mark": "held", text: t("held") }));
    if (marks.monitor) {
      out.push(el("span", { className: "mark", "data-mark": "monitored",
        text: `${t(marks.monitor.mode) || marks.monitor.mode} ${t("by")} ${marks.monitor.by}` }));
    }
    return out;
  }

  function button(label, action, handler, extra = {}) {
    return el("button", { type: "button", text: t(label), "data-action": action,
      onclick: handler, ...extra });
  }

  function actions(a) {
    const out = [];
    if (a.state === "logged_out") return out;
    const reason = el("select", { "data-role": "reason",
      onchange: () => board.reasons.set(a.agent_id, reason.value) },
      ...Object.entries(REASON_NAMES).map(([value, pair]) => el("option", { value, text: both(pair) })));
    if (board.reasons.has(a.agent_id)) reason.value = board.reasons.get(a.agent_id);
    out.push(reason, button("notReady", "not_ready",
      () => agentCommand(a.agent_id, "state", { state: "not_ready", reason: reason.value })));
    if (a.state !== "ready") {
      out.push(button("ready", "ready",
        () => agentCommand(a.agent_id, "state", { state: "ready" })));
    }
    out.push(button("logout", "logout", () => agentCommand(a.agent_id, "logout")));
    if (a.call_id && a.state === "on_call") {
      const mine = board.monitor && board.monitor.call_id === a.call_id;
      for (const mode of ["listen", "whisper", "barge"]) {
        const current = mine && board.monitor.mode === mode;
        out.push(button(mode, mode, () => monitor(a.call_id, mode),
          { className: current ? "active" : "", disabled: current }));
      }
      if (mine) out.push(button("stop", "stop", () => stopMonitor()));
      // force release asks for a second click within 5 s (kept across re-renders)
      const armed = board.armed && board.armed.call_id === a.call_id &&
        board.armed.until > Date.now();
      out.push(button(armed ? "confirm" : "release", "release", () => {
        if (armed) { board.armed = null; forceRelease(a.call_id); return; }
        board.armed = { call_id: a.call_id, until: Date.now() + 5000 };
        render();
      }, { className: "danger", "data-armed": String(Boolean(armed)) }));
    }
    return out;
  }

  function tick() {
    if (!board.root) return;
    const now = Date.now();
    for (const cell of board.root.querySelectorAll('[data-field="in_state"]')) {
      cell.textContent = clock(now - Number(cell.dataset.since));
    }
    for (const row of board.root.querySelectorAll("tr[data-queue]")) {
      const q = board.queues.get(row.dataset.queue);
      if (!q) continue;
      const waits = [...q.waiting.values()].map((w) => now - w.since);
      row.querySelector('[data-field="longest"]').textContent =
        waits.length ? clock(Math.max(...waits)) : "—";
    }
  }

  // -- actions ---------------------------------------------------------------------------------

  async function act(what, work) {
    note("");
    try {
      const result = await work();
      note(`${t("done")}: ${what}`, false);
      return result;
    } catch (e) {
      note(`${what}: ${e.message}`, true);
      return null;
    }
  }

  function agentCommand(agentId, verb, body) {
    const what = `${agentId} ${body ? body.state + (body.reason ? ` (${body.reason})` : "") : verb}`;
    return act(what, async () => {
      const agent = await call("POST", `/api/supervision/agents/${encodeURIComponent(agentId)}/${verb}`,
        body);
      onFeed({ type: "state", agent_id: agent.agent_id, state: agent.state, reason: agent.reason,
        call_id: agent.call_id, extension: agent.extension, since_ms: agent.state_since_ms });
      return agent;
    });
  }

  function myExtension() {
    const input = board.root.querySelector("#board-extension");
    return input ? input.value.trim() : "";
  }

  async function monitor(callId, mode) {
    const body = { mode };
    if (myExtension()) body.extension = myExtension();
    const reply = await act(`${t(mode)} ${callId}`, () =>
      call("POST", `/api/supervision/calls/${encodeURIComponent(callId)}/monitor`, body));
    if (reply) board.monitor = { call_id: callId, leg_id: reply.leg_id, mode };
    render();
  }

  async function stopMonitor() {
    const m = board.monitor;
    if (!m) return;
    await act(`${t("stop")} ${m.call_id}`, () => call("POST",
      `/api/supervision/calls/${encodeURIComponent(m.call_id)}/monitor/stop`, { leg_id: m.leg_id }));
    board.monitor = null;
    render();
  }

  async function forceRelease(callId) {
    await act(`${t("release")} ${callId}`, () =>
      call("POST", `/api/supervision/calls/${encodeURIComponent(callId)}/release`));
    if (board.monitor && board.monitor.call_id === callId) board.monitor = null;
    render();
  }

  // -- follow the desk's sign-in ---------------------------------------------------------------

  async function follow() {
    const view = document.getElementById("desk-view");
    if (!view) return;
    const shown = !view.hidden;
    if (shown && !board.root && board.closed) {
      board.closed = false;  // one mount at a time
      try {
        const me = await call("GET", "/api/me");
        if (WATCHERS.includes(me.role) && !view.hidden) { mount(me); return; }
      } catch (_) { /* not signed in after all */ }
      board.closed = true;
    } else if (!shown && board.root) {
      unmount();
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const view = document.getElementById("desk-view");
    if (!view) return;
    new MutationObserver(follow).observe(view, { attributes: true, attributeFilter: ["hidden"] });
    follow();
  });
})();
