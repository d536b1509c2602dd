//! Readable output for people (tables); `--json` bypasses all of this.

use careflow_workflow::TriageOutcome;
use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar in careflow's style: `template` is indicatif's (the bar itself is
/// `[{bar:30}]`), `msg` the label. Hidden when standard error is not a terminal.
pub fn progress(len: u64, template: &str, msg: impl Into<String>) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg.into());
    pb
}

/// Prints rows under headers, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<w$}", c, w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.to_vec());
    println!(
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  ")
    );
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn print_outcome(o: &TriageOutcome) {
    println!(
        "Disposition: {}   (decision: {:?}, model confidence {:.2})",
        o.disposition.label().to_uppercase(),
        o.decision,
        o.confidence
    );
    if let (Some(p), true) = (o.proposed, o.proposed != Some(o.disposition)) {
        println!(
            "  the small model proposed {}; validation changed it",
            p.label()
        );
    }
    println!(
        "Decided by: {}{}   (workflow {}, request {}, cost ${:.6})",
        o.route.decided_by,
        if o.route.escalated {
            format!(" after escalation: {}", o.route.outcome)
        } else {
            String::new()
        },
        o.workflow,
        o.request_id,
        o.cost_usd
    );
    if o.route.escalated && !o.route.reasons.is_empty() {
        println!("  escalated because: {}", o.route.reasons.join("; "));
    }
    if let Some(h) = &o.route.handoff {
        println!(
            "  hand-off to {}: {} tokens (the small session held {})",
            h.model, h.tokens_submitted, h.transcript_tokens
        );
    }
    println!("\nReply to the patient:");
    for para in o.patient_reply.split("\n\n") {
        println!("  {para}");
    }
    println!("\nReasons:");
    for r in &o.reasons {
        println!("  - {r}");
    }
    if !o.notes.is_empty() {
        println!("Validation notes:");
        for n in &o.notes {
            println!("  - {n}");
        }
    }
    if !o.cited.is_empty() {
        println!("Guideline passages cited:");
        for c in &o.cited {
            println!("  [{}] {} ({})", c.id, c.title, c.source);
        }
    }
    if let Some(s) = &o.record_summary {
        println!(
            "Record read (patient {}):",
            o.patient_id.unwrap_or_default()
        );
        for l in s.lines() {
            println!("  {l}");
        }
    }
    if let Some(sql) = &o.sql {
        match (&sql.sql, &sql.fallback_reason) {
            (Some(q), None) => println!(
                "Model-written SQL ({} rows, scoped to the patient):\n  {q}",
                sql.rows
            ),
            (Some(q), Some(why)) => println!(
                "Model-written SQL refused ({why}):\n  {q}\n  the fixed record summary was used"
            ),
            (None, Some(why)) => {
                println!("Model-written SQL: none ({why}); the fixed record summary was used")
            }
            (None, None) => {}
        }
    }
    println!("\nPer step ({} mode, model {}):", o.mode.name(), o.model);
    let mut rows: Vec<Vec<String>> = o
        .steps
        .iter()
        .map(|s| {
            vec![
                s.step.clone(),
                s.tier.clone(),
                s.adapter.clone().unwrap_or_else(|| "-".into()),
                s.usage.submitted.to_string(),
                s.usage.computed.to_string(),
                s.usage.reused.to_string(),
                s.usage.generated.to_string(),
                format!("{:.6}", s.cost_usd),
                format!("{:.0}", s.millis),
            ]
        })
        .collect();
    rows.push(vec![
        "total".into(),
        String::new(),
        String::new(),
        o.totals.submitted.to_string(),
        o.totals.computed.to_string(),
        o.totals.reused.to_string(),
        o.totals.generated.to_string(),
        format!("{:.6}", o.cost_usd),
        format!("{:.0}", o.elapsed_ms),
    ]);
    table(
        &[
            "step",
            "tier",
            "adapter",
            "submitted",
            "computed",
            "reused",
            "generated",
            "cost $",
            "ms",
        ],
        &rows,
    );
    println!("\ncareflow supports clinicians; this is not a diagnosis.");
}
