// tasklab web UI: submit forms per method, a live task table (server-sent events),
// a header strip with queue depth and workers. Every value from the server or the
// user is put into the page as text (textContent), never as HTML.
"use strict";

const I18N = {
  en: {
    skip: "Skip to the task table", subtitle: "Asynchronous tasks through Celery, RabbitMQ (direct) or synchronously",
    connecting: "connecting…", live: "live", reconnecting: "reconnecting…", overview: "Overview",
    inProgress: "In progress", waiting: "Waiting", queues: "Broker queues (ready / unacked)", workers: "Workers and consumers",
    brokerAge: "as the broker counted them {s} s ago (its figures lag a few seconds)",
    celeryTitle: "Celery", recommended: "recommended", rabbitTitle: "RabbitMQ", direct: "direct",
    syncTitle: "Sync", waits: "waits for the result", sendCelery: "Send via Celery",
    sendRabbit: "Send via RabbitMQ", sendSync: "Send synchronously", duration: "Duration, s", kind: "Kind",
    numbers: "Numbers", failures: "Simulated failures", label: "Label", taskStatus: "Task status",
    method: "Method", status: "Status", all: "all", worker: "Worker", attempts: "Attempts",
    queueWait: "Queue wait", runTime: "Run time", created: "Created", actions: "Actions",
    noTasks: "No tasks match.", newer: "← Newer", older: "Older →", close: "Close", cancel: "Cancel",
    details: "Details of task", page: "{from}–{to} of {total}", accepted: "Task {num} accepted: {status}",
    finished: "Task {num}: {status}", stillRunning: "Task {num} is still running (the wait ended); it stays in the table.",
    rateLimited: "Too many requests: try again in {s} s.", brokerDown: "The broker is unavailable: {detail}",
    invalid: "Invalid input: {detail}", failedReq: "Request failed ({code}): {detail}", network: "Network error: {detail}",
    cancelled: "Task {num} cancelled.", noWorkers: "none online", statsUnknown: "unknown",
    fParams: "Parameters", fResult: "Result", fError: "Error", fWorker: "Worker", fAttempts: "Attempts",
    fCreated: "Created", fStarted: "Started", fFinished: "Finished", fUpdated: "Updated", fId: "Id", fLabel: "Label",
    online: "online", offline: "offline", onlineUnknown: "online status unknown", noWorkersSeen: "none seen",
    runningDone: "{running} running, {done} done",
    moreOffline: "+{n} more offline in the last hour",
    k8sTitle: "Worker pods on Kubernetes", k8sReady: "{ready} of {desired} ready",
    k8sAuto: "{kind} {name}: {min}–{max} pods, wants {desired}",
    k8sFixed: "fixed count (kubectl scale)", k8sRestarts: "{n} restarts",
    k8sOwned: "an autoscaler owns the count", k8sNoScale: "scaling from the UI is off (api.kubernetes.scaleFromUi)",
    k8sLess: "One pod fewer", k8sMore: "One pod more", k8sTerminating: "terminating",
    sec: "s", syncBadge: "Sync", waitingSync: "Waiting for the result…",
    st_PENDING: "PENDING", st_IN_PROGRESS: "IN_PROGRESS", st_RETRYING: "RETRYING",
    st_DONE: "DONE", st_FAILED: "FAILED", st_CANCELLED: "CANCELLED",
  },
  ru: {
    skip: "Перейти к таблице задач", subtitle: "Асинхронные задачи через Celery, RabbitMQ (напрямую) или синхронно",
    connecting: "подключение…", live: "онлайн", reconnecting: "переподключение…", overview: "Обзор",
    inProgress: "В работе", waiting: "В ожидании", queues: "Очереди брокера (готово / без подтверждения)", workers: "Воркеры и консьюмеры",
    brokerAge: "по подсчёту брокера {s} с назад (его данные отстают на несколько секунд)",
    celeryTitle: "Celery", recommended: "рекомендуется", rabbitTitle: "RabbitMQ", direct: "напрямую",
    syncTitle: "Синхронно", waits: "ждёт результат", sendCelery: "Отправить через Celery",
    sendRabbit: "Отправить через RabbitMQ", sendSync: "Отправить синхронно", duration: "Длительность, с", kind: "Тип",
    numbers: "Числа", failures: "Имитация сбоев", label: "Метка", taskStatus: "Статус задач",
    method: "Метод", status: "Статус", all: "все", worker: "Воркер", attempts: "Попытки",
    queueWait: "Ожидание", runTime: "Выполнение", created: "Создана", actions: "Действия",
    noTasks: "Нет подходящих задач.", newer: "← Новее", older: "Старше →", close: "Закрыть", cancel: "Отменить",
    details: "Подробности задачи", page: "{from}–{to} из {total}", accepted: "Задача {num} принята: {status}",
    finished: "Задача {num}: {status}", stillRunning: "Задача {num} ещё выполняется (ожидание истекло); она остаётся в таблице.",
    rateLimited: "Слишком много запросов: повторите через {s} с.", brokerDown: "Брокер недоступен: {detail}",
    invalid: "Неверные данные: {detail}", failedReq: "Ошибка запроса ({code}): {detail}", network: "Ошибка сети: {detail}",
    cancelled: "Задача {num} отменена.", noWorkers: "нет в сети", statsUnknown: "неизвестно",
    fParams: "Параметры", fResult: "Результат", fError: "Ошибка", fWorker: "Воркер", fAttempts: "Попытки",
    fCreated: "Создана", fStarted: "Начата", fFinished: "Завершена", fUpdated: "Обновлена", fId: "Id", fLabel: "Метка",
    online: "в сети", offline: "не в сети", onlineUnknown: "в сети ли — неизвестно", noWorkersSeen: "пока не было",
    runningDone: "выполняется {running}, готово {done}",
    moreOffline: "ещё {n} не в сети за последний час",
    k8sTitle: "Поды воркеров в Kubernetes", k8sReady: "готово {ready} из {desired}",
    k8sAuto: "{kind} {name}: {min}–{max} подов, хочет {desired}",
    k8sFixed: "число задано вручную (kubectl scale)", k8sRestarts: "перезапусков: {n}",
    k8sOwned: "числом подов управляет автоскейлер", k8sNoScale: "масштабирование из интерфейса выключено (api.kubernetes.scaleFromUi)",
    k8sLess: "На один под меньше", k8sMore: "На один под больше", k8sTerminating: "завершается",
    sec: "с", syncBadge: "Синхронно", waitingSync: "Ждём результат…",
    st_PENDING: "ожидает", st_IN_PROGRESS: "выполняется", st_RETRYING: "повтор",
    st_DONE: "готово", st_FAILED: "ошибка", st_CANCELLED: "отменена",
  },
};
const LANG_KEY = "tasklab.lang";
let lang = localStorage.getItem(LANG_KEY) === "ru" ? "ru" : "en";
function t(key, vars = {}) {
  const s = (I18N[lang][key] ?? I18N.en[key] ?? key);
  return s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ""));
}

const FINAL = new Set(["DONE", "FAILED", "CANCELLED"]);
const LABEL = { celery: "Celery", rabbitmq: "RabbitMQ", sync: "Sync" };
const PAGE_SIZE = 20;
const $ = (sel) => document.querySelector(sel);
const tbody = $("#tasks tbody");
const view = { offset: 0, total: 0, rows: new Map() };   // rows: id -> task, current page only

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = String(text);
  return e;
}
function secs(v) { return v == null ? "" : `${v.toFixed(2)} ${t("sec")}`; }
// A status as shown (the code itself in English); its code stays in the class names.
function stText(status) { return t(`st_${status}`); }
function methodLabel(method) { return method === "sync" ? t("syncBadge") : (LABEL[method] || method); }
// A message element remembers what it says (a key and its values), so that the
// language switch can say it again in the other language.
function say(node, key, vars = {}) {
  node.dataset.key = key; node.dataset.vars = JSON.stringify(vars);
  node.textContent = t(key, vars.status ? { ...vars, status: stText(vars.status) } : vars);
}
function unsay(node) { delete node.dataset.key; delete node.dataset.vars; node.textContent = ""; }
function when(iso) { return iso ? new Date(iso).toLocaleString(lang) : ""; }

// ---- language
function applyLang() {
  document.documentElement.lang = lang;
  document.querySelectorAll("[data-i18n]").forEach((n) => { n.textContent = t(n.dataset.i18n); });
  const btn = $("#lang");
  btn.textContent = lang === "en" ? "RU" : "EN";
  btn.setAttribute("aria-label", lang === "en" ? "Русский" : "English");
  const conn = $("#conn");
  conn.textContent = t(conn.dataset.state);
  document.querySelectorAll("[data-key]").forEach((n) => say(n, n.dataset.key, JSON.parse(n.dataset.vars || "{}")));
  render(); renderOverview(lastOverview); renderCluster(lastCluster);
}
$("#lang").addEventListener("click", () => {
  lang = lang === "en" ? "ru" : "en";
  localStorage.setItem(LANG_KEY, lang);
  applyLang();
});

// ---- errors
// The message (its i18n key and fields) that says why a request failed.
async function failureMessage(resp) {
  const body = await resp.json().catch(() => null);
  let detail = body && body.detail;
  if (Array.isArray(detail)) detail = detail.map((d) => `${(d.loc || []).filter((p) => p !== "body").join(".") || "body"}: ${d.msg}`).join("; ");
  else if (typeof detail !== "string") detail = resp.statusText || "error";
  if (resp.status === 422) return ["invalid", { detail }];
  if (resp.status === 429) return ["rateLimited", { s: resp.headers.get("Retry-After") || "1" }];
  if (resp.status === 503) return ["brokerDown", { detail }];
  return ["failedReq", { code: resp.status, detail }];
}

// ---- forms
document.querySelectorAll("form.card").forEach((form) => {
  form.querySelector(".fields").append($("#fields-template").content.cloneNode(true));
  const ids = form.dataset.method;
  form.querySelectorAll("input, select").forEach((inp) => { inp.id = `${ids}-${inp.name}`; });
  if (form.dataset.method === "sync") form.elements.duration.value = "1";
  const kind = form.elements.kind, nums = form.querySelector(".numbers");
  const toggle = () => { nums.hidden = kind.value !== "process_data"; };
  kind.addEventListener("change", toggle); toggle();
  form.addEventListener("submit", (ev) => { ev.preventDefault(); submit(form); });
});

async function submit(form) {
  const msg = form.querySelector(".msg"), res = form.querySelector(".result"), btn = form.querySelector("button");
  msg.className = "msg"; unsay(msg); if (res) res.textContent = "";
  const f = form.elements;
  const body = { method: form.dataset.method, kind: f.kind.value };
  if (f.duration.value !== "") body.duration = Number(f.duration.value);
  if (f.fail_times.value !== "") body.fail_times = Number(f.fail_times.value);
  if (f.label.value.trim()) body.label = f.label.value.trim();
  if (f.kind.value === "process_data") body.numbers = f.numbers.value.split(/[\s,;]+/).filter(Boolean).map(Number);
  btn.disabled = true; form.setAttribute("aria-busy", "true");
  if (body.method === "sync") { msg.className = "msg busy"; say(msg, "waitingSync"); }
  try {
    const r = await fetch("/api/tasks", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (!r.ok && r.status !== 504) { msg.className = "msg"; say(msg, ...(await failureMessage(r))); return; }
    const task = await r.json();
    upsert(task);
    msg.className = "msg ok";
    if (r.status === 504) say(msg, "stillRunning", { num: task.num });
    else say(msg, FINAL.has(task.status) ? "finished" : "accepted", { num: task.num, status: task.status });
    if (res && FINAL.has(task.status)) res.textContent = JSON.stringify(task.result ?? { error: task.error }, null, 2);
  } catch (e) {
    msg.className = "msg"; say(msg, "network", { detail: e.message });
  } finally {
    btn.disabled = false; form.removeAttribute("aria-busy");
  }
}

// ---- table
function filters() { return { method: $("#f-method").value, status: $("#f-status").value }; }
function matches(task) {
  const f = filters();
  return (!f.method || task.method === f.method) && (!f.status || task.status === f.status);
}
async function load() {
  const f = filters();
  const q = new URLSearchParams({ limit: PAGE_SIZE, offset: view.offset });
  if (f.method) q.append("method", f.method);
  if (f.status) q.append("status", f.status);
  const r = await fetch(`/api/tasks?${q}`);
  if (!r.ok) return;
  const page = await r.json();
  view.total = page.total;
  // A live event may have landed while the list was on its way: keep the newer copy.
  const rows = new Map(page.items.map((x) => [x.id, x]));
  for (const [id, old] of view.rows) {
    const got = rows.get(id);
    if (got && new Date(old.updated_at) > new Date(got.updated_at)) rows.set(id, old);
  }
  view.rows = rows;
  render();
}
function upsert(task) {
  if (!task || !task.id) return;
  const old = view.rows.get(task.id);
  if (old) {
    if (new Date(old.updated_at) > new Date(task.updated_at)) return;
    if (!matches(task)) { view.rows.delete(task.id); view.total -= 1; }
    else view.rows.set(task.id, task);
  } else if (view.offset === 0 && matches(task)) {
    view.rows.set(task.id, task);
    view.total += 1;
  } else return;
  render();
}
function render() {
  const list = [...view.rows.values()].sort((a, b) => b.num - a.num).slice(0, PAGE_SIZE);
  tbody.replaceChildren(...list.map(row));
  $("#empty").hidden = list.length > 0;
  const from = view.total ? view.offset + 1 : 0;
  $("#page").textContent = t("page", { from, to: view.offset + list.length, total: view.total });
  $("#prev").disabled = view.offset === 0;
  $("#next").disabled = view.offset + PAGE_SIZE >= view.total;
}
function row(task) {
  const tr = document.createElement("tr");
  tr.dataset.id = task.id; tr.dataset.status = task.status;
  const num = el("td"); const nb = el("button", task.num, "num-btn");
  nb.type = "button"; nb.setAttribute("aria-label", `${t("details")} ${task.num}`);
  nb.addEventListener("click", () => detail(task.id)); num.append(nb);
  if (task.params && task.params.label) num.append(" ", el("span", task.params.label, "label"));
  const m = el("td"); m.append(el("span", methodLabel(task.method), `badge ${task.method}`));
  tr.append(num, m, el("td", task.kind), el("td", stText(task.status), `st ${task.status}`), el("td", task.worker),
    el("td", task.attempts), el("td", secs(task.queue_wait_seconds)), el("td", secs(task.run_seconds)),
    el("td", new Date(task.created_at).toLocaleTimeString(lang)));
  const act = el("td");
  if (!FINAL.has(task.status)) {
    const b = el("button", t("cancel"), "cancel");
    b.type = "button"; b.setAttribute("aria-label", `${t("cancel")} ${task.num}`);
    b.addEventListener("click", () => cancel(task));
    act.append(b);
  }
  tr.append(act);
  return tr;
}
async function cancel(task) {
  const r = await fetch(`/api/tasks/${encodeURIComponent(task.id)}/cancel`, { method: "POST" });
  if (r.ok) upsert(await r.json()); else tableMessage(...(await failureMessage(r)));
}
function tableMessage(key, vars) {
  let p = $("#table-msg");
  if (!p) { p = el("p", null, "msg"); p.id = "table-msg"; p.setAttribute("role", "alert"); $(".table-head").after(p); }
  say(p, key, vars);
}
async function detail(id) {
  const r = await fetch(`/api/tasks/${encodeURIComponent(id)}`);
  if (!r.ok) { tableMessage(...(await failureMessage(r))); return; }
  const task = await r.json();
  $("#detail-title").textContent = `${t("details")} ${task.num}`;
  const dl = $("#detail-body");
  const fields = [["fId", task.id], ["fLabel", task.params && task.params.label], ["method", methodLabel(task.method)],
    ["kind", task.kind], ["status", stText(task.status)], ["fWorker", task.worker], ["fAttempts", task.attempts],
    ["fParams", JSON.stringify(task.params, null, 2)], ["fResult", task.result ? JSON.stringify(task.result, null, 2) : ""],
    ["fError", task.error], ["fCreated", when(task.created_at)], ["fStarted", when(task.started_at)],
    ["fFinished", when(task.finished_at)], ["fUpdated", when(task.updated_at)]];
  // Only what the task has (no empty rows: a pending task has no worker, result or times yet).
  const shown = fields.filter(([, v]) => v != null && v !== "");
  dl.replaceChildren(...shown.flatMap(([k, v]) => [el("dt", t(k)), el("dd", v)]));
  $("#detail").showModal();
}
$("#f-method").addEventListener("change", () => { view.offset = 0; load(); });
$("#f-status").addEventListener("change", () => { view.offset = 0; load(); });
$("#prev").addEventListener("click", () => { view.offset = Math.max(0, view.offset - PAGE_SIZE); load(); });
$("#next").addEventListener("click", () => { view.offset += PAGE_SIZE; load(); });

// ---- header strip
let lastOverview = null, overviewTimer = null;
async function overview() {
  try {
    const r = await fetch("/api/overview");
    if (r.ok) { lastOverview = await r.json(); renderOverview(lastOverview); }
  } catch (e) { /* the connection badge tells */ }
}
function soonOverview() { clearTimeout(overviewTimer); overviewTimer = setTimeout(overview, 300); }
function renderOverview(o) {
  if (!o) return;
  // Waiting and running: the task store's counts, the same as the table's. The
  // broker's queue figures are labelled as its own, with their age.
  $("#s-inprogress").textContent = String(o.in_progress);
  $("#s-waiting").textContent = String(o.waiting);
  const qv = $("#s-queues-value");
  qv.textContent = o.queues ? o.queues.map((q) => `${q.name}: ${q.ready} / ${q.unacked}`).join("  ·  ") : t("statsUnknown");
  qv.title = o.broker_stats_error || (o.broker_stats_age != null ? t("brokerAge", { s: Math.round(o.broker_stats_age) }) : "");
  const ul = $("#s-workers");
  // Who consumes comes from the broker's management API: without it, say so rather
  // than call every worker offline.
  const known = Boolean(o.queues);
  // Workers that stopped (pods scaled away, replaced by a rollout) stay listed for an
  // hour; past a few, they are summed up in one item (named in its tooltip), so the
  // strip stays short and the forms stay in view on a phone.
  const gone = known ? o.workers.filter((w) => !w.online && w.running === 0) : [];
  const folded = gone.length > 3 ? new Set(gone.map((w) => w.name)) : new Set();
  const items = o.workers.filter((w) => !folded.has(w.name)).map((w) => {
    const state = known ? (w.online ? "online" : "offline") : "onlineUnknown";
    const li = el("li", `${w.name} — ${t(state)}, ${t("runningDone", { running: w.running, done: w.done })}`);
    if (w.online) li.classList.add("online");
    li.dataset.worker = w.name;
    return li;
  });
  if (folded.size) {
    const more = el("li", t("moreOffline", { n: folded.size }));
    more.classList.add("more");
    more.title = [...folded].join("\n");
    items.push(more);
  }
  ul.replaceChildren(...(items.length ? items : [el("li", t(known ? "noWorkers" : "noWorkersSeen"))]));
}
setInterval(overview, 3000);

// ---- the worker Deployments on Kubernetes (hidden elsewhere)
let lastCluster = null;
function age(seconds) {
  if (seconds == null) return "";
  if (seconds < 120) return `${Math.round(seconds)}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  return `${Math.round(seconds / 3600)}h`;
}
async function cluster() {
  try {
    const r = await fetch("/api/cluster");
    if (r.ok) { lastCluster = await r.json(); renderCluster(lastCluster); }
  } catch (e) { /* the connection badge tells */ }
}
function renderCluster(c) {
  const box = $("#k8s");
  if (!c || !c.available) { box.hidden = true; return; }
  box.hidden = false;
  const items = c.workloads.map((w) => {
    const row = el("div", null, "workload");
    row.dataset.workload = w.name;
    const head = el("div", null, "workload-head");
    head.append(el("strong", w.name), el("span", t("k8sReady", { ready: w.ready, desired: w.desired }), "workload-ready"));
    const a = w.autoscaler;
    head.append(el("span", a ? t("k8sAuto", { kind: a.kind, name: a.name, min: a.min_replicas, max: a.max_replicas, desired: a.desired }) : t("k8sFixed"), "workload-auto"));
    const control = el("span", null, "scale");
    const reason = a ? t("k8sOwned") : (c.scale_from_ui ? "" : t("k8sNoScale"));
    for (const [delta, label, key] of [[-1, "−", "k8sLess"], [1, "+", "k8sMore"]]) {
      const b = el("button", label);
      b.type = "button";
      b.dataset.scale = String(delta);
      b.setAttribute("aria-label", `${t(key)}: ${w.name}`);
      b.disabled = Boolean(reason) || w.desired + delta < 0 || w.desired + delta > 20;
      if (reason) b.title = reason;
      b.addEventListener("click", () => scaleWorkload(w.name, w.desired + delta));
      control.append(b);
    }
    head.append(control);
    const pods = el("ul", null, "pods");
    for (const p of w.pods) {
      const li = el("li", `${p.name} · ${p.terminating ? t("k8sTerminating") : p.phase} · ${age(p.age_seconds)}${p.restarts ? " · " + t("k8sRestarts", { n: p.restarts }) : ""}`);
      li.dataset.pod = p.name;
      if (p.ready && !p.terminating) li.classList.add("online");
      pods.append(li);
    }
    row.append(head, pods);
    return row;
  });
  $("#k8s-workloads").replaceChildren(...items);
}
async function scaleWorkload(name, replicas) {
  const msg = $("#k8s-msg");
  msg.textContent = "";
  const r = await fetch(`/api/cluster/workloads/${encodeURIComponent(name)}/scale`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ replicas }),
  });
  const body = await r.json().catch(() => ({}));
  if (r.ok) { lastCluster = body; renderCluster(body); }
  else msg.textContent = typeof body.detail === "string" ? body.detail : `HTTP ${r.status}`;
}
cluster();
setInterval(cluster, 5000);

// ---- live stream
function setConn(state) { const c = $("#conn"); c.dataset.state = state; c.textContent = t(state); }
function connect() {
  const es = new EventSource("/api/events");
  es.addEventListener("hello", () => { setConn("live"); load(); overview(); });   // (re)connected: catch up
  es.addEventListener("task", (e) => { upsert(JSON.parse(e.data)); soonOverview(); });
  es.onerror = () => setConn("reconnecting");   // EventSource retries by itself
}
applyLang();
connect();
