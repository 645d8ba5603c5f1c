// Hotline desk: the in-call panel (hold with the service standard's reminders, mute, transfer
// and consult, conference, keypad, hang up), the customer's contact history, click-to-dial.
// Every action is a REST call on /api/calls/{id}/…; the gateway's answer (or refusal) shows.
"use strict";

const KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#"];

function callPath(action) {
  return `/api/calls/${encodeURIComponent(desk.currentCall)}/${action}`;
}

async function callCommand(action, body, method) {
  showError("call-error", "");
  try {
    return await api(method || "POST", callPath(action), body);
  } catch (e) {
    if (e.status === 401) leaveDesk();
    else showError("call-error", e.message);
    return null;
  }
}

function connected() {
  return Boolean(desk.call) && $("call-panel").dataset.status === "connected";
}

function renderCallControls() {
  const live = connected();
  show($("call-controls"), live);
  if (!desk.call) {
    for (const id of ["hold-bar", "mute-bar", "consult-bar", "parties-box", "keypad"]) show($(id), false);
    return;
  }
  const c = desk.call;
  const hold = $("hold-btn");
  hold.dataset.held = String(c.held);
  hold.dataset.i18n = c.held ? "ctl.resume" : "ctl.hold";
  hold.textContent = t(hold.dataset.i18n);
  const mute = $("mute-btn");
  mute.dataset.muted = String(c.muted);
  mute.dataset.i18n = c.muted ? "ctl.unmute" : "ctl.mute";
  mute.textContent = t(mute.dataset.i18n);
  show($("hold-bar"), live && c.held);
  show($("mute-bar"), live && c.muted);
  show($("consult-bar"), live && Boolean(c.consult));
  if (c.consult) $("consult-target").textContent = t("consult.on", { target: c.consult.target });
  show($("parties-box"), live && c.parties.size > 0);
  $("parties").replaceChildren(...[...c.parties.entries()].map(([leg, party]) => {
    const li = el("li", `${party} `);
    const remove = el("button", t("conf.remove"), { type: "button", "data-leg": leg });
    remove.addEventListener("click", () => removeParty(leg));
    li.appendChild(remove);
    return li;
  }));
  if (!live) show($("keypad"), false);
}

// -- hold: the caller hears music; remind at 15 s, warn at 30 s (service standards) -----------

function setHeld(held) {
  if (!desk.call) return;
  desk.call.held = held;
  desk.call.holdStart = held ? (desk.call.holdStart || Date.now()) : null;
  renderCallControls();
  tickHold();
}

function tickHold() {
  const bar = $("hold-bar");
  if (!desk.call || !desk.call.holdStart) { bar.dataset.level = ""; return; }
  const elapsed = Date.now() - desk.call.holdStart;
  $("hold-timer").textContent = clock(elapsed);
  const cfg = desk.config || { hold_remind_s: 15, hold_warn_s: 30 };
  const level = elapsed >= cfg.hold_warn_s * 1000 ? "warn"
    : elapsed >= cfg.hold_remind_s * 1000 ? "remind" : "";
  if (bar.dataset.level !== level) {
    bar.dataset.level = level;
    $("hold-alert").textContent = level ? t(`hold.${level}`) : "";
  }
}

async function toggleHold() {
  const held = desk.call && desk.call.held;
  if (await callCommand(held ? "resume" : "hold")) setHeld(!held);
}

async function toggleMute() {
  const muted = !(desk.call && desk.call.muted);
  if (await callCommand("mute", { muted })) { desk.call.muted = muted; renderCallControls(); }
}

async function hangUp() { await callCommand("hangup"); }

async function sendKey(digit) { await callCommand("digits", { digits: digit }); }

// -- consult and conference -------------------------------------------------------------------

async function endConsult(action) {
  const reply = await callCommand(`consult/${action}`);
  if (!reply || !desk.call) return;
  if (action === "complete") handedOver();
  else if (action === "cancel") { desk.call.consult = null; setHeld(false); }
  else renderCallControls();
}

async function removeParty(leg) {
  if (await callCommand(`conference/${encodeURIComponent(leg)}`, undefined, "DELETE")) {
    desk.call.parties.delete(leg);
    renderCallControls();
  }
}

// The caller is with someone else now: the agent's part is over and wrap-up begins.
function handedOver() {
  callEnded({ call_id: desk.currentCall, reason: "transferred" });
}

/** Call-control steps from the feed: what the phone did, or the gateway confirms. */
function onCallStep(msg) {
  if (msg.type === "transferred" && msg.to_agent_id === desk.me.agent_id &&
      msg.call_id !== desk.currentCall) {
    // a colleague handed this call to us: pop it as the CDR and the customer card have it
    restoreCall({ call_id: msg.call_id, state: "on_call" });
    return;
  }
  if (!desk.call || msg.call_id !== desk.currentCall) return;
  const c = desk.call;
  if (msg.type === "held") setHeld(true);
  else if (msg.type === "resumed") setHeld(false);
  else if (msg.type === "consult_started") {
    c.consult = { target: msg.target, leg: msg.consult_leg_id };
    renderCallControls();
  } else if (msg.type === "consult_ended") {
    c.consult = null;
    if (msg.outcome === "completed") handedOver(); else renderCallControls();
  } else if (msg.type === "party_joined") { c.parties.set(msg.leg_id, msg.party); renderCallControls(); }
  else if (msg.type === "party_left") { c.parties.delete(msg.leg_id); renderCallControls(); }
  else if (msg.type === "transferred" && msg.from_agent_id === desk.me.agent_id) handedOver();
}

// -- the transfer / conference dialog ---------------------------------------------------------

async function openTransferDialog(mode) {
  const dialog = $("transfer-dialog");
  dialog.dataset.mode = mode;
  $("transfer-title").textContent = t(mode === "conference" ? "conf.title" : "xfer.title");
  show($("transfer-kind"), mode !== "conference");
  $("target-kind").querySelector('option[value="queue"]').disabled = mode === "conference";
  if (mode === "conference" && $("target-kind").value === "queue") $("target-kind").value = "extension";
  $("transfer-status").textContent = "";
  $("target-input").value = "";
  pickTargetKind();
  show(dialog, true);
  try {
    const { agents, queues } = await api("GET", "/api/desk/directory");
    $("agent-list").replaceChildren(...agents.filter((a) => a.agent_id !== desk.me.agent_id)
      .map((a) => {
        const li = el("li");
        const pick = el("button", `${a.display_name} · ${a.extension || "—"} · ${label("state", a.state)}`,
          { type: "button", "data-extension": a.extension, "data-state": a.state });
        pick.disabled = !a.extension || a.state === "logged_out";
        pick.addEventListener("click", () => {
          $("target-kind").value = "extension";
          pickTargetKind();
          $("target-input").value = a.extension;
        });
        li.appendChild(pick);
        return li;
      }));
    $("queue-list").replaceChildren(...queues.map((q) => el("option", `${q.name} (${q.waiting})`,
      { value: q.name })));
  } catch (e) {
    $("transfer-status").textContent = e.message;  // an extension or a number can still be typed
  }
}

function pickTargetKind() {
  const kind = $("target-kind").value;
  show($("agent-pick"), kind === "extension");
  show($("queue-pick"), kind === "queue");
  show($("target-input"), kind !== "queue");
  $("kind-consult").disabled = kind === "queue";
  if (kind === "queue") $("kind-blind").checked = true;
}

function closeTransferDialog() { show($("transfer-dialog"), false); }

async function goTransfer() {
  const mode = $("transfer-dialog").dataset.mode;
  const targetKind = $("target-kind").value;
  const target = targetKind === "queue" ? $("queue-list").value : $("target-input").value.trim();
  const kind = $("kind-consult").checked ? "consult" : "blind";
  const body = mode === "conference" ? { target_kind: targetKind, target }
    : { kind, target_kind: targetKind, target };
  $("transfer-go").disabled = true;
  $("transfer-status").textContent = t("dial.placing");
  const reply = await callCommand(mode === "conference" ? "conference" : "transfer", body);
  $("transfer-go").disabled = false;
  if (!reply) { $("transfer-status").textContent = $("call-error").textContent; return; }
  $("transfer-status").textContent = t("xfer.result", { result: label("result", reply.result) });
  if (reply.result !== "answered" || !desk.call) return;
  closeTransferDialog();
  if (mode === "conference") desk.call.parties.set(reply.leg_id, target);
  else if (kind === "consult") { desk.call.consult = { target, leg: reply.leg_id }; setHeld(true); }
  else { handedOver(); return; }
  renderCallControls();
}

// -- the customer's contact history -----------------------------------------------------------

/** Where a recording's call was on hold (music, not talk): one line per hold, in its times. */
function holdMarks(holds) {
  const list = el("ul", null, { class: "hold-marks" });
  for (const h of holds) {
    list.appendChild(el("li", t("history.held", { from: clock(h.start_ms), to: clock(h.end_ms) }),
      { "data-start-ms": String(h.start_ms), "data-end-ms": String(h.end_ms) }));
  }
  return list;
}

async function loadHistory(customerId, target) {
  let doc;
  try {
    doc = await api("GET", `/api/customers/${customerId}/history`);
  } catch (_) { return; }
  const list = target || $("history");
  if (!target && (!desk.customer || desk.customer.id !== customerId)) return;  // another call
  const items = doc.contacts.filter((c) => c.call_id !== desk.currentCall).map((c) => {
    const when = c.started_at ? new Date(c.started_at).toLocaleString(currentLanguage) : "";
    const parts = [when, t(c.direction === "outbound" ? "history.out" : "history.in"),
      c.agent_id || "—", c.talk_ms == null ? "" : clock(c.talk_ms),
      c.disposition ? dispositionLabel(c.disposition.code) : ""];
    const li = el("li", parts.filter(Boolean).join(" · "), { "data-call-id": c.call_id });
    if (c.disposition && c.disposition.notes) li.appendChild(el("div", c.disposition.notes, { class: "muted" }));
    for (const r of c.recordings) {
      const item = el("div", `${t("history.recording")} (${r.status})` +
        (r.playable ? "" : ` — ${t("history.no_play")}`),
      { class: r.playable ? "recording" : "recording muted", "data-playable": String(r.playable) });
      if (r.playable) {  // the CRM checks again, audits the play and streams it from the recorder
        item.appendChild(el("audio", null, { controls: "", preload: "none",
          "data-recording-id": r.recording_id,
          src: `/api/cdrs/${encodeURIComponent(c.call_id)}/recordings/${encodeURIComponent(r.recording_id)}` }));
        item.appendChild(holdMarks(r.holds || []));
      }
      li.appendChild(item);
    }
    return li;
  });
  list.replaceChildren(...(items.length ? items : [el("li", t("history.none"), { class: "muted" })]));
}

// -- click-to-dial ----------------------------------------------------------------------------

let dialReady = false;

function setupDial() {
  show($("dial-card"), Boolean(desk.me.extension));
  $("dial-class").textContent = t("dial.class", { cls: label("class", desk.config.dial_class) });
  $("dial-btn").disabled = !desk.me.extension;
  if (dialReady) return;
  dialReady = true;
  $("dial-keypad").replaceChildren(...KEYS.map((k) => {
    const key = el("button", k, { type: "button", "data-digit": k });
    key.addEventListener("click", () => { $("dial-number").value += k; });
    return key;
  }));
  $("dial-btn").addEventListener("click", () => dial($("dial-number").value, null));
  $("customer-dial-btn").addEventListener("click",
    () => desk.customer && dial(desk.customer.phone, desk.customer));
  $("lookup-form").addEventListener("submit", lookUp);
  $("lookup-dial-btn").addEventListener("click",
    () => desk.found && dial(desk.found.phone, desk.found));
}

// -- the customer card outside a call: look a customer up, see their history, dial them -----

async function lookUp(event) {
  event.preventDefault();
  showError("lookup-error", "");
  show($("lookup-result"), false);
  const phone = $("lookup-phone").value.trim();
  if (!phone) return;
  try {
    desk.found = await api("GET", `/api/customers?phone=${encodeURIComponent(phone)}`);
  } catch (e) {
    desk.found = null;
    showError("lookup-error", e.message);
    return;
  }
  const c = desk.found;
  $("lookup-name").textContent = c.name;
  $("lookup-number").textContent = c.phone;
  $("lookup-vip").textContent = c.vip_tier > 0 ? `VIP ${c.vip_tier}` : t("customer.standard");
  $("lookup-notes").textContent = c.notes || "";
  show($("lookup-dial-btn"), Boolean(desk.me && desk.me.extension));
  show($("lookup-result"), true);
  await loadHistory(c.id, $("lookup-history"));
}

async function dial(number, customer) {
  $("dial-status").textContent = t("dial.placing");
  try {
    const body = { number };
    if (customer) body.customer_id = customer.id;
    const reply = await api("POST", "/api/dial", body);
    $("dial-status").textContent = t("xfer.result", { result: label("result", reply.result) });
    if (reply.result === "answered") {
      popCall({ call_id: reply.call_id, ani: reply.number, outbound: true, customer });
      callConnected({ call_id: reply.call_id, queue: "" });
    }
  } catch (e) {
    if (e.status === 401) leaveDesk();
    $("dial-status").textContent = e.message;
  }
}

// -- wiring -----------------------------------------------------------------------------------

function setupCallPanel() {
  $("hold-btn").addEventListener("click", toggleHold);
  $("mute-btn").addEventListener("click", toggleMute);
  $("hangup-btn").addEventListener("click", hangUp);
  $("transfer-btn").addEventListener("click", () => openTransferDialog("transfer"));
  $("conference-btn").addEventListener("click", () => openTransferDialog("conference"));
  $("keypad-btn").addEventListener("click", () => show($("keypad"), $("keypad").hidden));
  $("consult-complete").addEventListener("click", () => endConsult("complete"));
  $("consult-swap").addEventListener("click", () => endConsult("swap"));
  $("consult-cancel").addEventListener("click", () => endConsult("cancel"));
  $("target-kind").addEventListener("change", pickTargetKind);
  $("transfer-go").addEventListener("click", goTransfer);
  $("transfer-close").addEventListener("click", closeTransferDialog);
  $("keypad").replaceChildren(...KEYS.map((k) => {
    const key = el("button", k, { type: "button", "data-digit": k });
    key.addEventListener("click", () => sendKey(k));
    return key;
  }));
}
