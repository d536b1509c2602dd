//! The fixed texts that are safety properties, not prompts: they do not live in a workflow
//! file because no workflow may change them.

use serde_json::{json, Value};

/// The output schema of model-written SQL: one SELECT (or WITH) the guard then parses.
pub fn sql_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"sql": {"type": "string", "pattern": "^(SELECT|WITH) [^;]{10,400}$"}},
        "required": ["sql"],
        "additionalProperties": false
    })
}

/// The line every patient-facing answer ends with.
pub const SAFETY_NET: &str = "This reply was prepared with careflow to support your care team. \
If your symptoms get worse or you feel very unwell, call emergency services or go to the \
nearest emergency department.";
