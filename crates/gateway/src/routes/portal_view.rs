//! What a portal key sees of a triage request: an allow-listed view, never the workflow's
//! internal outcome (its steps hold the model's drafted answer, the record summary, the
//! prompts).
//!
//! Release: a case the workflow did not settle alone (`decided_by` `human_review` or
//! `frontier`) waits for a clinician. Until a decision exists the view has
//! `"release": "held_for_review"`, `patient_reply: null` and an `interim_reply` that says a
//! clinician will review the message — with the emergency instruction when the case's
//! urgency (the more urgent of its disposition and red-flag floor) is `emergency_now`, so that
//! advice is never held back. After a confirmation the drafted answer is released; after an
//! override, an answer for the clinician's disposition. A clinician's decision applies to any
//! case, also one the workflow had settled.

use crate::store::{needs_review, RequestRow, ReviewRecord};
use careflow_core::Disposition;
use careflow_workflow::prompts::SAFETY_NET;
use careflow_workflow::TriageOutcome;
use serde_json::{json, Value};

/// The parts of a decided outcome the portal view is made of.
pub struct Decided<'a> {
    pub disposition: &'a str,
    pub decided_by: &'a str,
    pub floor: Option<&'a str>,
    pub patient_reply: &'a str,
    pub patient_id: Option<i64>,
    /// `[{id, title, source}]`: the guideline passages the answer cites.
    pub cited: Value,
}

impl<'a> Decided<'a> {
    pub fn from_outcome(o: &'a TriageOutcome) -> Decided<'a> {
        Decided {
            disposition: o.disposition.label(),
            decided_by: &o.route.decided_by,
            floor: o.floor.map(Disposition::label),
            patient_reply: &o.patient_reply,
            patient_id: o.patient_id,
            cited: serde_json::to_value(&o.cited).unwrap_or(Value::Null),
        }
    }

    pub fn from_json(o: &'a Value) -> Decided<'a> {
        let s = |p: &str| o.pointer(p).and_then(Value::as_str);
        Decided {
            disposition: s("/disposition").unwrap_or(""),
            decided_by: s("/route/decided_by").unwrap_or(""),
            floor: s("/floor"),
            patient_reply: s("/patient_reply").unwrap_or(""),
            patient_id: o.get("patient_id").and_then(Value::as_i64),
            cited: o.get("cited").cloned().unwrap_or(Value::Null),
        }
    }
}

fn interim(urgency: Option<Disposition>) -> String {
    let emergency = if urgency == Some(Disposition::EmergencyNow) {
        format!("{}\n\n", Disposition::EmergencyNow.patient_phrase())
    } else {
        String::new()
    };
    format!(
        "{emergency}Thank you for your message. A clinician will review it and reply here.\n\n{SAFETY_NET}"
    )
}

fn urgency(d: &Decided<'_>) -> Option<Disposition> {
    let a = d.disposition.parse::<Disposition>().ok();
    let b = d.floor.and_then(|f| f.parse::<Disposition>().ok());
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max_acuity(b)),
        (a, b) => a.or(b),
    }
}

/// The portal's view of a request; `decided` for a done one.
pub fn view(
    request_id: &str,
    row: Option<&RequestRow>,
    decided: Option<&Decided<'_>>,
    review: Option<&ReviewRecord>,
) -> Value {
    let mut v = json!({
        "request_id": request_id,
        "status": row.map_or("done", |r| r.status.as_str()),
    });
    if let Some(r) = row {
        v["created_at_ms"] = json!(r.created_at_ms);
        v["finished_at_ms"] = json!(r.finished_at_ms);
        v["patient_id"] = json!(r.patient_id);
        v["error"] = match &r.error_kind {
            Some(k) => json!({"code": k, "message": r.error}),
            None => Value::Null,
        };
    }
    let Some(d) = decided else {
        return v;
    };
    v["patient_id"] = json!(d.patient_id);
    v["cited"] = d.cited.clone();
    let (release, disposition, decided_by, reply, interim_reply) = match review {
        Some(r) if r.action == "override" => {
            let reply = r.disposition.parse::<Disposition>().ok().map(|new| {
                format!(
                    "A clinician reviewed your message.\n\n{}\n\n{SAFETY_NET}",
                    new.patient_phrase()
                )
            });
            ("released", r.disposition.as_str(), "clinician", reply, None)
        }
        Some(r) => (
            "released",
            r.disposition.as_str(),
            "clinician",
            Some(d.patient_reply.to_string()),
            None,
        ),
        None if needs_review(d.decided_by) => (
            "held_for_review",
            d.disposition,
            d.decided_by,
            None,
            Some(interim(urgency(d))),
        ),
        None => (
            "released",
            d.disposition,
            d.decided_by,
            Some(d.patient_reply.to_string()),
            None,
        ),
    };
    v["release"] = json!(release);
    v["disposition"] = json!(disposition);
    v["decided_by"] = json!(decided_by);
    v["patient_reply"] = json!(reply);
    v["interim_reply"] = json!(interim_reply);
    v["review"] = match review {
        Some(r) => json!({"action": r.action, "disposition": r.disposition, "at_ms": r.at_ms}),
        None => Value::Null,
    };
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided<'a>(disposition: &'a str, by: &'a str, floor: Option<&'a str>) -> Decided<'a> {
        Decided {
            disposition,
            decided_by: by,
            floor,
            patient_reply: "the draft",
            patient_id: Some(3),
            cited: json!([]),
        }
    }

    fn review(action: &str, disposition: &str) -> ReviewRecord {
        ReviewRecord {
            request_id: "r".into(),
            reviewer_key_id: "k".into(),
            action: action.into(),
            disposition: disposition.into(),
            previous: "routine".into(),
            reason: None,
            at_ms: 1,
        }
    }

    #[test]
    fn a_held_case_gives_an_interim_answer_with_the_emergency_advice_when_it_is_one() {
        let v = view(
            "r",
            None,
            Some(&decided("routine", "human_review", None)),
            None,
        );
        assert_eq!(v["release"], "held_for_review");
        assert!(v["patient_reply"].is_null());
        let interim = v["interim_reply"].as_str().unwrap();
        assert!(interim.contains("A clinician will review it"));
        assert!(!interim.contains(Disposition::EmergencyNow.patient_phrase()));
        let v = view(
            "r",
            None,
            Some(&decided(
                "urgent_same_day",
                "frontier",
                Some("emergency_now"),
            )),
            None,
        );
        let interim = v["interim_reply"].as_str().unwrap();
        assert!(
            interim.contains(Disposition::EmergencyNow.patient_phrase()),
            "{interim}"
        );
        assert!(v.get("outcome").is_none() && v.get("steps").is_none());
    }

    #[test]
    fn a_decision_releases_the_draft_or_the_clinicians_answer_whoever_decided_first() {
        let d = decided("routine", "human_review", None);
        let v = view("r", None, Some(&d), Some(&review("confirm", "routine")));
        assert_eq!(v["patient_reply"], "the draft");
        assert_eq!(v["decided_by"], "clinician");
        let settled = decided("self_care", "small", None);
        let v = view("r", None, Some(&settled), None);
        assert_eq!(
            (v["release"].as_str(), v["patient_reply"].as_str()),
            (Some("released"), Some("the draft"))
        );
        let v = view(
            "r",
            None,
            Some(&settled),
            Some(&review("override", "urgent_same_day")),
        );
        assert_eq!(v["disposition"], "urgent_same_day");
        let reply = v["patient_reply"].as_str().unwrap();
        assert!(
            reply.contains(Disposition::UrgentSameDay.patient_phrase())
                && !reply.contains("the draft")
        );
    }
}
