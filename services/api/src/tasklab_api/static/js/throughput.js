// The throughput chart: per bucket of the chosen time span, the tasks submitted and
// finished (bars) and, at each bucket's end, those waiting (the queue depth, as the task
// store counts it) and running (lines). From GET /api/activity; drawn by Chart.js.
import { t } from "./i18n.js";
import { palette } from "./colors.js";
import { $ } from "./util.js";

let chart = null;

function label(i, n, bucket) {
  const ago = Math.round((n - 1 - i) * bucket);
  if (ago === 0) return t("now");
  return t("ago", { v: ago < 60 ? `${ago} ${t("sec")}` : t("min", { n: +(ago / 60).toFixed(1) }) });
}

export function renderThroughput(state) {
  const s = state.series;
  const quiet = !s || [s.submitted, s.finished, s.waiting, s.running].every((a) => a.every((v) => v === 0));
  $("#throughput-box").hidden = state.loaded && quiet;
  $("#throughput-empty").hidden = !(state.loaded && quiet);
  $("#throughput-empty").textContent = t("noActivity", { n: state.window / 60 });
  $("#throughput-unit").textContent = state.bucket ? t("perBucket", { s: state.bucket }) : "";
  if (!window.Chart || !s || quiet) return;
  const c = palette(), n = s.submitted.length;
  const labels = s.submitted.map((_, i) => label(i, n, state.bucket));
  const line = (color) => ({ type: "line", borderColor: color, backgroundColor: color, borderWidth: 2, pointRadius: 0, stepped: "after", tension: 0 });
  const datasets = [
    { type: "bar", label: t("sSubmitted"), data: s.submitted, backgroundColor: c.accent, barPercentage: 0.9, categoryPercentage: 0.9 },
    { type: "bar", label: t("sFinished"), data: s.finished, backgroundColor: c.status.DONE, barPercentage: 0.9, categoryPercentage: 0.9 },
    { ...line(c.status.PENDING), label: t("sWaiting"), data: s.waiting },
    { ...line(c.status.IN_PROGRESS), label: t("sRunning"), data: s.running },
  ];
  const every = Math.max(1, Math.round(n / 5));
  const options = {
    animation: false, responsive: true, maintainAspectRatio: false,
    interaction: { mode: "index", intersect: false },
    scales: {
      x: { ticks: { color: c.muted, autoSkip: false, maxRotation: 0, font: { family: c.font, size: 11 },
        callback: (_, i) => ((n - 1 - i) % every === 0 ? labels[i] : "") }, grid: { display: false } },
      y: { beginAtZero: true, ticks: { precision: 0, color: c.muted, font: { family: c.font } }, grid: { color: c.line }, border: { display: false } },
    },
    plugins: {
      legend: { position: "bottom", labels: { color: c.ink, usePointStyle: true, pointStyle: "rectRounded", boxWidth: 9, boxHeight: 9, font: { family: c.font, size: 11 } } },
    },
  };
  if (!chart) {
    chart = new window.Chart($("#throughput"), { data: { labels, datasets }, options });
  } else {
    chart.data.labels = labels;
    // Keep which series the user switched off in the legend.
    datasets.forEach((d, i) => { d.hidden = !chart.isDatasetVisible(i); });
    chart.data.datasets = datasets;
    chart.options = options;
    chart.update("none");
  }
}
