//! A self-contained HTML report: one file, no scripts, no external assets; every plot is an
//! inline `<svg>` drawn with `plotters`' SVG backend (text is SVG `<text>`, so no font file is
//! needed to draw it; the viewer's `sans-serif` renders it).
//!
//! Sections: a summary table per strategy; cost vs accuracy (one point per strategy, 95 %
//! bootstrap bars); latency distribution (histogram, all strategies); per strategy a confusion
//! matrix heat map (on the finest scale every item's gold collapses onto) and per-step token bars
//! (computed vs reused per request); the items under-triaged or left without a prediction, with
//! their message; the suite lines that were skipped. Every text that comes from a suite or a
//! report (messages, ids, labels, names, problems) is HTML-escaped.

use crate::report::Report;
use crate::suite::{Scale, SuiteItem};
use crate::EvalError;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];
const FONT: &str = "sans-serif";
const COMPUTED: RGBColor = RGBColor(214, 96, 77);
const REUSED: RGBColor = RGBColor(67, 147, 195);

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn plot_err(plot: &str) -> impl Fn(String) -> EvalError + '_ {
    move |reason| EvalError::Plot {
        plot: plot.to_string(),
        reason,
    }
}

/// Draws into an SVG string of the given size.
fn svg<F>(plot: &str, size: (u32, u32), draw: F) -> Result<String, EvalError>
where
    F: FnOnce(&DrawingArea<SVGBackend, plotters::coord::Shift>) -> Result<(), String>,
{
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, size).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| e.to_string())
            .map_err(plot_err(plot))?;
        draw(&root).map_err(plot_err(plot))?;
        root.present()
            .map_err(|e| e.to_string())
            .map_err(plot_err(plot))?;
    }
    Ok(buf)
}

fn e2s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or_else(|| "–".into())
}

fn ci(iv: Option<crate::bootstrap::Interval>, scale: f64, digits: usize) -> String {
    iv.map(|i| {
        format!(
            " <span class=ci>[{:.digits$}–{:.digits$}]</span>",
            i.low * scale,
            i.high * scale
        )
    })
    .unwrap_or_default()
}

fn num(x: Option<f64>, digits: usize) -> String {
    x.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

/// Writes [`render`]'s page to `path`.
pub fn write_html(
    report: &Report,
    items: &[SuiteItem],
    path: impl AsRef<Path>,
) -> Result<(), EvalError> {
    let path = path.as_ref();
    std::fs::write(path, render(report, items)?).map_err(|e| EvalError::Write {
        file: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The whole page. `items` (the suite) supplies the messages shown beside missed items; pass an
/// empty slice to leave messages out.
pub fn render(report: &Report, items: &[SuiteItem]) -> Result<String, EvalError> {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>\
         <title>careflow evaluation — {suite}</title>\n<style>\
         body{{font-family:sans-serif;margin:24px;color:#222}}\
         table{{border-collapse:collapse;margin:8px 0 20px}}\
         th,td{{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top}}\
         th{{background:#f3f3f3}} td.l,th.l{{text-align:left}} .ci{{color:#777;font-size:85%}}\
         .plots{{display:flex;flex-wrap:wrap;gap:16px}} figure{{margin:0}}\
         figcaption{{font-size:85%;color:#555;max-width:560px}} .msg{{max-width:520px;white-space:pre-wrap}}\
         </style></head><body>\n<h1>careflow evaluation</h1>\n\
         <p>Suite <code>{suite}</code>, {created}; {ns} strateg{ies}; {np} suite line(s) skipped. \
         Schema version {ver}.</p>\n",
        suite = escape(&report.suite),
        created = escape(&report.created_at),
        ns = report.strategies.len(),
        ies = if report.strategies.len() == 1 { "y" } else { "ies" },
        np = report.problems.len(),
        ver = report.schema_version,
    );

    summary(&mut h, report);

    h.push_str("<h2>Cost and accuracy</h2>\n<div class=plots>\n");
    figure(
        &mut h,
        &cost_accuracy_svg(report)?,
        "Accuracy (each item on its gold's scale) against cost per 1,000 requests; bars: 95 % \
         bootstrap intervals.",
    );
    figure(
        &mut h,
        &latency_svg(report)?,
        "Latency per request (all repeats), 20 equal bins.",
    );
    h.push_str("</div>\n");

    for (i, s) in report.strategies.iter().enumerate() {
        let _ = write!(
            h,
            "<h2>Strategy <code>{}</code></h2>\n<div class=plots>\n",
            escape(&s.name)
        );
        let scale = common_scale(&s.metrics);
        figure(
            &mut h,
            &confusion_svg(&s.name, &s.metrics, scale)?,
            &format!(
                "Confusion on the {} scale (rows: gold, columns: predicted). Shade: share of the \
                 gold row; blue = correct, red = under-triage (less urgent than gold, or admin for a \
                 clinical message), grey = other.",
                scale.name()
            ),
        );
        figure(
            &mut h,
            &steps_svg(report, i)?,
            "Tokens per request by step: computed (prefilled) vs reused (from cache).",
        );
        h.push_str("</div>\n");
        missed(&mut h, s, items);
    }

    if !report.problems.is_empty() {
        h.push_str(
            "<h2>Suite lines skipped</h2>\n<table><tr><th>line</th><th class=l>field</th>\
             <th class=l>problem</th></tr>\n",
        );
        for p in &report.problems {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td class=l>{}</td><td class=l>{}</td></tr>",
                p.line,
                escape(p.field.as_deref().unwrap_or("")),
                escape(&p.message)
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body></html>\n");
    Ok(h)
}

fn figure(h: &mut String, svg: &str, caption: &str) {
    let _ = writeln!(
        h,
        "<figure>{svg}<figcaption>{}</figcaption></figure>",
        escape(caption)
    );
}

fn summary(h: &mut String, report: &Report) {
    h.push_str(
        "<h2>Summary</h2>\n<table><tr><th class=l>strategy</th><th>n</th><th>missing</th>\
         <th>accuracy [95% CI]</th><th>under-triage [95% CI]</th><th>emergencies missed</th>\
         <th>over-triage</th><th>admin routing</th><th>escalated</th>\
         <th>computed / req</th><th>reused / req</th><th>generated / req</th>\
         <th>$ / request</th><th>$ / 1,000</th><th>p50 ms</th><th>p95 ms</th>\
         <th>accuracy 4-level</th><th>accuracy 3-level</th></tr>\n",
    );
    for s in &report.strategies {
        let m = &s.metrics;
        let _ = writeln!(
            h,
            "<tr><td class=l>{name}</td><td>{n}</td><td>{missing}</td><td>{acc}{acc_ci}</td>\
             <td>{under}{under_ci}</td><td>{em}/{emn}</td><td>{over}</td><td>{admin}</td>\
             <td>{esc}</td><td>{comp:.0}</td><td>{reu:.0}</td><td>{gen:.0}</td><td>{cpr}{cpr_ci}</td>\
             <td>{c1k}</td><td>{p50}</td><td>{p95}</td><td>{a4}</td><td>{a3}</td></tr>",
            name = escape(&s.name),
            n = m.n,
            missing = m.missing,
            acc = pct(m.accuracy),
            acc_ci = ci(s.intervals.accuracy, 100.0, 1),
            under = pct(m.under_triage_rate),
            under_ci = ci(s.intervals.under_triage_rate, 100.0, 1),
            em = m.emergencies_missed,
            emn = m.emergencies,
            over = pct(m.over_triage_rate),
            admin = pct(m.admin_routing.accuracy),
            esc = pct(m.escalation_rate),
            comp = m.tokens_per_request.computed,
            reu = m.tokens_per_request.reused,
            gen = m.tokens_per_request.generated,
            cpr = num(m.cost_per_request_usd, 6),
            cpr_ci = ci(s.intervals.cost_per_request_usd, 1.0, 6),
            c1k = num(m.cost_per_1000_requests_usd, 4),
            p50 = num(m.latency_p50_ms, 0),
            p95 = num(m.latency_p95_ms, 0),
            a4 = pct(m.scales.four_level.accuracy),
            a3 = pct(m.scales.three_level.accuracy),
        );
    }
    h.push_str("</table>\n");
}

/// The finest scale every trial's gold collapses onto.
fn common_scale(m: &crate::score::Metrics) -> Scale {
    Scale::ALL
        .into_iter()
        .find(|s| m.scales.get(*s).n == m.n)
        .unwrap_or(Scale::ThreeLevel)
}

fn missed(h: &mut String, s: &crate::report::StrategyReport, items: &[SuiteItem]) {
    let by_id: HashMap<&str, &SuiteItem> = items.iter().map(|i| (i.id.as_str(), i)).collect();
    // (item, predicted) → times, for under-triaged or missing predictions.
    let mut rows: BTreeMap<(String, String), (usize, String)> = BTreeMap::new();
    for p in &s.predictions {
        let Some(item) = by_id.get(p.item_id.as_str()) else {
            continue;
        };
        let scale = item.gold.scale;
        let under = match (p.disposition, item.gold.on(scale)) {
            (Some(d), Some(g)) => match (scale.acuity(g), scale.acuity(scale.map(d))) {
                (Some(ga), Some(pa)) => pa < ga,
                (Some(_), None) => true,
                _ => false,
            },
            _ => false,
        };
        if !(under || p.disposition.is_none()) {
            continue;
        }
        let predicted = p
            .disposition
            .map(|d| d.label().to_string())
            .unwrap_or_else(|| "missing".into());
        let entry = rows
            .entry((p.item_id.clone(), predicted))
            .or_insert((0, String::new()));
        entry.0 += 1;
        if let Some(e) = &p.error {
            entry.1 = e.clone();
        }
    }
    if rows.is_empty() || items.is_empty() {
        return;
    }
    let _ = writeln!(
        h,
        "<h3>Under-triaged or unanswered ({} distinct)</h3>\n<table><tr><th class=l>id</th>\
         <th class=l>message</th><th class=l>gold</th><th class=l>predicted</th><th>times</th>\
         <th class=l>error</th></tr>",
        rows.len()
    );
    for ((id, predicted), (times, error)) in rows.iter().take(100) {
        let (message, gold) = by_id
            .get(id.as_str())
            .map(|i| (i.message.as_str(), i.gold.to_string()))
            .unwrap_or(("", String::new()));
        let _ = writeln!(
            h,
            "<tr><td class=l>{}</td><td class='l msg'>{}</td><td class=l>{}</td>\
             <td class=l>{}</td><td>{}</td><td class=l>{}</td></tr>",
            escape(id),
            escape(message),
            escape(&gold),
            escape(predicted),
            times,
            escape(error)
        );
    }
    h.push_str("</table>\n");
}

fn nice_max(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x * 1.15
    } else {
        1.0
    }
}

fn cost_accuracy_svg(report: &Report) -> Result<String, EvalError> {
    svg("cost vs accuracy", (560, 380), |root| {
        let points: Vec<(usize, &str, f64, f64)> = report
            .strategies
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                Some((
                    i,
                    s.name.as_str(),
                    s.metrics.cost_per_1000_requests_usd?,
                    s.metrics.accuracy?,
                ))
            })
            .collect();
        let x_hi = report
            .strategies
            .iter()
            .filter_map(|s| {
                s.intervals
                    .cost_per_request_usd
                    .map(|c| c.high * 1000.0)
                    .or(s.metrics.cost_per_1000_requests_usd)
            })
            .fold(0.0f64, f64::max);
        let mut chart = ChartBuilder::on(root)
            .caption("Cost vs accuracy", (FONT, 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(52)
            .build_cartesian_2d(0.0..nice_max(x_hi), 0.0..1.06f64)
            .map_err(e2s)?;
        chart
            .configure_mesh()
            .x_desc("USD per 1,000 requests")
            .y_desc("accuracy")
            .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .draw()
            .map_err(e2s)?;
        for (i, name, x, y) in &points {
            let c = color(*i);
            let s = &report.strategies[*i];
            if let Some(iv) = s.intervals.accuracy {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(*x, iv.low), (*x, iv.high)],
                        c.stroke_width(2),
                    )))
                    .map_err(e2s)?;
            }
            if let Some(iv) = s.intervals.cost_per_request_usd {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(iv.low * 1000.0, *y), (iv.high * 1000.0, *y)],
                        c.stroke_width(2),
                    )))
                    .map_err(e2s)?;
            }
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((*x, *y))
                        + Circle::new((0, 0), 6, c.filled())
                        + Text::new(
                            name.to_string(),
                            (10, 0),
                            (FONT, 13)
                                .into_font()
                                .color(&BLACK)
                                .pos(Pos::new(HPos::Left, VPos::Center)),
                        ),
                ))
                .map_err(e2s)?;
        }
        if points.is_empty() {
            root.draw(&Text::new("no data", (250, 190), (FONT, 14).into_font()))
                .map_err(e2s)?;
        }
        Ok(())
    })
}

fn latency_svg(report: &Report) -> Result<String, EvalError> {
    const BINS: usize = 20;
    svg("latency", (560, 380), |root| {
        let series: Vec<Vec<f64>> = report
            .strategies
            .iter()
            .map(|s| {
                s.predictions
                    .iter()
                    .map(|p| p.latency_ms)
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .collect()
            })
            .collect();
        let max = series.iter().flatten().copied().fold(0.0f64, f64::max);
        let hi = if max > 0.0 { max * 1.0001 } else { 1.0 };
        let width = hi / BINS as f64;
        let counts: Vec<[usize; BINS]> = series
            .iter()
            .map(|v| {
                let mut c = [0usize; BINS];
                for x in v {
                    c[((x / width) as usize).min(BINS - 1)] += 1;
                }
                c
            })
            .collect();
        let top = counts.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
        let mut chart = ChartBuilder::on(root)
            .caption("Latency distribution", (FONT, 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(52)
            .build_cartesian_2d(0.0..hi, 0.0..top * 1.4)
            .map_err(e2s)?;
        chart
            .configure_mesh()
            .x_desc("latency per request (ms)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("requests")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(e2s)?;
        let k = counts.len().max(1) as f64;
        for (si, c) in counts.iter().enumerate() {
            let col = color(si);
            let slot = width / k;
            chart
                .draw_series(c.iter().enumerate().filter(|(_, n)| **n > 0).map(|(b, n)| {
                    let x0 = b as f64 * width + si as f64 * slot;
                    Rectangle::new([(x0, 0.0), (x0 + slot, *n as f64)], col.mix(0.85).filled())
                }))
                .map_err(e2s)?
                .label(report.strategies[si].name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], col.filled()));
        }
        if !counts.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FONT, 12))
                .draw()
                .map_err(e2s)?;
        }
        Ok(())
    })
}

fn confusion_svg(name: &str, m: &crate::score::Metrics, scale: Scale) -> Result<String, EvalError> {
    let conf = &m.scales.get(scale).confusion;
    let rows = conf.labels.len();
    let cols = conf.columns.len();
    let (left, top, cell_w, cell_h, bottom) = (130i32, 44i32, 58i32, 34i32, 112i32);
    let w = (left + cols as i32 * cell_w + 16) as u32;
    let h = (top + rows as i32 * cell_h + bottom) as u32;
    svg("confusion matrix", (w, h), |root| {
        let title = format!("{name}: confusion ({})", scale.name());
        root.draw(&Text::new(
            title,
            (w as i32 / 2, 14),
            (FONT, 16)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(e2s)?;
        let acuity = |l: &str| scale.acuity(l);
        for (r, gold) in conf.labels.iter().enumerate() {
            let total: usize = conf.counts.get(r).map(|row| row.iter().sum()).unwrap_or(0);
            for (c, predicted) in conf.columns.iter().enumerate() {
                let n = conf
                    .counts
                    .get(r)
                    .and_then(|row| row.get(c))
                    .copied()
                    .unwrap_or(0);
                let share = if total > 0 {
                    n as f64 / total as f64
                } else {
                    0.0
                };
                let under = match (acuity(gold), predicted.as_str()) {
                    (Some(_), "missing") => false,
                    (Some(g), p) => acuity(p).map(|a| a < g).unwrap_or(true),
                    _ => false,
                };
                let base = if r == c {
                    RGBColor(33, 102, 172)
                } else if under {
                    RGBColor(178, 24, 43)
                } else {
                    RGBColor(90, 90, 90)
                };
                let fill = blend(base, share);
                let x0 = left + c as i32 * cell_w;
                let y0 = top + r as i32 * cell_h;
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell_w, y0 + cell_h)],
                    fill.filled(),
                ))
                .map_err(e2s)?;
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell_w, y0 + cell_h)],
                    RGBColor(200, 200, 200).stroke_width(1),
                ))
                .map_err(e2s)?;
                let ink = if share > 0.5 { WHITE } else { BLACK };
                root.draw(&Text::new(
                    n.to_string(),
                    (x0 + cell_w / 2, y0 + cell_h / 2),
                    (FONT, 14)
                        .into_font()
                        .color(&ink)
                        .pos(Pos::new(HPos::Center, VPos::Center)),
                ))
                .map_err(e2s)?;
            }
            root.draw(&Text::new(
                gold.clone(),
                (left - 6, top + r as i32 * cell_h + cell_h / 2),
                (FONT, 12)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(e2s)?;
        }
        for (c, predicted) in conf.columns.iter().enumerate() {
            root.draw(&Text::new(
                predicted.clone(),
                (
                    left + c as i32 * cell_w + cell_w / 2,
                    top + rows as i32 * cell_h + 6,
                ),
                (FONT, 12)
                    .into_font()
                    .color(&BLACK)
                    .transform(FontTransform::Rotate270)
                    .pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(e2s)?;
        }
        root.draw(&Text::new(
            "gold ↓ / predicted →",
            (6, top - 14),
            (FONT, 11).into_font().color(&RGBColor(90, 90, 90)),
        ))
        .map_err(e2s)?;
        Ok(())
    })
}

/// White blended towards `c` by `t` in [0, 1].
fn blend(c: RGBColor, t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mix = |a: u8| (255.0 + (f64::from(a) - 255.0) * t).round() as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

/// (step, computed, reused) per request; a strategy that reports no steps gets one bar for the
/// whole request.
fn step_bars(s: &crate::report::StrategyReport) -> Vec<(String, f64, f64)> {
    if s.metrics.steps.is_empty() {
        vec![(
            "request".to_string(),
            s.metrics.tokens_per_request.computed,
            s.metrics.tokens_per_request.reused,
        )]
    } else {
        s.metrics
            .steps
            .iter()
            .map(|st| (st.step.clone(), st.computed, st.reused))
            .collect()
    }
}

fn steps_svg(report: &Report, index: usize) -> Result<String, EvalError> {
    let s = &report.strategies[index];
    let bars = step_bars(s);
    // One y scale for every strategy, so stateless and stateful bars compare by eye.
    let y_max = report
        .strategies
        .iter()
        .flat_map(step_bars)
        .map(|(_, c, r)| c + r)
        .fold(0.0f64, f64::max);
    let n = bars.len() as u32;
    svg("per-step tokens", (560, 380), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("{}: tokens per request by step", s.name),
                (FONT, 16),
            )
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(60)
            .build_cartesian_2d(
                // Integer ranges are inclusive here: n bars are 0..=n-1.
                (0u32..n.saturating_sub(1)).into_segmented(),
                // Head room for the legend.
                0.0..nice_max(y_max) * 1.15,
            )
            .map_err(e2s)?;
        let label = |v: &SegmentValue<u32>| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => bars
                .get(*i as usize)
                .map(|b| b.0.clone())
                .unwrap_or_default(),
            SegmentValue::Last => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(bars.len() + 1)
            .x_label_formatter(&label)
            .y_desc("tokens")
            .y_label_formatter(&|v| {
                if y_max >= 10.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            })
            .draw()
            .map_err(e2s)?;
        let seg = |i: u32| SegmentValue::Exact(i);
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, c, _))| {
                let mut r = Rectangle::new(
                    [(seg(i as u32), 0.0), (seg(i as u32 + 1), *c)],
                    COMPUTED.filled(),
                );
                r.set_margin(0, 0, 12, 12);
                r
            }))
            .map_err(e2s)?
            .label("computed")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], COMPUTED.filled()));
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, c, r))| {
                let mut rect = Rectangle::new(
                    [(seg(i as u32), *c), (seg(i as u32 + 1), c + r)],
                    REUSED.filled(),
                );
                rect.set_margin(0, 0, 12, 12);
                rect
            }))
            .map_err(e2s)?
            .label("reused")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], REUSED.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 12))
            .draw()
            .map_err(e2s)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::Intervals;
    use crate::report::StrategyReport;
    use crate::score::score;

    #[test]
    fn degenerate_reports_still_render() {
        let empty = Report::new("empty.jsonl", Vec::new(), Vec::new());
        let page = render(&empty, &[]).expect("renders");
        assert_eq!(page.matches("<svg").count(), 2);
        // One strategy with nothing scored and no steps: one bar for the request.
        let items = vec![SuiteItem::new("x", "m", "routine").expect("gold")];
        let lonely = StrategyReport {
            name: "none".into(),
            repeats: 1,
            metrics: score(&items, &[]),
            intervals: Intervals::default(),
            predictions: Vec::new(),
        };
        let report = Report::new("one.jsonl", vec![lonely], Vec::new());
        let page = render(&report, &items).expect("renders");
        assert_eq!(page.matches("<svg").count(), 4);
        if let Ok(dir) = std::env::var("CAREFLOW_EVAL_HTML_OUT") {
            std::fs::write(Path::new(&dir).join("degenerate.html"), &page).expect("write");
        }
        assert!(page.contains("\nrequest\n"), "single bar label");
    }

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
