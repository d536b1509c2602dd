// careflow console: the dashboard's charts (SVG, no library) refreshed every 10 seconds, and
// the review form's disposition field enabled only for an override. Loaded from
// /console/assets/ (the Content-Security-Policy runs no inline script); every text it draws
// goes through textContent, never innerHTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#1f5fa8", "#e65100", "#2e7d32", "#8e24aa", "#f9a825", "#607d8b", "#b71c1c"];

function el(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function fmt(v) {
  if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (Math.abs(v) >= 1e3) return (v / 1e3).toFixed(1) + "k";
  if (v !== 0 && Math.abs(v) < 10) return Number(v.toPrecision(2)) + "";
  return Math.round(v) + "";
}

// Grouped (or stacked) vertical bars: categories along x, one bar per series.
function bars(host, categories, series, opts) {
  opts = opts || {};
  host.textContent = "";
  const W = 560, H = 210, L = 46, B = 34, T = 8, R = 8;
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  const totals = categories.map((_, i) =>
    opts.stacked ? series.reduce((s, x) => s + (x.values[i] || 0), 0)
                 : Math.max(0, ...series.map((x) => x.values[i] || 0)));
  const max = Math.max(1e-9, ...totals);
  const plotW = W - L - R, plotH = H - B - T;
  for (let g = 0; g <= 4; g++) {
    const y = T + plotH - (plotH * g) / 4;
    svg.appendChild(el("line", { x1: L, x2: W - R, y1: y, y2: y, stroke: "#e3e8ee" }));
    svg.appendChild(el("text", { x: L - 4, y: y + 3, "text-anchor": "end" }, fmt((max * g) / 4)));
  }
  const band = plotW / Math.max(1, categories.length);
  const inner = band * 0.8;
  categories.forEach((c, i) => {
    let base = 0;
    series.forEach((s, k) => {
      const v = s.values[i] || 0;
      const h = (plotH * v) / max;
      const w = opts.stacked ? inner : inner / series.length;
      const x = L + band * i + band * 0.1 + (opts.stacked ? 0 : w * k);
      const y = T + plotH - h - (opts.stacked ? (plotH * base) / max : 0);
      const r = el("rect", { x, y, width: Math.max(1, w - 1), height: Math.max(0, h), fill: COLORS[k % COLORS.length] });
      r.appendChild(el("title", {}, `${s.name} · ${c}: ${fmt(v)}`));
      svg.appendChild(r);
      if (opts.stacked) base += v;
    });
    if (categories.length <= 16 || i % Math.ceil(categories.length / 8) === 0) {
      svg.appendChild(el("text", { x: L + band * i + band / 2, y: H - B + 14, "text-anchor": "middle" }, c));
    }
  });
  host.appendChild(svg);
  const legend = document.createElement("div");
  legend.className = "legend";
  series.forEach((s, k) => {
    const span = document.createElement("span");
    const dot = document.createElement("i");
    dot.style.background = COLORS[k % COLORS.length];
    span.appendChild(dot);
    span.appendChild(document.createTextNode(s.name));
    legend.appendChild(span);
  });
  host.appendChild(legend);
}

function draw(f) {
  const days = f.days.map((d) => d.day.slice(5));
  const col = (k) => f.days.map((d) => d[k]);
  bars(document.getElementById("c-requests"), days, [
    { name: "decided", values: col("done") },
    { name: "errors", values: col("errors") },
    { name: "refused (overload)", values: col("rejected") },
  ], { stacked: true });
  const mix = Object.keys(f.dispositions);
  bars(document.getElementById("c-dispositions"), mix, [
    { name: "decisions", values: mix.map((k) => f.dispositions[k]) },
  ]);
  bars(document.getElementById("c-rates"), days, [
    { name: "escalation %", values: f.days.map((d) => (d.done ? (100 * d.escalated) / d.done : 0)) },
    { name: "human review %", values: f.days.map((d) => (d.done ? (100 * d.human_review) / d.done : 0)) },
  ]);
  bars(document.getElementById("c-cost"), days, [
    { name: "careflow $", values: col("cost_usd") },
    { name: "flagship API $ (same tokens, stateless)", values: col("flagship_usd") },
  ]);
  bars(document.getElementById("c-tokens"), days, [
    { name: "computed", values: col("computed") },
    { name: "reused (KV / prefix cache)", values: col("reused") },
  ], { stacked: true });
  const steps = f.steps.map((s) => `${s.step}/${s.tier}`);
  bars(document.getElementById("c-latency"), steps, [
    { name: "p50 ms", values: f.steps.map((s) => s.p50_ms) },
    { name: "p95 ms", values: f.steps.map((s) => s.p95_ms) },
  ]);
  const set = (id, text) => { const e = document.getElementById(id); if (e) e.textContent = text; };
  set("t-decisions", f.decisions);
  set("t-escalation", (100 * f.escalation_rate).toFixed(1) + "%");
  set("t-review", (100 * f.review_rate).toFixed(1) + "%");
  set("t-pending", f.pending_review);
  set("t-cost", "$" + f.cost_usd.toFixed(4));
  set("t-flagship", "$" + f.flagship_usd.toFixed(4));
  set("t-ratio", f.cost_usd > 0 ? Math.round(f.flagship_usd / f.cost_usd) + "× less" : "—");
  set("t-tokens", `${f.reused} / ${f.computed}`);
  document.body.dataset.chartsDrawn = String(Number(document.body.dataset.chartsDrawn || 0) + 1);
}

function dashboard() {
  const data = document.getElementById("figures");
  if (!data) return;
  draw(JSON.parse(data.textContent));
  setInterval(async () => {
    try {
      const r = await fetch("/console/dashboard.json", { credentials: "same-origin", cache: "no-store" });
      if (r.status === 401) { window.location = "/console/login"; return; }
      if (r.ok) draw(await r.json());
    } catch (_) { /* the next tick tries again */ }
  }, 10000);
}

function reviewForm() {
  const form = document.getElementById("review-form");
  if (!form) return;
  const select = document.getElementById("disposition");
  const sync = () => {
    const override = form.querySelector('input[name="action"][value="override"]').checked;
    select.disabled = !override;
  };
  form.querySelectorAll('input[name="action"]').forEach((r) => r.addEventListener("change", sync));
  sync();
}

document.addEventListener("DOMContentLoaded", () => { dashboard(); reviewForm(); });
