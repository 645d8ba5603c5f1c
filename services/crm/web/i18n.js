// Hotline desk: the two catalogues (zh-CN, en) and the helpers that apply them. The language is
// the user's setting (/api/me -> language), else the browser's; every visible string of the
// desk comes from here: elements carry data-i18n (text), data-i18n-placeholder, data-i18n-title.
"use strict";

const I18N = {
  "zh-CN": {
    "app.title": "Hotline 座席", "brand.sub": "呼叫中心",
    "login.title": "座席登录", "login.username": "用户名", "login.password": "密码",
    "login.submit": "登录", "login.wrong": "用户名或密码错误", "login.throttled": "尝试次数过多:{msg}",
    "top.ext": "分机", "top.feed": "实时连接", "top.signout": "退出", "top.lock": "锁屏",
    "top.language": "语言",
    "seat.state": "状态", "seat.ready": "就绪", "seat.notready": "示忙", "seat.reason": "示忙原因",
    "seat.phone_login": "登录话机", "seat.phone_logout": "登出话机",
    "state.logged_out": "未登录", "state.ready": "就绪", "state.not_ready": "示忙",
    "state.ringing": "振铃", "state.on_call": "通话中", "state.wrap_up": "话后处理",
    "state.unspecified": "未知",
    "reason.meal": "用餐", "reason.meeting": "会议", "reason.training": "培训",
    "reason.restroom": "洗手间", "reason.helping": "协助同事", "reason.break": "休息",
    "reason.other": "其他", "reason.login": "刚登录", "reason.no-answer": "未应答",
    "end.caller_hangup": "客户挂机", "end.agent_hangup": "座席挂机", "end.far_end": "对端释放",
    "end.system": "系统", "end.rejected": "拒绝", "end.error": "故障", "end.timeout": "超时",
    "end.transferred": "已转接", "end.unspecified": "结束",
    "call.incoming": "来电振铃", "call.connected": "通话中", "call.ended": "已结束:{reason}",
    "call.outbound": "外呼", "call.caller": "主叫号码", "call.queue": "队列", "call.dialled": "被叫",
    "call.unknown_caller": "未知来电", "customer.phone": "电话", "customer.vip": "VIP 等级",
    "customer.email": "邮箱", "customer.notes": "备注", "customer.standard": "普通",
    "customer.dial": "拨打客户",
    "ctl.hold": "保持", "ctl.resume": "恢复通话", "ctl.mute": "静音", "ctl.unmute": "取消静音",
    "ctl.transfer": "转接", "ctl.conference": "会议", "ctl.keypad": "拨号盘", "ctl.hangup": "挂机",
    "hold.on": "保持中", "hold.remind": "请向客户致歉并说明进度(已保持 15 秒)",
    "hold.warn": "保持已超过 30 秒:请立即恢复通话", "mute.on": "已静音",
    "consult.on": "咨询中:{target}", "consult.complete": "完成转接", "consult.swap": "切换通话",
    "consult.cancel": "取消咨询", "conf.parties": "会议成员", "conf.remove": "移出",
    "xfer.title": "转接", "conf.title": "加入会议", "xfer.agents": "座席", "xfer.queues": "队列",
    "xfer.number": "号码", "xfer.kind": "方式", "xfer.blind": "直接转接", "xfer.consult": "咨询转接",
    "xfer.target": "目标", "xfer.go": "确定", "xfer.close": "关闭", "xfer.result": "结果:{result}",
    "target.extension": "分机", "target.queue": "队列", "target.number": "外线号码",
    "result.answered": "已接通", "result.no_answer": "无人应答", "result.busy": "忙",
    "result.rejected": "拒绝", "result.unreachable": "无法接通", "result.caller_gone": "客户已挂机",
    "wrap.title": "话后处理", "wrap.remaining": "剩余 {time}", "wrap.code": "处理结果",
    "wrap.notes": "备注", "wrap.follow_up": "需要回访", "wrap.due": "回访时间",
    "wrap.phone": "回访号码", "wrap.submit": "提交", "wrap.ready_now": "立即就绪",
    "wrap.saved": "已保存", "wrap.callback": "已创建回访任务",
    "dial.title": "外呼", "dial.number": "号码", "dial.call": "呼叫", "dial.class": "拨号权限:{cls}",
    "dial.placing": "正在呼叫…", "class.internal": "内部", "class.local": "本地",
    "class.long_distance": "长途", "class.international": "国际",
    "history.title": "客户接触历史", "history.none": "暂无历史记录", "history.in": "呼入",
    "history.out": "外呼", "history.recording": "录音", "history.no_play": "无权收听",
    "history.held": "保持 {from}–{to}",
    "recent.title": "最近通话", "recent.refresh": "刷新", "col.time": "时间", "col.caller": "主叫",
    "col.queue": "队列", "col.agent": "座席", "col.wait": "等待", "col.talk": "通话",
    "col.result": "结果", "col.hold": "保持", "col.disposition": "处理结果",
    "result.abandoned": "放弃", "result.in_progress": "进行中",
    "lock.title": "屏幕已锁定", "lock.hint": "输入 {name} 的密码解锁", "lock.unlock": "解锁",
    "callbacks.title": "我的回访任务", "callbacks.none": "暂无回访任务", "callbacks.done": "已回访",
    "err.locked": "屏幕已锁定", "lookup.title": "客户查询", "lookup.find": "查询",
    "err.400": "输入有误", "err.403": "无权操作", "err.404": "未找到", "err.409": "当前无法执行",
    "err.423": "屏幕已锁定", "err.429": "操作过于频繁", "err.501": "暂不支持",
    "err.502": "系统错误", "err.503": "服务暂不可用", "err.504": "服务响应超时",
  },
  en: {
    "app.title": "Hotline Agent Desktop", "brand.sub": "Call Center",
    "login.title": "Agent sign-in", "login.username": "Username", "login.password": "Password",
    "login.submit": "Sign in", "login.wrong": "Wrong username or password",
    "login.throttled": "Too many attempts: {msg}",
    "top.ext": "Ext.", "top.feed": "Live feed", "top.signout": "Sign out", "top.lock": "Lock",
    "top.language": "Language",
    "seat.state": "State", "seat.ready": "Ready", "seat.notready": "Not Ready",
    "seat.reason": "Not-ready reason", "seat.phone_login": "Log in to phone",
    "seat.phone_logout": "Log out of phone",
    "state.logged_out": "Logged out", "state.ready": "Ready", "state.not_ready": "Not Ready",
    "state.ringing": "Ringing", "state.on_call": "On call", "state.wrap_up": "Wrap-up",
    "state.unspecified": "Unknown",
    "reason.meal": "Meal", "reason.meeting": "Meeting", "reason.training": "Training",
    "reason.restroom": "Restroom", "reason.helping": "Helping a colleague", "reason.break": "Break",
    "reason.other": "Other", "reason.login": "Just logged in", "reason.no-answer": "No answer",
    "end.caller_hangup": "Caller hung up", "end.agent_hangup": "Agent hung up",
    "end.far_end": "Far end", "end.system": "System", "end.rejected": "Rejected",
    "end.error": "Error", "end.timeout": "Timeout", "end.transferred": "Transferred",
    "end.unspecified": "Ended",
    "call.incoming": "Incoming call", "call.connected": "Connected", "call.ended": "Ended: {reason}",
    "call.outbound": "Outbound call", "call.caller": "Caller", "call.queue": "Queue",
    "call.dialled": "Dialled", "call.unknown_caller": "Unknown caller",
    "customer.phone": "Phone", "customer.vip": "VIP tier", "customer.email": "E-mail",
    "customer.notes": "Notes", "customer.standard": "Standard", "customer.dial": "Call customer",
    "ctl.hold": "Hold", "ctl.resume": "Resume", "ctl.mute": "Mute", "ctl.unmute": "Unmute",
    "ctl.transfer": "Transfer", "ctl.conference": "Conference", "ctl.keypad": "Keypad",
    "ctl.hangup": "Hang up",
    "hold.on": "On hold", "hold.remind": "Update the caller: 15 s on hold",
    "hold.warn": "On hold for more than 30 s: resume the call now", "mute.on": "Muted",
    "consult.on": "Consulting {target}", "consult.complete": "Complete transfer",
    "consult.swap": "Swap", "consult.cancel": "Cancel consult", "conf.parties": "Parties",
    "conf.remove": "Remove",
    "xfer.title": "Transfer", "conf.title": "Add to conference", "xfer.agents": "Agents",
    "xfer.queues": "Queues", "xfer.number": "Number", "xfer.kind": "How",
    "xfer.blind": "Blind", "xfer.consult": "Consult first", "xfer.target": "Target",
    "xfer.go": "Go", "xfer.close": "Close", "xfer.result": "Result: {result}",
    "target.extension": "Extension", "target.queue": "Queue", "target.number": "Outside number",
    "result.answered": "Answered", "result.no_answer": "No answer", "result.busy": "Busy",
    "result.rejected": "Rejected", "result.unreachable": "Unreachable",
    "result.caller_gone": "Caller hung up",
    "wrap.title": "After-call work", "wrap.remaining": "{time} left", "wrap.code": "Disposition",
    "wrap.notes": "Notes", "wrap.follow_up": "Needs follow-up", "wrap.due": "Call back at",
    "wrap.phone": "Call back on", "wrap.submit": "Submit", "wrap.ready_now": "Ready now",
    "wrap.saved": "Saved", "wrap.callback": "Callback task created",
    "dial.title": "Dial", "dial.number": "Number", "dial.call": "Call",
    "dial.class": "Dialling: {cls}", "dial.placing": "Calling…", "class.internal": "internal",
    "class.local": "local", "class.long_distance": "long distance",
    "class.international": "international",
    "history.title": "Contact history", "history.none": "No earlier contacts",
    "history.in": "Inbound", "history.out": "Outbound", "history.recording": "Recording",
    "history.no_play": "not yours to play", "history.held": "on hold {from}–{to}",
    "recent.title": "Recent calls", "recent.refresh": "Refresh", "col.time": "Time",
    "col.caller": "Caller", "col.queue": "Queue", "col.agent": "Agent", "col.wait": "Wait",
    "col.talk": "Talk", "col.result": "Result", "col.hold": "Hold",
    "col.disposition": "Disposition", "result.abandoned": "Abandoned",
    "result.in_progress": "In progress",
    "lock.title": "Screen locked", "lock.hint": "Enter {name}'s password to unlock",
    "lock.unlock": "Unlock", "callbacks.title": "My callbacks", "callbacks.none": "No callbacks",
    "callbacks.done": "Done",
    "err.locked": "Screen locked", "lookup.title": "Find a customer", "lookup.find": "Find",
    "err.400": "Check the input", "err.403": "Not allowed", "err.404": "Not found",
    "err.409": "Not possible now", "err.423": "Screen locked", "err.429": "Too many attempts",
    "err.501": "Not available yet", "err.502": "System error", "err.503": "Service unavailable",
    "err.504": "No answer in time",
  },
};

const LANGUAGES = Object.keys(I18N);
let currentLanguage = "en";

/** The language to show: the user's setting, else the browser's first we have. */
function pickLanguage(setting) {
  if (setting && I18N[setting]) return setting;
  for (const wanted of navigator.languages || [navigator.language || "en"]) {
    if (wanted.toLowerCase().startsWith("zh")) return "zh-CN";
    if (wanted.toLowerCase().startsWith("en")) return "en";
  }
  return "en";
}

/** The string for `key` in the current language, with {name} placeholders filled. */
function t(key, vars) {
  const text = (I18N[currentLanguage] && I18N[currentLanguage][key]) || I18N.en[key] || key;
  return vars ? text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? vars[name] : `{${name}}`))
    : text;
}

/** A label for a code of a family ("reason", "state", ...): the catalogue's, else the code. */
function label(family, code) {
  const key = `${family}.${code}`;
  return (I18N[currentLanguage][key] || I18N.en[key]) ? t(key) : code;
}

function applyI18n(root) {
  const scope = root || document;
  for (const el of scope.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of scope.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of scope.querySelectorAll("[data-i18n-title]")) {
    el.title = t(el.dataset.i18nTitle);
    el.setAttribute("aria-label", el.title);
  }
}

function setLanguage(language) {
  currentLanguage = I18N[language] ? language : "en";
  document.documentElement.lang = currentLanguage;
  document.title = t("app.title");
  applyI18n(document);
}
