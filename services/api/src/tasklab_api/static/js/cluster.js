// The worker Deployments on Kubernetes, their pods and autoscalers (hidden elsewhere),
// with the replica count's buttons when the chart allows scaling from the UI.
import { t } from "./i18n.js";
import { $, el } from "./util.js";

let lastCluster = null;
function age(seconds) {
  if (seconds == null) return "";
  if (seconds < 120) return `${Math.round(seconds)}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  return `${Math.round(seconds / 3600)}h`;
}
export async function refreshCluster() {
  try {
    const r = await fetch("/api/cluster");
    if (r.ok) { lastCluster = await r.json(); renderCluster(lastCluster); }
  } catch (e) { /* the connection badge tells */ }
}
export function renderCluster(c = lastCluster) {
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
