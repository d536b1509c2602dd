//! The texts the model sees. The shared prefix is the same for every request (so it is
//! computed once and forked); each step adds only its own short instruction.

use careflow_core::Disposition;
use careflow_engine::ChatMessage;
use serde_json::{json, Value};

pub const SYSTEM: &str = "You are careflow, an assistant that helps a clinic's nurses triage \
patient-portal messages. You support clinicians; you do not diagnose. Work in steps: PLAN, \
RETRIEVE, ANALYZE, VALIDATE, RESPOND. Always answer in the JSON the step asks for. \
Dispositions, most to least urgent: emergency_now (call emergency services or go to the \
emergency department now), urgent_same_day (be seen today), within_24_72h (be seen in 1 to 3 \
days), routine (appointment within about two weeks), self_care (home care with advice on \
when to seek help). Use admin for refills, scheduling and paperwork with no symptoms. When in \
doubt, choose the more urgent level. Red flags in the digest below override everything else.";

/// The shared prefix: system prompt, schema card and guideline digest.
pub fn shared_prefix(schema_card: &str, digest: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::system(format!(
        "{SYSTEM}\n\n# Patient record tables\n{schema_card}\n\n# Clinical digest\n{digest}"
    ))]
}

pub fn plan_instruction(message: &str) -> String {
    format!(
        "PLAN. Patient message:\n\"\"\"\n{message}\n\"\"\"\nName the main complaint in a few \
         words, say whether the patient's record is needed, and whether the case is simple or \
         complex."
    )
}

pub fn plan_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "complaint": {"type": "string", "pattern": "^[A-Za-z][A-Za-z ,'-]{2,59}$"},
            "needs_record": {"type": "boolean"},
            "complexity": {"enum": ["simple", "complex"]}
        },
        "required": ["complaint", "needs_record", "complexity"],
        "additionalProperties": false
    })
}

pub fn sql_instruction(dialect: &str, complaint_hint: &str) -> String {
    format!(
        "RETRIEVE. Write one {dialect} SELECT over the patient record tables that reads what \
         this case needs ({complaint_hint}): for example recent conditions with their names, \
         current medications, or the latest measurements. Join concept for names. The database \
         already limits every table to this patient."
    )
}

pub fn sql_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"sql": {"type": "string", "pattern": "^(SELECT|WITH) [^;]{10,400}$"}},
        "required": ["sql"],
        "additionalProperties": false
    })
}

pub fn analyze_instruction() -> &'static str {
    "ANALYZE. Using the message, the record and the guideline passages above, choose the \
     disposition, give up to three short reasons, and cite the passage ids you used."
}

pub fn analyze_schema(passage_ids: &[String]) -> Value {
    let labels: Vec<&str> = Disposition::ALL.iter().map(|d| d.label()).collect();
    let cited = if passage_ids.is_empty() {
        json!({"type": "array", "maxItems": 0})
    } else {
        json!({"type": "array", "items": {"enum": passage_ids}, "maxItems": passage_ids.len().min(3)})
    };
    json!({
        "type": "object",
        "properties": {
            "disposition": {"enum": labels},
            "reasons": {"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9 ,.;:'()/-]{9,89}$"}, "minItems": 1, "maxItems": 3},
            "cited": cited
        },
        "required": ["disposition", "reasons", "cited"],
        "additionalProperties": false
    })
}

pub fn respond_instruction(final_disposition: Disposition) -> String {
    format!(
        "RESPOND. Write a short, kind reply to the patient (two or three sentences, plain \
         words) that tells them to: {} Do not name a diagnosis.",
        final_disposition.patient_phrase()
    )
}

pub fn respond_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"reply": {"type": "string", "pattern": "^[A-Z][A-Za-z0-9 ,.;:'()/!?-]{19,299}$"}},
        "required": ["reply"],
        "additionalProperties": false
    })
}

/// The line every patient-facing answer ends with.
pub const SAFETY_NET: &str = "This reply was prepared with careflow to support your care team. \
If your symptoms get worse or you feel very unwell, call emergency services or go to the \
nearest emergency department.";
