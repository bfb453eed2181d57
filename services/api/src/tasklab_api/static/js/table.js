// The task table: one page of tasks, kept live by the stream's task events; filters,
// a pager (only when there is more than one page), a detail view and cancelling.
import { lang, methodLabel, say, stText, t } from "./i18n.js";
import { $, el, failureMessage, FINAL, secs, statusPill, when } from "./util.js";

const PAGE_SIZE = 20;
const tbody = $("#tasks tbody");
const view = { offset: 0, total: 0, rows: new Map(), loaded: false };   // rows: id -> task, this page

function filters() { return { method: $("#f-method").value, status: $("#f-status").value }; }
function matches(task) {
  const f = filters();
  return (!f.method || task.method === f.method) && (!f.status || task.status === f.status);
}

// The task events heard while the newest load() is on its way (null when none is).
let heard = null;

export async function load() {
  const f = filters();
  const q = new URLSearchParams({ limit: PAGE_SIZE, offset: view.offset });
  if (f.method) q.append("method", f.method);
  if (f.status) q.append("status", f.status);
  const mine = [];
  heard = mine;
  let page = null;
  try {
    const r = await fetch(`/api/tasks?${q}`);
    if (r.ok) page = await r.json();
  } catch { /* the stream's reconnect loads again */ }
  if (heard !== mine) return;   // a newer load() is on its way: its list wins
  heard = null;
  if (!page) return;
  view.total = page.total;
  view.rows = new Map(page.items.map((x) => [x.id, x]));
  view.loaded = true;
  // The list is as it was when the api read it: what the stream told since then goes
  // on top (newer copies, and tasks created meanwhile, which the list does not have).
  for (const task of mine) upsert(task);
  render();
}

export function upsert(task) {
  if (!task || !task.id) return;
  if (heard) heard.push(task);
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

export function render() {
  const list = [...view.rows.values()].sort((a, b) => b.num - a.num).slice(0, PAGE_SIZE);
  tbody.replaceChildren(...list.map(row));
  const f = filters();
  const empty = $("#empty");
  empty.hidden = !view.loaded || list.length > 0;
  empty.textContent = t(f.method || f.status ? "noTasks" : "noTasksYet");
  $("#tasks").classList.toggle("is-empty", list.length === 0);
  // One page: a count, no pager buttons; more: the range and the buttons.
  const paged = view.total > PAGE_SIZE || view.offset > 0;
  $("#pager").hidden = !paged;
  $("#count").hidden = paged || list.length === 0;
  $("#count").textContent = view.total === 1 ? t("count1") : t("count", { n: view.total });
  $("#page").textContent = t("page", { from: view.total ? view.offset + 1 : 0, to: view.offset + list.length, total: view.total });
  $("#prev").disabled = view.offset === 0;
  $("#next").disabled = view.offset + PAGE_SIZE >= view.total;
}

function cell(text, cls, label) {
  const td = el("td", text, cls);
  if (label) td.dataset.label = t(label);
  return td;
}

function row(task) {
  const tr = document.createElement("tr");
  tr.dataset.id = task.id; tr.dataset.status = task.status;
  const num = el("td", null, "c-num"); const nb = el("button", task.num, "num-btn");
  nb.type = "button"; nb.setAttribute("aria-label", `${t("details")} ${task.num}`);
  nb.addEventListener("click", () => detail(task.id)); num.append(nb);
  if (task.params && task.params.label) num.append(" ", el("span", task.params.label, "label"));
  const m = el("td", null, "c-method"); m.append(el("span", methodLabel(task.method), `badge ${task.method}`));
  const st = el("td", null, `st ${task.status} c-status`); st.append(statusPill(task.status));
  tr.append(num, m, cell(task.kind, "c-kind"), st, cell(task.worker, "c-worker"),
    cell(task.attempts, "c-attempts", "attempts"), cell(secs(task.queue_wait_seconds), "c-wait", "queueWait"),
    cell(secs(task.run_seconds), "c-run", "runTime"), cell(new Date(task.created_at).toLocaleTimeString(lang), "c-created"));
  const act = el("td", null, "c-act");
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
  if (!p) { p = el("p", null, "msg error"); p.id = "table-msg"; p.setAttribute("role", "alert"); $(".table-head").after(p); }
  say(p, key, vars);
}

async function detail(id) {
  const r = await fetch(`/api/tasks/${encodeURIComponent(id)}`);
  if (!r.ok) { tableMessage(...(await failureMessage(r))); return; }
  const task = await r.json();
  $("#detail-title").textContent = `${t("details")} ${task.num}`;
  const fields = [["fId", task.id], ["fLabel", task.params && task.params.label], ["method", methodLabel(task.method)],
    ["kind", task.kind], ["status", stText(task.status)], ["fWorker", task.worker], ["fAttempts", task.attempts],
    ["fParams", JSON.stringify(task.params, null, 2)], ["fResult", task.result ? JSON.stringify(task.result, null, 2) : ""],
    ["fError", task.error], ["fCreated", when(task.created_at)], ["fStarted", when(task.started_at)],
    ["fFinished", when(task.finished_at)], ["fUpdated", when(task.updated_at)]];
  // Only what the task has (no empty rows: a pending task has no worker, result or times yet).
  const shown = fields.filter(([, v]) => v != null && v !== "");
  $("#detail-body").replaceChildren(...shown.flatMap(([k, v]) => [el("dt", t(k)), el("dd", v)]));
  $("#detail").showModal();
}

export function setupTable() {
  $("#f-method").addEventListener("change", () => { view.offset = 0; load(); });
  $("#f-status").addEventListener("change", () => { view.offset = 0; load(); });
  $("#prev").addEventListener("click", () => { view.offset = Math.max(0, view.offset - PAGE_SIZE); load(); });
  $("#next").addEventListener("click", () => { view.offset += PAGE_SIZE; load(); });
}
