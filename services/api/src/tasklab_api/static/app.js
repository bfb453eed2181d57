// tasklab web UI, the entry module: wires the submit cards, the live task table, the
// overview strip, the activity charts (timeline and throughput) and the Kubernetes
// view to the live stream (server-sent events) and the JSON API.
import { applyLanguage, onLanguage, say, switchLanguage, t } from "./js/i18n.js";
import { $ } from "./js/util.js";
import { setupForms } from "./js/forms.js";
import { load, render, setupTable, upsert } from "./js/table.js";
import { refreshOverview, renderOverview, soonOverview } from "./js/overview.js";
import { refreshCluster, renderCluster } from "./js/cluster.js";
import { activity, noteTask, now, onActivity, refreshActivity, setWindow, WINDOWS } from "./js/activity.js";
import { renderTimeline } from "./js/timeline.js";
import { renderThroughput } from "./js/throughput.js";
import { onThemeChange } from "./js/colors.js";

function onTask(task) { upsert(task); noteTask(task); soonOverview(); }

// ---- activity charts
function drawActivity() {
  if (document.hidden) return;
  try {
    renderTimeline(activity, now());
    renderThroughput(activity);
  } catch (e) {
    showChartsOff(e.message);
  }
}
function showChartsOff(detail) {
  const p = $("#charts-off");
  p.hidden = false;
  say(p, "chartsOff", { detail });
}
function setupActivity() {
  if (!window.Chart) showChartsOff("Chart.js: /static/vendor/chart.umd.min.js");
  const group = $("#window-switch");
  for (const seconds of WINDOWS) {
    const b = document.createElement("button");
    b.type = "button"; b.dataset.window = String(seconds);
    b.addEventListener("click", () => { setWindow(seconds); markWindow(); drawActivity(); });
    group.append(b);
  }
  markWindow();
  onActivity(drawActivity);
  setInterval(drawActivity, 1000);      // "now" moves: running bars grow, old ones scroll out
  setInterval(refreshActivity, 5000);   // the series' buckets, and resync with the store
  document.addEventListener("visibilitychange", drawActivity);
  onThemeChange(drawActivity);
}
function markWindow() {
  document.querySelectorAll("#window-switch button").forEach((b) => {
    b.textContent = t("min", { n: Number(b.dataset.window) / 60 });
    b.setAttribute("aria-pressed", String(Number(b.dataset.window) === activity.window));
  });
}

// ---- language
onLanguage(() => {
  const btn = $("#lang");
  btn.textContent = document.documentElement.lang === "en" ? "RU" : "EN";
  btn.setAttribute("aria-label", document.documentElement.lang === "en" ? "Русский" : "English");
  const conn = $("#conn-text");
  conn.textContent = t($("#conn").dataset.state);
  render(); renderOverview(); renderCluster(); markWindow(); drawActivity();
});
$("#lang").addEventListener("click", switchLanguage);

// ---- live stream
function setConn(state) { $("#conn").dataset.state = state; $("#conn-text").textContent = t(state); }
function connect() {
  const es = new EventSource("/api/events");
  es.addEventListener("hello", () => { setConn("live"); load(); refreshOverview(); refreshActivity(); });   // (re)connected: catch up
  es.addEventListener("task", (e) => onTask(JSON.parse(e.data)));
  es.onerror = () => setConn("reconnecting");   // EventSource retries by itself
}

setupForms(onTask);
setupTable();
setupActivity();
applyLanguage();
connect();
setInterval(refreshOverview, 3000);
refreshCluster();
setInterval(refreshCluster, 5000);
