//! What the Retrieve step learned from the patient's record, in a form the rules can use.

use serde::{Deserialize, Serialize};

/// Facts read from the patient's record (OMOP tables) that red-flag rules and the clinical
/// step combine with the message. Every field is optional knowledge: `false`/empty means
/// "not found in the record", never "known absent".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordFacts {
    pub patient_id: Option<i64>,
    /// Age in whole years at the time of the request.
    pub age_years: Option<u32>,
    /// Age in whole months (for infants; rules on fever under 3 months need it).
    pub age_months: Option<u32>,
    /// `female`, `male` or `None` when unknown.
    pub sex: Option<String>,
    pub pregnant: bool,
    pub immunosuppressed: bool,
    pub anticoagulated: bool,
    pub cancer_history: bool,
    pub recent_surgery: bool,
    pub diabetes: bool,
    pub heart_disease: bool,
    /// Active or recent conditions, by name.
    pub conditions: Vec<String>,
    /// Current or recent medications, by name.
    pub medications: Vec<String>,
    /// Recent measurements as readable lines ("Body temperature 38.4 Cel (2024-03-02)").
    pub measurements: Vec<String>,
}

impl RecordFacts {
    /// A compact, readable summary to put in the model's context.
    pub fn summary(&self) -> String {
        let mut lines = Vec::new();
        let age = match (self.age_years, self.age_months) {
            (Some(y), _) if y >= 2 => format!("{y} years"),
            (_, Some(m)) => format!("{m} months"),
            (Some(y), None) => format!("{y} years"),
            (None, None) => "unknown".into(),
        };
        lines.push(format!(
            "Age: {age}; sex: {}",
            self.sex.as_deref().unwrap_or("unknown")
        ));
        let flags: Vec<&str> = [
            (self.pregnant, "pregnant"),
            (self.immunosuppressed, "immunosuppressed"),
            (self.anticoagulated, "on anticoagulants"),
            (self.cancer_history, "history of cancer"),
            (self.recent_surgery, "recent surgery"),
            (self.diabetes, "diabetes"),
            (self.heart_disease, "heart disease"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, s)| *s)
        .collect();
        if !flags.is_empty() {
            lines.push(format!("Risk factors: {}", flags.join(", ")));
        }
        if !self.conditions.is_empty() {
            lines.push(format!("Conditions: {}", self.conditions.join("; ")));
        }
        if !self.medications.is_empty() {
            lines.push(format!("Medications: {}", self.medications.join("; ")));
        }
        if !self.measurements.is_empty() {
            lines.push(format!(
                "Recent measurements: {}",
                self.measurements.join("; ")
            ));
        }
        lines.join("\n")
    }
}
