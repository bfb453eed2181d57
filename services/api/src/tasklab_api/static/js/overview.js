// The overview strip: the task store's counts (so they agree with the table), the
// broker's own queue figures (labelled as its, with their age) and the workers.
import { t } from "./i18n.js";
import { $, el, throttle } from "./util.js";

let last = null;
// Reads overlap (the 3-s refresh and the one after each task event), and their answers
// can come back out of order: only an answer to a later read than the one shown is
// shown, so an older figure never replaces a newer one.
let asked = 0, shown = 0;

export async function refreshOverview() {
  const n = ++asked;
  try {
    const r = await fetch("/api/overview");
    if (!r.ok) return;
    const o = await r.json();
    if (n > shown) { shown = n; last = o; renderOverview(); }
  } catch (e) { /* the connection badge tells */ }
}
export const soonOverview = throttle(refreshOverview, 300);

export function renderOverview() {
  const o = last;
  if (!o) return;
  $("#s-inprogress").textContent = String(o.in_progress);
  $("#s-waiting").textContent = String(o.waiting);
  $("#s-done").textContent = String(o.counts.DONE ?? 0);
  $("#s-failed").textContent = String(o.counts.FAILED ?? 0);
  const qv = $("#s-queues-value");
  qv.textContent = o.queues ? o.queues.map((q) => `${q.name}: ${q.ready} / ${q.unacked}`).join("  ·  ") : t("statsUnknown");
  qv.title = o.broker_stats_error || (o.broker_stats_age != null ? t("brokerAge", { s: Math.round(o.broker_stats_age) }) : "");
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
    const li = el("li", null, "chip");
    li.append(el("span", w.name, "chip-name"), el("span", ` — ${t(state)}, ${t("runningDone", { running: w.running, done: w.done })}`, "chip-meta"));
    if (w.online) li.classList.add("online");
    li.dataset.worker = w.name;
    return li;
  });
  if (folded.size) {
    const more = el("li", t("moreOffline", { n: folded.size }), "chip more");
    more.title = [...folded].join("\n");
    items.push(more);
  }
  $("#s-workers").replaceChildren(...(items.length ? items : [el("li", t(known ? "noWorkers" : "noWorkersSeen"), "chip none")]));
}
