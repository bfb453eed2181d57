// The charts draw with the page's own colours (style.css's custom properties), so a
// status looks the same in the table, the legend and the charts, in either theme.
export function palette() {
  const cs = getComputedStyle(document.documentElement);
  const v = (name) => cs.getPropertyValue(name).trim();
  return {
    status: {
      PENDING: v("--st-pending"), IN_PROGRESS: v("--st-running"), RETRYING: v("--st-retrying"),
      DONE: v("--st-done"), FAILED: v("--st-failed"), CANCELLED: v("--st-cancelled"),
    },
    queued: v("--queued"), waitingBar: v("--waiting-bar"), accent: v("--accent"),
    ink: v("--ink"), muted: v("--muted"), line: v("--line"), surface: v("--surface"),
    font: cs.getPropertyValue("font-family"),
  };
}

/** fn() whenever the system switches between light and dark. */
export function onThemeChange(fn) {
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", fn);
}
