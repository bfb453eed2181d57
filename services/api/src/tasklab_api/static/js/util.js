// Small helpers shared by the UI's modules. Text from the server or the user only ever
// goes into the page as text (textContent), never as HTML.
import { lang, t } from "./i18n.js";

export const FINAL = new Set(["DONE", "FAILED", "CANCELLED"]);
export const $ = (sel) => document.querySelector(sel);

export function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = String(text);
  return e;
}
export function secs(v) { return v == null ? "" : `${v.toFixed(2)} ${t("sec")}`; }
export function when(iso) { return iso ? new Date(iso).toLocaleString(lang) : ""; }
/** A short duration: 4.2 s, 12 s, 3 min, 2 h. */
export function short(seconds) {
  if (seconds < 10) return `${seconds.toFixed(1)} ${t("sec")}`;
  if (seconds < 120) return `${Math.round(seconds)} ${t("sec")}`;
  if (seconds < 7200) return t("min", { n: Math.round(seconds / 60) });
  return `${Math.round(seconds / 3600)} h`;
}

/** A status pill: a dot and the status's word, coloured by the status (style.css). */
export function statusPill(status) {
  const s = el("span", null, `pill st-${status}`);
  s.append(el("span", t(`st_${status}`)));
  return s;
}

/** The message ([its i18n key, its fields]) that says why a request failed. */
export async function failureMessage(resp) {
  const body = await resp.json().catch(() => null);
  let detail = body && body.detail;
  if (Array.isArray(detail)) detail = detail.map((d) => `${(d.loc || []).filter((p) => p !== "body").join(".") || "body"}: ${d.msg}`).join("; ");
  else if (typeof detail !== "string") detail = resp.statusText || "error";
  if (resp.status === 422) return ["invalid", { detail }];
  if (resp.status === 429) return ["rateLimited", { s: resp.headers.get("Retry-After") || "1" }];
  if (resp.status === 503) return ["brokerDown", { detail }];
  return ["failedReq", { code: resp.status, detail }];
}

/** Run fn at most once per `ms` (the last call wins, trailing). */
export function throttle(fn, ms) {
  let timer = null, last = 0;
  return () => {
    if (timer) return;
    const wait = Math.max(0, last + ms - Date.now());
    timer = setTimeout(() => { timer = null; last = Date.now(); fn(); }, wait);
  };
}
