//! The Validate step: deterministic checks on the model's proposal.
//!
//! 1. Floor: a proposal below the floor of a fired red-flag rule is raised to it (the model can
//!    never lower a rule's level).
//! 2. Consistency: an `admin` proposal for a message with clinical findings, or a clinical
//!    proposal for a pure admin request, is a conflict.
//! 3. Confidence: the probability the model gave its disposition label (from the token
//!    log-probabilities of the label's tokens).
//! 4. Decision: accept only when nothing conflicts and confidence is at or above the threshold;
//!    otherwise escalate (to the frontier tier, or to human review when none is configured).

use careflow_core::Disposition;
use careflow_knowledge::RuleOutcome;
use serde::Serialize;

/// What Validate decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Accept,
    Escalate,
    HumanReview,
}

#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    pub proposed: Option<Disposition>,
    pub final_disposition: Disposition,
    pub floor: Option<Disposition>,
    pub raised_to_floor: bool,
    pub confidence: f32,
    pub decision: Decision,
    pub notes: Vec<String>,
}

/// Inputs to [`validate`].
pub struct Proposal<'a> {
    /// `None` when the model's output did not parse or named no valid label.
    pub disposition: Option<Disposition>,
    pub confidence: f32,
    pub rules: &'a RuleOutcome,
}

pub fn validate(
    p: Proposal<'_>,
    confidence_threshold: f32,
    frontier_available: bool,
) -> Validation {
    let mut notes = Vec::new();
    let mut conflict = false;
    let floor = p.rules.floor;
    let proposed = p.disposition;
    let mut disposition = match proposed {
        Some(d) => d,
        None => {
            notes.push("the model's analysis did not give a valid disposition".into());
            conflict = true;
            // Without a usable proposal, start from the floor, or the cautious middle.
            floor.unwrap_or(Disposition::Within24To72h)
        }
    };
    let mut raised = false;
    if let Some(f) = floor {
        if disposition.is_below(f) {
            let ids: Vec<&str> = p
                .rules
                .fired
                .iter()
                .filter(|r| r.level == f)
                .map(|r| r.id.as_str())
                .collect();
            notes.push(format!(
                "raised from {} to {} by red-flag rule {}",
                disposition,
                f,
                ids.join(", ")
            ));
            disposition = f;
            raised = true;
            conflict = true;
        }
    }
    if disposition == Disposition::Admin && !p.rules.admin_request && !p.rules.findings.is_empty() {
        notes.push(format!(
            "admin route proposed but the message reports symptoms ({})",
            p.rules.findings.join(", ")
        ));
        disposition = Disposition::Routine;
        conflict = true;
    }
    if p.rules.admin_request && floor.is_none() && disposition != Disposition::Admin {
        notes.push("rules see a pure admin request; the model proposed a clinical level".into());
        conflict = true;
    }
    if disposition == Disposition::EmergencyNow && floor != Some(Disposition::EmergencyNow) {
        // Kept (the safe side), but a clinician or the frontier tier confirms it.
        notes.push("emergency proposed without a matching red-flag rule".into());
        conflict = true;
    }
    if p.confidence < confidence_threshold {
        notes.push(format!(
            "model confidence {:.2} is below the threshold {:.2}",
            p.confidence, confidence_threshold
        ));
    }
    let decision = if !conflict && p.confidence >= confidence_threshold {
        Decision::Accept
    } else if frontier_available {
        Decision::Escalate
    } else {
        notes.push("no frontier tier is configured: sent to human review".into());
        Decision::HumanReview
    };
    Validation {
        proposed,
        final_disposition: disposition,
        floor,
        raised_to_floor: raised,
        confidence: p.confidence,
        decision,
        notes,
    }
}

/// Probability of the substring `value` inside a generation, from the log-probabilities of the
/// tokens that overlap it (tokens forced by the constraint have probability 1 and add nothing).
pub fn span_probability(
    piece_lens: &[usize],
    logprobs: &[f32],
    value_start: usize,
    value_len: usize,
) -> f32 {
    let end = value_start + value_len;
    let mut at = 0usize;
    let mut sum = 0f32;
    for (len, lp) in piece_lens.iter().zip(logprobs) {
        let next = at + len;
        if next > value_start && at < end {
            sum += lp;
        }
        at = next;
    }
    sum.exp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use careflow_knowledge::RuleSet;

    fn rules(message: &str) -> RuleOutcome {
        RuleSet::embedded()
            .unwrap()
            .evaluate(message, &careflow_core::RecordFacts::default())
    }

    #[test]
    fn a_model_below_the_floor_is_raised_and_never_accepted() {
        let r = rules("back pain and I can't control my bladder");
        let v = validate(
            Proposal {
                disposition: Some(Disposition::SelfCare),
                confidence: 0.99,
                rules: &r,
            },
            0.6,
            false,
        );
        assert_eq!(v.final_disposition, Disposition::EmergencyNow);
        assert!(v.raised_to_floor);
        assert_eq!(v.decision, Decision::HumanReview);
        let v = validate(
            Proposal {
                disposition: Some(Disposition::SelfCare),
                confidence: 0.99,
                rules: &r,
            },
            0.6,
            true,
        );
        assert_eq!(v.decision, Decision::Escalate);
    }

    #[test]
    fn a_confident_consistent_answer_is_accepted_and_an_unsure_one_is_not() {
        let r = rules("I've had sharp lower back pain for 3 days. Should I be worried?");
        let ok = Proposal {
            disposition: Some(Disposition::SelfCare),
            confidence: 0.9,
            rules: &r,
        };
        assert_eq!(validate(ok, 0.6, false).decision, Decision::Accept);
        let unsure = Proposal {
            disposition: Some(Disposition::SelfCare),
            confidence: 0.3,
            rules: &r,
        };
        assert_eq!(validate(unsure, 0.6, false).decision, Decision::HumanReview);
        let garbled = Proposal {
            disposition: None,
            confidence: 0.0,
            rules: &r,
        };
        let v = validate(garbled, 0.6, false);
        assert_eq!(v.decision, Decision::HumanReview);
        assert_eq!(v.final_disposition, Disposition::Within24To72h);
    }

    #[test]
    fn admin_for_symptoms_and_unsupported_emergencies_are_flagged() {
        let r = rules("I've had sharp lower back pain for 3 days");
        let v = validate(
            Proposal {
                disposition: Some(Disposition::Admin),
                confidence: 0.95,
                rules: &r,
            },
            0.6,
            false,
        );
        assert_eq!(v.final_disposition, Disposition::Routine);
        assert_ne!(v.decision, Decision::Accept);
        let v = validate(
            Proposal {
                disposition: Some(Disposition::EmergencyNow),
                confidence: 0.95,
                rules: &r,
            },
            0.6,
            false,
        );
        assert_eq!(
            v.final_disposition,
            Disposition::EmergencyNow,
            "over-triage is kept"
        );
        assert_ne!(v.decision, Decision::Accept, "but reviewed");
    }
}
