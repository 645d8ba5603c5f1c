// Hotline desk: after-call work. When the agent's call ends the disposition form opens with the
// ACW timer (HOTLINE_ACW_S, from /api/desk/config); at zero the desk goes Ready, "Ready now"
// does so at once, and filing the form ends the wrap-up (the server asks the ACD for Ready).
"use strict";

let wrapUpReady = false;

function setupWrapUp() {
  $("disposition-code").replaceChildren(...desk.config.dispositions.map(
    (d) => el("option", d[currentLanguage] || d.en, { value: d.code })));
  if (wrapUpReady) return;
  wrapUpReady = true;
  $("wrapup-form").addEventListener("submit", submitDisposition);
  $("ready-now-btn").addEventListener("click", readyNow);
  $("follow-up").addEventListener("change", () => show($("follow-up-fields"), $("follow-up").checked));
}

function localInputValue(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function startWrapUp(callId, sinceMs) {
  if (desk.wrapCall === callId && !$("wrapup-card").hidden) return;
  desk.wrapCall = callId;
  const start = sinceMs || Date.now();
  desk.acwEnd = start + (desk.config ? desk.config.acw_s : 60) * 1000;
  $("wrapup-form").reset();
  setupWrapUp();
  show($("follow-up-fields"), false);
  $("follow-up-due").value = localInputValue(new Date(Date.now() + 24 * 3600 * 1000));
  $("follow-up-phone").value = (desk.customer && desk.customer.phone) || (desk.call && desk.call.ani) || "";
  showError("wrapup-error", "");
  show($("wrapup-card"), true);
  tickWrapUp();
}

function onStateForWrapUp(state) {
  if (state === "wrap_up") {
    if (desk.currentCall && desk.wrapCall !== desk.currentCall) startWrapUp(desk.currentCall, desk.stateSince);
  } else if (desk.acwEnd) {
    desk.acwEnd = null;  // the wrap-up is over (Ready, Not Ready); the form may still be filed
    $("acw-timer").textContent = "";
    $("acw-timer").dataset.running = "false";
  }
}

function tickWrapUp() {
  if (!desk.acwEnd) return;
  const left = desk.acwEnd - Date.now();
  const timer = $("acw-timer");
  timer.dataset.running = "true";
  timer.textContent = t("wrap.remaining", { time: clock(left) });
  if (left <= 0) {
    desk.acwEnd = null;
    timer.dataset.running = "false";
    if (desk.state === "wrap_up") goReady();
  }
}

async function readyNow() {
  desk.acwEnd = null;
  await goReady();
}

function finishWrapUpForNewCall() {
  desk.acwEnd = null;
  desk.wrapCall = null;
  show($("wrapup-card"), false);
}

async function submitDisposition(event) {
  event.preventDefault();
  showError("wrapup-error", "");
  const body = { code: $("disposition-code").value, notes: $("disposition-notes").value };
  if ($("follow-up").checked) {
    const due = new Date($("follow-up-due").value);
    if (Number.isNaN(due.getTime())) { showError("wrapup-error", t("wrap.due")); return; }
    body.follow_up = { due_at: due.toISOString(), phone: $("follow-up-phone").value };
  }
  $("disposition-submit").disabled = true;
  try {
    const reply = await api("POST",
      `/api/calls/${encodeURIComponent(desk.wrapCall)}/disposition`, body);
    if (reply.agent) applyAgent(reply.agent);
    desk.acwEnd = null;
    $("dial-status").textContent = reply.callback ? t("wrap.callback") : t("wrap.saved");
    forgetCall();
    desk.wrapCall = null;
    refreshCalls();
    refreshCallbacks();
  } catch (e) {
    if (e.status === 401) leaveDesk();
    else showError("wrapup-error", e.message);
  } finally {
    $("disposition-submit").disabled = false;
  }
}

async function refreshCallbacks() {
  if (!desk.me || !desk.me.agent_id || desk.locked) { show($("callbacks-card"), false); return; }
  try {
    const { callbacks } = await api("GET", "/api/callbacks");
    show($("callbacks-card"), true);
    $("callbacks").replaceChildren(...(callbacks.length ? callbacks.map(callbackItem)
      : [el("li", t("callbacks.none"), { class: "muted" })]));
  } catch (_) { /* the card stays as it was */ }
}

function callbackItem(c) {
  const li = el("li",
    `${new Date(c.due_at).toLocaleString(currentLanguage)} · ${c.phone}${c.notes ? ` · ${c.notes}` : ""} `,
    { "data-callback-id": String(c.id) });
  const done = el("button", t("callbacks.done"), { type: "button", class: "link" });
  done.addEventListener("click", async () => {
    try { await api("POST", `/api/callbacks/${c.id}/done`); } catch (e) { deskError(e.message); }
    refreshCallbacks();
  });
  li.appendChild(done);
  return li;
}
