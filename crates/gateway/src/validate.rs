//! Request bodies become validated types here, or a 400 that names the field.
//!
//! The body is read as a JSON object with the path tracked (serde_path_to_error), so even a
//! syntax error inside a value (a raw control character in `message`) names its field.
//! Identity never comes from the body: a `patient_id` (or any alias) is refused, not ignored,
//! so a portal that sends one learns at once that it is not used.

use crate::api_error::ApiError;
use careflow_core::PatientMessage;
use serde_json::{Map, Value};

/// Body fields that would carry the patient's identity.
const IDENTITY_FIELDS: &[&str] = &["patient_id", "patient", "person_id", "patient_token", "sub"];

/// A `POST /v1/triage` body that passed validation.
#[derive(Debug)]
pub struct TriageBody {
    pub message: PatientMessage,
    /// The workflow the caller expects (checked against the one the server runs).
    pub workflow: Option<String>,
}

/// The field a path names; `None` for the whole body or an unknown position (`?`, e.g.
/// an object cut off after its last value).
pub(crate) fn path_field(path: &serde_path_to_error::Path) -> Option<String> {
    let p = path.to_string();
    (p != "." && !p.is_empty() && !p.contains('?')).then_some(p)
}

/// A JSON object, with a syntax or type error located at its field.
pub fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let map: Map<String, Value> = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = path_field(e.path());
        let inner = e.inner();
        let (code, message) = if inner.is_data() {
            ("invalid_type", "the body must be a JSON object".to_string())
        } else {
            ("malformed_json", format!("malformed JSON: {inner}"))
        };
        ApiError::BadRequest {
            code,
            message: match &field {
                Some(f) => format!("{f}: {message}"),
                None => message,
            },
            field,
        }
    })?;
    de.end().map_err(|e| ApiError::BadRequest {
        code: "malformed_json",
        message: format!("malformed JSON: {e}"),
        field: None,
    })?;
    Ok(map)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Refuses identity fields in any body.
pub fn refuse_identity(map: &Map<String, Value>) -> Result<(), ApiError> {
    if let Some(k) = IDENTITY_FIELDS.iter().find(|k| map.contains_key(**k)) {
        return Err(ApiError::bad_field(
            "identity_in_body",
            k,
            format!(
                "{k}: the patient's identity is never taken from the body; the portal sends \
                 it as a signed token in the X-Patient-Token header"
            ),
        ));
    }
    Ok(())
}

pub fn triage_body(bytes: &[u8]) -> Result<TriageBody, ApiError> {
    let map = json_object(bytes)?;
    refuse_identity(&map)?;
    if let Some(k) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "message" | "workflow"))
    {
        return Err(ApiError::bad_field(
            "unknown_field",
            k,
            format!("{k}: unknown field (expected `message` and optionally `workflow`)"),
        ));
    }
    let message = match map.get("message") {
        Some(Value::String(s)) => PatientMessage::parse(s).map_err(|e| {
            // MessageError's text starts with "message: " already.
            ApiError::bad_field("invalid_message", "message", e.to_string())
        })?,
        Some(other) => {
            return Err(ApiError::bad_field(
                "invalid_type",
                "message",
                format!("message: expected a string, got {}", type_name(other)),
            ))
        }
        None => {
            return Err(ApiError::bad_field(
                "missing_field",
                "message",
                "message: required",
            ))
        }
    };
    let workflow = match map.get("workflow") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 64 => Some(s.clone()),
        Some(Value::String(_)) => {
            return Err(ApiError::bad_field(
                "invalid_field",
                "workflow",
                "workflow: must be a workflow name of 1 to 64 characters",
            ))
        }
        Some(other) => {
            return Err(ApiError::bad_field(
                "invalid_type",
                "workflow",
                format!("workflow: expected a string, got {}", type_name(other)),
            ))
        }
    };
    Ok(TriageBody { message, workflow })
}

/// An `Idempotency-Key` header: 1 to 255 visible ASCII characters.
pub fn idempotency_key(
    value: Option<&axum::http::HeaderValue>,
) -> Result<Option<String>, ApiError> {
    let Some(v) = value else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(s) if !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(s.to_string()))
        }
        _ => Err(ApiError::bad_field(
            "invalid_header",
            "Idempotency-Key",
            "Idempotency-Key: must be 1 to 255 visible ASCII characters",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> (String, Option<String>) {
        match triage_body(body.as_bytes()) {
            Err(ApiError::BadRequest { code, field, .. }) => (code.to_string(), field),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_refusal_names_its_field() {
        assert_eq!(
            err("{\"message\": 3}"),
            ("invalid_type".into(), Some("message".into()))
        );
        assert_eq!(
            err("{\"message\": \"hi\", \"x\": 1}"),
            ("unknown_field".into(), Some("x".into()))
        );
        assert_eq!(
            err("{\"message\": \"hi\", \"patient_id\": 7}"),
            ("identity_in_body".into(), Some("patient_id".into()))
        );
        assert_eq!(
            err("{\"message\": \"pain\\u0007\"}"),
            ("invalid_message".into(), Some("message".into()))
        );
        // A raw control character is a JSON syntax error, still located at its field.
        assert_eq!(
            err("{\"message\": \"pain\u{1}\"}"),
            ("malformed_json".into(), Some("message".into()))
        );
        assert_eq!(
            err("{\"message\": "),
            ("malformed_json".into(), Some("message".into()))
        );
        assert_eq!(err("[1]"), ("invalid_type".into(), None));
        assert_eq!(err("{}"), ("missing_field".into(), Some("message".into())));
        assert_eq!(
            err("{\"message\": \"hi\"} x"),
            ("malformed_json".into(), None)
        );
        assert!(triage_body(b"{\"message\": \"I have a cough.\"}").is_ok());
    }
}
