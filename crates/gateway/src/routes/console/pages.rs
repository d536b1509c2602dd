//! The console's pages, rendered on the server with maud: every value interpolated into a
//! page is HTML-escaped by the template engine, so a patient's `<script>` is shown as text.
//! Links from data (guideline sources) are kept only when they are http(s) URLs. No inline
//! script or style: the Content-Security-Policy allows only `/console/assets/*`.

use crate::store::{ConsoleSession, Figures, QueueItem, RequestRow, ReviewRecord, SignIn};
use careflow_core::Disposition;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde_json::Value;

const CLINICIAN_NOTE: &str = "careflow supports clinicians: every disposition here is a \
proposal for a clinician's judgement, not a diagnosis.";

/// `YYYY-MM-DD HH:MM UTC`.
pub fn when(ms: i64) -> String {
    format!("{} UTC", careflow_core::time::utc_minute(ms))
}

fn href(url: &str) -> Option<&str> {
    (url.starts_with("https://") || url.starts_with("http://")).then_some(url)
}

fn level_class(label: &str) -> &'static str {
    match label {
        "emergency_now" => "lvl lvl-emergency",
        "urgent_same_day" => "lvl lvl-urgent",
        "within_24_72h" => "lvl lvl-soon",
        "routine" => "lvl lvl-routine",
        "self_care" => "lvl lvl-self",
        _ => "lvl lvl-admin",
    }
}

fn level(label: &str) -> Markup {
    html! { span class=(level_class(label)) { (label) } }
}

fn layout(title: &str, session: Option<&ConsoleSession>, active: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · careflow" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                header.top {
                    span.brand { "careflow" }
                    @if let Some(s) = session {
                        nav {
                            a href="/console" class=[(active == "queue").then_some("on")] { "Review queue" }
                            a href="/console/audit" class=[(active == "audit").then_some("on")] { "Audit" }
                            a href="/console/dashboard" class=[(active == "dashboard").then_some("on")] { "Dashboard" }
                        }
                        form.signout method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(s.csrf_token);
                            span.who { (s.key_name) " (" (s.role) ")" }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
                footer { (CLINICIAN_NOTE) }
            }
        }
    }
}

pub fn login(error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        "",
        html! {
            section.card.narrow {
                h1 { "Clinician sign-in" }
                p { "Sign in with a clinician or admin API key (" code { "careflow keys create --role clinician" } "). Portal keys cannot open the console." }
                @if let Some(e) = error { p.error role="alert" { (e) } }
                form method="post" action="/console/login" {
                    label for="api_key" { "API key" }
                    input #api_key type="password" name="api_key" autocomplete="off" required;
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// A page that only says something (refusals, stale forms).
pub fn notice(title: &str, text: &str, session: Option<&ConsoleSession>) -> Markup {
    layout(
        title,
        session,
        "",
        html! {
            section.card.narrow {
                h1 { (title) }
                p.error role="alert" { (text) }
                p { a href="/console" { "Back to the console" } }
            }
        },
    )
}

pub fn queue(items: &[QueueItem], session: &ConsoleSession, now_ms: i64) -> Markup {
    layout(
        "Review queue",
        Some(session),
        "queue",
        html! {
            h1 { "Review queue" }
            p.muted { "Cases the workflow sent to a clinician or escalated to the frontier model, most urgent first, then oldest. The patient's answer is held until a decision is recorded." }
            @if items.is_empty() {
                p #queue-empty { "No case is waiting for review." }
            } @else {
                table #queue {
                    thead { tr { th { "Urgency" } th { "Proposed" } th { "Red-flag floor" } th { "Decided by" } th { "Patient" } th { "Waiting" } th {} } }
                    tbody {
                        @for i in items {
                            tr data-request=(i.request_id) {
                                td { (level(&i.urgency)) }
                                td { (level(&i.disposition)) }
                                td { @if let Some(f) = &i.floor { (level(f)) } @else { "—" } }
                                td { (i.decided_by) }
                                td { @if let Some(p) = i.patient_id { (p) } @else { "—" } }
                                td { (waited(now_ms - i.created_at_ms)) }
                                td { a.open href={"/console/case/" (i.request_id)} { "Open" } }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn waited(ms: i64) -> String {
    let m = (ms / 60_000).max(0);
    if m < 60 {
        format!("{m} min")
    } else if m < 48 * 60 {
        format!("{} h {} min", m / 60, m % 60)
    } else {
        format!("{} days", m / (24 * 60))
    }
}

/// Everything the case page shows.
pub struct CaseView<'a> {
    pub row: &'a RequestRow,
    pub message: Option<&'a str>,
    pub outcome: &'a Value,
    pub review: Option<&'a ReviewRecord>,
    pub error: Option<&'a str>,
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn num(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_u64() {
                i.to_string()
            } else {
                format!("{:.2}", n.as_f64().unwrap_or(0.0))
            }
        }
        _ => "—".into(),
    }
}

pub fn case(v: &CaseView<'_>, session: &ConsoleSession) -> Markup {
    let o = v.outcome;
    let disposition = text(o, "disposition");
    let route = o.get("route").unwrap_or(&Value::Null);
    layout(
        "Case",
        Some(session),
        "queue",
        html! {
            h1 { "Case " code { (v.row.request_id) } }
            @if let Some(e) = v.error { p.error role="alert" { (e) } }
            div.grid {
                section.card {
                    h2 { "Patient message" }
                    @if let Some(m) = v.message {
                        blockquote #message { (m) }
                    } @else {
                        p.muted { "The message text was not kept for this request (its SHA-256: " code { (v.row.message_sha256) } ")." }
                    }
                    dl {
                        dt { "Patient" } dd { @if let Some(p) = v.row.patient_id { (p) } @else { "not linked" } }
                        dt { "Received" } dd { (when(v.row.created_at_ms)) }
                        dt { "Status" } dd { (v.row.status) }
                    }
                }
                section.card {
                    h2 { "Proposed disposition" }
                    p #proposed { (level(disposition)) }
                    dl {
                        dt { "Decided by" } dd #decided-by { (text(route, "decided_by")) }
                        dt { "Model's proposal" } dd { @if let Some(p) = o.get("proposed").and_then(Value::as_str) { (level(p)) } @else { "—" } }
                        dt { "Red-flag floor" } dd { @if let Some(f) = o.get("floor").and_then(Value::as_str) { (level(f)) } @else { "none fired" } }
                        dt { "Confidence" } dd { (num(o, "/confidence")) }
                        dt { "Route" } dd { (text(route, "outcome")) }
                    }
                    @let why = strs(route.get("reasons").unwrap_or(&Value::Null));
                    @if !why.is_empty() {
                        h3 { "Why it came to review" }
                        ul { @for r in why { li { (r) } } }
                    }
                }
            }
            section.card #decision {
                h2 { "Decision" }
                @if let Some(r) = v.review {
                    p #review-status {
                        strong { (r.action) } " — " (level(&r.disposition))
                        @if r.action == "override" { " (was " (r.previous) ")" }
                        " by key " code { (r.reviewer_key_id) } " at " (when(r.at_ms))
                    }
                    @if let Some(reason) = &r.reason { p { "Reason: " span #review-reason { (reason) } } }
                    p.muted { "The patient's answer is released with this decision." }
                } @else if v.row.status == "done" {
                    p.muted { "Confirm the proposed disposition, or override it with yours and a reason. The patient's answer is held until then. One decision per case, recorded with your key." }
                    form #review-form method="post" action={"/console/case/" (v.row.request_id)} {
                        input type="hidden" name="csrf" value=(session.csrf_token);
                        fieldset {
                            label { input type="radio" name="action" value="confirm" checked; " Confirm " (disposition) }
                            label { input type="radio" name="action" value="override"; " Override" }
                        }
                        label for="disposition" { "New disposition (override)" }
                        select #disposition name="disposition" {
                            option value="" { "—" }
                            @for d in Disposition::ALL {
                                option value=(d.label()) { (d.label()) }
                            }
                        }
                        label for="reason" { "Reason (required to override)" }
                        textarea #reason name="reason" rows="3" maxlength="2000" {}
                        button #submit-review type="submit" { "Record decision" }
                    }
                } @else {
                    p.muted { "This request has no outcome to review (" (v.row.status) ")." }
                }
            }
            section.card {
                h2 { "Rules that fired" }
                @let rules = o.get("rules_fired").and_then(Value::as_array).cloned().unwrap_or_default();
                @if rules.is_empty() { p.muted { "No red-flag rule fired." } } @else {
                    table #rules {
                        thead { tr { th { "Rule" } th { "Floor" } th { "Because" } th { "Source" } } }
                        tbody { @for r in &rules {
                            tr {
                                td { code { (text(r, "id")) } br; (text(r, "title")) }
                                td { (level(text(r, "level"))) }
                                td { ul { @for b in strs(r.get("because").unwrap_or(&Value::Null)) { li { (b) } } } }
                                td { (source(text(r, "source"))) }
                            }
                        } }
                    }
                }
            }
            div.grid {
                section.card {
                    h2 { "Reasons" }
                    ul #reasons { @for r in strs(o.get("reasons").unwrap_or(&Value::Null)) { li { (r) } } }
                    @let notes = strs(o.get("notes").unwrap_or(&Value::Null));
                    @if !notes.is_empty() { h3 { "Validation notes" } ul { @for n in notes { li { (n) } } } }
                }
                section.card {
                    h2 { "Cited guideline passages" }
                    @let cited = o.get("cited").and_then(Value::as_array).cloned().unwrap_or_default();
                    @if cited.is_empty() { p.muted { "None cited." } } @else {
                        ul #cited { @for c in &cited {
                            li { code { (text(c, "id")) } " " (text(c, "title")) " — " (source(text(c, "source"))) }
                        } }
                    }
                }
            }
            section.card {
                h2 { "Record facts the workflow read" }
                @if let Some(s) = o.get("record_summary").and_then(Value::as_str) {
                    pre #record { (s) }
                } @else { p.muted { "No patient record was read." } }
                @if let Some(sql) = o.get("sql").filter(|s| !s.is_null()) {
                    h3 { "Model-written SQL (guarded, scoped to the patient)" }
                    @if let Some(q) = sql.get("sql_run").and_then(Value::as_str) { pre { (q) } }
                    p { (num(sql, "/rows")) " rows"
                        @if let Some(f) = sql.get("fallback_reason").and_then(Value::as_str) { " — fell back to the record summary: " (f) } }
                }
            }
            section.card {
                h2 { "Steps" }
                table #steps {
                    thead { tr { th { "Step" } th { "Tier" } th { "Model" } th { "Adapter" } th.n { "Computed" } th.n { "Reused" } th.n { "Generated" } th.n { "ms" } th.n { "Cost $" } } }
                    tbody { @for s in o.get("steps").and_then(Value::as_array).cloned().unwrap_or_default() {
                        tr {
                            td { (text(&s, "step")) }
                            td { (text(&s, "tier")) }
                            td { (text(&s, "model")) }
                            td { (text(&s, "adapter")) }
                            td.n { (num(&s, "/usage/computed")) }
                            td.n { (num(&s, "/usage/reused")) }
                            td.n { (num(&s, "/usage/generated")) }
                            td.n { (num(&s, "/millis")) }
                            td.n { (format!("{:.6}", s.get("cost_usd").and_then(Value::as_f64).unwrap_or(0.0))) }
                        }
                    } }
                }
            }
            section.card {
                h2 { "Draft answer to the patient (held until the decision)" }
                pre #draft { (text(o, "patient_reply")) }
            }
        },
    )
}

fn source(url: &str) -> Markup {
    match href(url) {
        Some(u) => html! { a href=(u) rel="noopener noreferrer" target="_blank" { (u) } },
        None => html! { (url) },
    }
}

pub fn audit(
    rows: &[(ReviewRecord, String)],
    sign_ins: &[SignIn],
    session: &ConsoleSession,
) -> Markup {
    layout(
        "Audit",
        Some(session),
        "audit",
        html! {
            h1 { "Review audit" }
            p.muted { "Every clinician decision, newest first. Decisions are append-only: the database refuses to change or delete one." }
            @if rows.is_empty() { p { "No decision yet." } } @else {
                table #audit {
                    thead { tr { th { "When" } th { "Case" } th { "Action" } th { "Before" } th { "After" } th { "Reason" } th { "Reviewer" } } }
                    tbody { @for (r, name) in rows {
                        tr data-request=(r.request_id) {
                            td { (when(r.at_ms)) }
                            td { a href={"/console/case/" (r.request_id)} { code { (r.request_id) } } }
                            td.action { (r.action) }
                            td { (level(&r.previous)) }
                            td { (level(&r.disposition)) }
                            td { (r.reason.as_deref().unwrap_or("")) }
                            td { (name) " " code { (r.reviewer_key_id) } }
                        }
                    } }
                }
            }
            h2 { "Sign-ins" }
            table #sign-ins {
                thead { tr { th { "Signed in" } th { "Key" } th { "Role" } th { "Ended" } th { "Expires" } } }
                tbody { @for s in sign_ins {
                    tr {
                        td { (when(s.created_at_ms)) }
                        td { (s.key_name) " " code { (s.api_key_id) } }
                        td { (s.role) }
                        td { @if let Some(e) = s.ended_at_ms { (when(e)) } @else { "—" } }
                        td { (when(s.expires_at_ms)) }
                    }
                } }
            }
        },
    )
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

pub fn dashboard(f: &Figures, session: &ConsoleSession) -> Markup {
    let ratio = if f.cost_usd > 0.0 {
        format!("{:.0}× less", f.flagship_usd / f.cost_usd)
    } else {
        "—".into()
    };
    layout(
        "Dashboard",
        Some(session),
        "dashboard",
        html! {
            h1 { "Operations" }
            p.muted { "Refreshed every 10 seconds from " code { "/console/dashboard.json" } "; the same counters are at " code { "/metrics" } " (careflow_decisions_total, careflow_tokens_total, careflow_cost_usd_total, careflow_flagship_equivalent_usd_total, careflow_reviews_total, careflow_step_duration_seconds)." }
            div.tiles #tiles {
                div.tile { span.k { "Decisions" } span.v #t-decisions { (f.decisions) } }
                div.tile { span.k { "Escalation rate" } span.v #t-escalation { (pct(f.escalation_rate)) } }
                div.tile { span.k { "Review rate" } span.v #t-review { (pct(f.review_rate)) } }
                div.tile { span.k { "Waiting for review" } span.v #t-pending { (f.pending_review) } }
                div.tile { span.k { "careflow cost" } span.v #t-cost { "$" (format!("{:.4}", f.cost_usd)) } }
                div.tile { span.k { "Flagship API, same tokens" } span.v #t-flagship { "$" (format!("{:.4}", f.flagship_usd)) } }
                div.tile { span.k { "Saving" } span.v #t-ratio { (ratio) } }
                div.tile { span.k { "Tokens reused / computed" } span.v #t-tokens { (f.reused) " / " (f.computed) } }
            }
            div.charts {
                figure { figcaption { "Requests per day" } div.chart #c-requests {} }
                figure { figcaption { "Disposition mix" } div.chart #c-dispositions {} }
                figure { figcaption { "Escalation and review per day" } div.chart #c-rates {} }
                figure { figcaption { "Cost per day: careflow vs flagship API (stateless, same tokens)" } div.chart #c-cost {} }
                figure { figcaption { "Tokens per day: computed vs reused" } div.chart #c-tokens {} }
                figure { figcaption { "Step latency, p50 and p95 (ms)" } div.chart #c-latency {} }
            }
            table #latency {
                thead { tr { th { "Step" } th { "Tier" } th.n { "Runs" } th.n { "p50 ms" } th.n { "p95 ms" } } }
                tbody { @for s in &f.steps { tr { td { (s.step) } td { (s.tier) } td.n { (s.count) } td.n { (format!("{:.1}", s.p50_ms)) } td.n { (format!("{:.1}", s.p95_ms)) } } } }
            }
            // The first figures, for the charts to draw before the first refresh (JSON in a
            // data block is inert: the policy runs no inline script).
            script #figures type="application/json" { (PreEscaped(json_for_html(f))) }
        },
    )
}

/// The figures as JSON safe inside a `<script type="application/json">`: `<` escaped so no
/// text can close the element.
fn json_for_html(f: &Figures) -> String {
    serde_json::to_string(f)
        .unwrap_or_else(|_| "{}".into())
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}
