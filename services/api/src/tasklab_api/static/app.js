// tasklab web UI: forms per method, a live task table fed by server-sent events.
"use strict";
const rows = new Map();          // task id -> task
const tbody = document.querySelector("#tasks tbody");
const FINAL = new Set(["DONE", "FAILED", "CANCELLED"]);
const LABEL = { celery: "Celery", rabbitmq: "RabbitMQ", sync: "Sync" };

function cell(text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text == null ? "" : String(text);   // always text, never HTML
  return td;
}
function secs(v) { return v == null ? "" : v.toFixed(2) + " s"; }

function render() {
  const list = [...rows.values()].sort((a, b) => b.num - a.num).slice(0, 200);
  tbody.replaceChildren(...list.map((t) => {
    const tr = document.createElement("tr");
    tr.dataset.id = t.id;
    tr.append(cell(t.num));
    const m = cell(""); const b = document.createElement("span");
    b.className = "badge " + t.method; b.textContent = LABEL[t.method] || t.method; m.append(b);
    tr.append(m, cell(t.kind), cell(t.status, "st " + t.status), cell(t.worker), cell(t.attempts),
      cell(secs(t.queue_wait_seconds)), cell(secs(t.run_seconds)),
      cell(new Date(t.created_at).toLocaleTimeString()));
    const act = cell("");
    if (!FINAL.has(t.status)) {
      const btn = document.createElement("button");
      btn.type = "button"; btn.textContent = "Cancel"; btn.setAttribute("aria-label", "Cancel task " + t.num);
      btn.addEventListener("click", () => fetch(`/api/tasks/${encodeURIComponent(t.id)}/cancel`, { method: "POST" })
        .then((r) => r.json()).then(upsert));
      act.append(btn);
    }
    tr.append(act);
    return tr;
  }));
}
function upsert(t) {
  if (!t || !t.id) return;
  const old = rows.get(t.id);
  if (old && new Date(old.updated_at) > new Date(t.updated_at)) return;
  rows.set(t.id, t); render();
}
async function reload() {
  const r = await fetch("/api/tasks?limit=200");
  if (r.ok) (await r.json()).items.forEach((t) => rows.set(t.id, t));
  render();
}
function reason(body) {
  if (!body) return "request failed";
  if (typeof body.detail === "string") return body.detail;
  if (Array.isArray(body.detail)) return body.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  return JSON.stringify(body);
}
document.querySelectorAll("form.card").forEach((form) => {
  const kind = form.elements.kind, nums = form.querySelector(".numbers");
  const sync = () => { nums.hidden = kind.value !== "process_data"; };
  kind.addEventListener("change", sync); sync();
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const msg = form.querySelector(".msg"), res = form.querySelector(".result");
    msg.className = "msg"; msg.textContent = ""; if (res) res.textContent = "";
    const body = { method: form.dataset.method, kind: kind.value,
      duration: Number(form.elements.duration.value), fail_times: Number(form.elements.fail_times.value || 0) };
    if (kind.value === "process_data") body.numbers = form.elements.numbers.value.split(/[\s,;]+/).filter(Boolean).map(Number);
    const btn = form.querySelector("button"); btn.disabled = true;
    try {
      const r = await fetch("/api/tasks", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const data = await r.json().catch(() => null);
      if (!r.ok && r.status !== 504) { msg.textContent = `${r.status}: ${reason(data)}`; return; }
      upsert(data);
      msg.className = "msg ok"; msg.textContent = `task ${data.num}: ${data.status}`;
      if (res && FINAL.has(data.status)) res.textContent = JSON.stringify(data.result ?? data.error, null, 2);
    } catch (e) { msg.textContent = "network error: " + e.message; }
    finally { btn.disabled = false; }
  });
});
const conn = document.getElementById("conn");
function connect() {
  const es = new EventSource("/api/events");
  es.addEventListener("hello", () => { conn.textContent = "live"; reload(); });
  es.addEventListener("task", (e) => upsert(JSON.parse(e.data)));
  es.onerror = () => { conn.textContent = "reconnecting…"; };
}
connect();
