// The timeline: one lane per worker or consumer (split into rows as its tasks overlap,
// so a worker running three at once shows three rows), a bar per task from its start to
// its end, coloured by status, led in by a pale stretch for its time in the queue; tasks
// not started yet wait in a lane of their queue. Drawn by Chart.js (floating horizontal
// bars on a linear time axis) on a canvas: text on it cannot be markup.
import { methodLabel, stText, t } from "./i18n.js";
import { palette } from "./colors.js";
import { $, el, FINAL, short } from "./util.js";

const QUEUE_OF = { celery: "celery", sync: "celery", rabbitmq: "direct_tasks" };
const ROW_PX = 26;
let chart = null;

const ms = (iso) => (iso ? Date.parse(iso) : null);

/** Rows and bars for the tasks seen from `from` to `to` (ms on the api's clock). */
export function layout(tasks, from, to) {
  const queues = new Map(), workers = new Map();
  for (const task of tasks) {
    const created = ms(task.created_at), started = ms(task.started_at), finished = ms(task.finished_at);
    const end = finished ?? to;
    if (end < from) continue;
    if (started == null) {
      const q = QUEUE_OF[task.method] || task.method;
      if (!queues.has(q)) queues.set(q, []);
      queues.get(q).push({ task, created, end });
    } else {
      const w = task.worker || "?";
      if (!workers.has(w)) workers.set(w, []);
      workers.get(w).push({ task, created, started, end });
    }
  }
  const rows = [], queued = [], waiting = [], runs = [], lanes = [];
  for (const [q, items] of [...queues].sort()) {
    const key = `q:${q}`;
    const n = items.filter((it) => !FINAL.has(it.task.status)).length;
    rows.push({ key, label: `${t("queueLane", { name: q })} · ${n}`, first: true });
    for (const it of items) waiting.push({ x: [it.created, it.end], y: key, task: it.task });
    lanes.push({ name: t("queueLane", { name: q }), queue: true, tasks: items.map((i) => i.task) });
  }
  for (const [w, items] of [...workers].sort((a, b) => a[0].localeCompare(b[0]))) {
    // Greedy rows: a task goes to the first row free at its start.
    const ends = [];
    items.sort((a, b) => a.started - b.started);
    for (const it of items) {
      let slot = ends.findIndex((e) => e <= it.started);
      if (slot < 0) { slot = ends.length; ends.push(0); }
      ends[slot] = it.end;
      const key = `w:${w}:${slot}`;
      if (it.started > it.created) queued.push({ x: [it.created, it.started], y: key, task: it.task });
      runs.push({ x: [it.started, it.end], y: key, task: it.task });
    }
    ends.forEach((_, slot) => rows.push({ key: `w:${w}:${slot}`, label: w, first: slot === 0 }));
    lanes.push({ name: w, queue: false, tasks: items.map((i) => i.task) });
  }
  return { rows, queued, waiting, runs, lanes };
}

function rel(points, to) {
  return points.map((p) => ({ ...p, x: [(p.x[0] - to) / 1000, (p.x[1] - to) / 1000] }));
}
function tick(value) {
  if (value === 0) return t("now");
  const s = -value;
  return t("ago", { v: s < 60 ? `${s} ${t("sec")}` : t("min", { n: +(s / 60).toFixed(1) }) });
}
function clip(name, max) { return name.length > max ? `${name.slice(0, max - 1)}…` : name; }

function tooltip(item, to) {
  const task = item.raw.task;
  const created = ms(task.created_at), started = ms(task.started_at), finished = ms(task.finished_at);
  const lines = [stText(task.status)];
  if (task.worker) lines.push(task.worker);
  if (started != null) {
    lines.push(t("queuedFor", { s: ((started - created) / 1000).toFixed(2) }));
    lines.push(finished != null ? t("ranFor", { s: ((finished - started) / 1000).toFixed(2) })
      : t("runningFor", { s: ((to - started) / 1000).toFixed(1) }));
  } else if (!FINAL.has(task.status)) lines.push(t("waitingFor", { s: ((to - created) / 1000).toFixed(1) }));
  return lines;
}

function options(c, span, rows, to, narrow) {
  const laneStart = new Set(rows.map((r, i) => (r.first ? i : -1)));
  return {
    indexAxis: "y", animation: false, responsive: true, maintainAspectRatio: false,
    scales: {
      x: {
        type: "linear", min: -span, max: 0, position: "top",
        ticks: { stepSize: span / (narrow ? 3 : 6), callback: tick, color: c.muted, maxRotation: 0, font: { family: c.font, size: 11 } },
        grid: { color: c.line }, border: { display: false },
      },
      y: {
        type: "category", labels: rows.map((r) => r.key),
        ticks: { autoSkip: false, color: c.ink, font: { family: c.font, size: 11 },
          callback: (_, i) => (rows[i] && rows[i].first ? clip(rows[i].label, narrow ? 20 : 28) : "") },
        grid: { offset: true, color: (ctx) => (laneStart.has(ctx.index) ? c.line : "transparent") },
        border: { display: false },
      },
    },
    plugins: {
      legend: { display: false },
      tooltip: { callbacks: {
        title: (items) => (items[0] ? `#${items[0].raw.task.num} · ${methodLabel(items[0].raw.task.method)}` : ""),
        label: (item) => tooltip(item, to),
      } },
    },
  };
}

function summary(lanes) {
  const items = lanes.map((lane) => {
    if (lane.queue) return el("li", `${lane.name}: ${t("waitingSummary", { n: lane.tasks.filter((x) => !FINAL.has(x.status)).length })}`);
    const n = (st) => lane.tasks.filter((x) => st.includes(x.status)).length;
    const li = el("li", t("laneSummary", { lane: lane.name, running: n(["IN_PROGRESS", "RETRYING"]), done: n(["DONE"]), failed: n(["FAILED"]) }));
    li.dataset.lane = lane.name;
    return li;
  });
  $("#timeline-summary").replaceChildren(...items);
}

/** Draw (or redraw) the timeline for `state` (see activity.js) at `to` (ms, api clock). */
export function renderTimeline(state, to) {
  const span = state.window, from = to - span * 1000;
  const { rows, queued, waiting, runs, lanes } = layout([...state.tasks.values()], from, to);
  const empty = state.loaded && rows.length === 0;
  $("#timeline-empty").hidden = !empty;
  $("#timeline-empty").textContent = t("noActivity", { n: span / 60 });
  $("#timeline-box").hidden = empty;
  $("#timeline-shown").hidden = state.total <= state.tasks.size;
  $("#timeline-shown").textContent = t("tasksShown", { n: state.tasks.size, total: state.total });
  summary(lanes);
  if (!window.Chart || empty || !state.loaded) return;   // (drawn once the first read is in)
  $("#timeline-box").style.height = `${Math.max(4, rows.length) * ROW_PX + 40}px`;
  const c = palette();
  const datasets = [
    // A row's band is shared by its tasks' time in the queue (a thin line on top) and
    // their runs (below it), so a wait that overlapped the previous task stays visible.
    { label: t("legendQueued"), data: rel(queued, to), backgroundColor: c.queued, grouped: true,
      barPercentage: 0.45, categoryPercentage: 0.9, order: 1 },
    { label: t("st_PENDING"), data: rel(waiting, to), backgroundColor: c.waitingBar, grouped: false,
      barPercentage: 0.7, categoryPercentage: 1, minBarLength: 2, order: 2 },
    { label: t("runTime"), data: rel(runs, to), backgroundColor: runs.map((p) => c.status[p.task.status]), grouped: true,
      borderRadius: 3, borderSkipped: false, barPercentage: 1, categoryPercentage: 0.9, minBarLength: 3, order: 0 },
  ];
  const opts = options(c, span, rows, to, $("#timeline-box").clientWidth < 520);
  if (!chart) {
    chart = new window.Chart($("#timeline"), { type: "bar", data: { datasets }, options: opts });
  } else {
    chart.data.datasets = datasets;
    chart.options = opts;
    chart.update("none");
  }
}
