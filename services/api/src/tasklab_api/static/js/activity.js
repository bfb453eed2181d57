// The recent activity the timeline and the throughput chart draw: GET /api/activity
// (the task store's figures for the chosen time span), kept live between reads by the
// stream's task events. Times are on the api's clock (its `now` against ours).
import { throttle } from "./util.js";

export const WINDOWS = [60, 300, 900];
const WINDOW_KEY = "tasklab.window";
const stored = Number(localStorage.getItem(WINDOW_KEY));

export const activity = {
  window: WINDOWS.includes(stored) ? stored : 60,
  tasks: new Map(),     // id -> task (the fields the timeline needs)
  series: null, start: 0, bucket: 0, total: 0,
  offset: 0,            // api clock minus ours, ms
  loaded: false, error: null,
};
const listeners = [];

export function onActivity(fn) { listeners.push(fn); }
function changed() { listeners.forEach((fn) => fn()); }
export function now() { return Date.now() + activity.offset; }

function compact(task) {
  const { id, num, method, kind, status, worker, attempts, created_at, started_at, finished_at, updated_at } = task;
  return { id, num, method, kind, status, worker, attempts, created_at, started_at, finished_at, updated_at };
}
function newer(a, b) { return !b || Date.parse(a.updated_at) >= Date.parse(b.updated_at); }

export async function refreshActivity() {
  let r;
  try {
    r = await fetch(`/api/activity?window=${activity.window}`);
  } catch (e) { return; }   // the connection badge tells
  if (!r.ok) return;
  const got = await r.json();
  activity.offset = Date.parse(got.now) - Date.now();
  activity.series = got.series;
  activity.start = Date.parse(got.start);
  activity.bucket = got.bucket_seconds;
  activity.total = got.tasks_total;
  const tasks = new Map(got.tasks.map((x) => [x.id, x]));
  // An event newer than the read (it was on its way) wins.
  for (const [id, mine] of activity.tasks) {
    if (tasks.has(id) && newer(mine, tasks.get(id))) tasks.set(id, mine);
  }
  activity.tasks = tasks;
  activity.loaded = true;
  changed();
}
export const soonActivity = throttle(refreshActivity, 1500);

/** A task event from the stream: on the timeline at once, in the series at the next read. */
export function noteTask(task) {
  if (!task || !task.id) return;
  const mine = activity.tasks.get(task.id);
  if (!newer(task, mine)) return;
  activity.tasks.set(task.id, compact(task));
  changed();
  soonActivity();
}

export function setWindow(seconds) {
  activity.window = seconds;
  localStorage.setItem(WINDOW_KEY, String(seconds));
  refreshActivity();
}
