// The three submit cards (Celery, RabbitMQ direct, sync), and on a phone the switch
// that shows one of them at a time.
import { say, t, unsay } from "./i18n.js";
import { $, failureMessage, FINAL } from "./util.js";

const SHOW_KEY = "tasklab.method";

export function setupForms(onTask) {
  document.querySelectorAll("form.card").forEach((form) => {
    form.querySelector(".fields").append($("#fields-template").content.cloneNode(true));
    const method = form.dataset.method;
    form.querySelectorAll("input, select").forEach((inp) => { inp.id = `${method}-${inp.name}`; });
    form.querySelectorAll("label[data-for]").forEach((lab) => { lab.htmlFor = `${method}-${lab.dataset.for}`; });
    if (method === "sync") form.elements.duration.value = "1";
    const kind = form.elements.kind, nums = form.querySelector(".numbers");
    const toggle = () => { nums.hidden = kind.value !== "process_data"; };
    kind.addEventListener("change", toggle); toggle();
    form.addEventListener("submit", (ev) => { ev.preventDefault(); submit(form, onTask); });
  });
  // The phone's method switch (hidden on wider screens, where all three cards show).
  const cards = $("#cards");
  const show = (method) => {
    cards.dataset.show = method;
    document.querySelectorAll("#method-switch button").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.method === method)));
    sessionStorage.setItem(SHOW_KEY, method);
  };
  document.querySelectorAll("#method-switch button").forEach((b) => b.addEventListener("click", () => show(b.dataset.method)));
  show(sessionStorage.getItem(SHOW_KEY) || "celery");
}

function body(form) {
  const f = form.elements;
  const out = { method: form.dataset.method, kind: f.kind.value };
  if (f.duration.value !== "") out.duration = Number(f.duration.value);
  if (f.fail_times.value !== "") out.fail_times = Number(f.fail_times.value);
  if (f.label.value.trim()) out.label = f.label.value.trim();
  if (f.kind.value === "process_data") out.numbers = f.numbers.value.split(/[\s,;]+/).filter(Boolean).map(Number);
  return out;
}

/** A sync call's wait: a bar filling over the task's duration, and the seconds so far. */
function startProgress(form, duration) {
  const box = form.querySelector(".wait"), bar = box.querySelector("progress"), text = box.querySelector(".wait-text");
  const total = Number.isFinite(duration) && duration > 0 ? duration : 0;
  const started = performance.now();
  box.hidden = false;
  const tick = () => {
    const s = (performance.now() - started) / 1000;
    if (total) { bar.max = total; bar.value = Math.min(s, total); } else bar.removeAttribute("value");
    text.textContent = t("elapsed", { s: s.toFixed(1), total: total ? total.toFixed(1) : "?" });
  };
  tick();
  const timer = setInterval(tick, 100);
  return () => { clearInterval(timer); box.hidden = true; };
}

async function submit(form, onTask) {
  const msg = form.querySelector(".msg"), res = form.querySelector(".result"), btn = form.querySelector("button[type=submit]");
  msg.className = "msg"; unsay(msg); if (res) res.textContent = "";
  const payload = body(form);
  btn.disabled = true; form.setAttribute("aria-busy", "true");
  let stop = () => {};
  if (payload.method === "sync") {
    msg.className = "msg busy"; say(msg, "waitingSync");
    stop = startProgress(form, payload.duration);
  }
  try {
    const r = await fetch("/api/tasks", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) });
    if (!r.ok && r.status !== 504) { msg.className = "msg error"; say(msg, ...(await failureMessage(r))); return; }
    const task = await r.json();
    onTask(task);
    msg.className = "msg ok";
    if (r.status === 504) say(msg, "stillRunning", { num: task.num });
    else say(msg, FINAL.has(task.status) ? "finished" : "accepted", { num: task.num, status: task.status });
    if (res && FINAL.has(task.status)) res.textContent = JSON.stringify(task.result ?? { error: task.error }, null, 2);
  } catch (e) {
    msg.className = "msg error"; say(msg, "network", { detail: e.message });
  } finally {
    stop();
    btn.disabled = false; form.removeAttribute("aria-busy");
  }
}
