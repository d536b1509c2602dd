//! The OpenAPI 3.1 document served at `/openapi.json`, written by hand next to the routes it
//! describes (a test checks every route of the router is in it).

use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn errors(codes: &[&str]) -> Value {
    let mut m = serde_json::Map::new();
    for c in codes {
        let d = match *c {
            "400" => "Malformed JSON, a wrong type, an unknown field, a patient id in the body, a control character (the field is named)",
            "401" => "Missing, invalid, revoked or expired credentials (API key or patient token)",
            "403" => "The key's role may not do this",
            "404" => "Not found (also another patient's result)",
            "409" => "The same Idempotency-Key is still being processed (Retry-After), or the case was already reviewed",
            "413" => "The body is over the limit",
            "415" => "The body is not JSON",
            "422" => "An Idempotency-Key reused for another message, an unknown patient, or a request with no outcome to review",
            "429" => "Rate limit or full queue (Retry-After)",
            "503" => "Shutting down or not ready (Retry-After)",
            "504" => "The request's deadline passed (its error is stored)",
            _ => "Error",
        };
        m.insert((*c).to_string(), error_response(d));
    }
    Value::Object(m)
}

fn with_ok(mut errs: Value, code: &str, ok: Value) -> Value {
    if let Value::Object(m) = &mut errs {
        m.insert(code.to_string(), ok);
    }
    errs
}

pub fn document() -> Value {
    let bearer = json!([{"apiKey": []}]);
    let portal = json!([{"apiKey": [], "patientToken": []}]);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "careflow gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Triage of patient-portal messages through a multi-step workflow on a small self-hosted model, and OpenAI-compatible endpoints on the same model. Services authenticate with an API key; the patient's identity comes only from the portal's signed token in X-Patient-Token."
        },
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "cfk_<id>.<secret>, created with `careflow keys create`"},
                "patientToken": {"type": "apiKey", "in": "header", "name": "X-Patient-Token", "description": "JWT signed by the portal (EdDSA or RS256): iss, aud, exp, sub = patient id"}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": ["string", "null"]}}}}},
                "TriageRequest": {"type": "object", "additionalProperties": false, "required": ["message"], "properties": {
                    "message": {"type": "string", "minLength": 1, "maxLength": 4000, "description": "The patient's message; no control characters other than newline and tab"},
                    "workflow": {"type": "string", "description": "The workflow expected (refused if the server runs another)"}}},
                "TriageRecord": {"type": "object", "required": ["request_id", "status"], "properties": {
                    "request_id": {"type": "string"},
                    "status": {"enum": ["accepted", "done", "error", "rejected"]},
                    "created_at_ms": {"type": "integer"}, "finished_at_ms": {"type": ["integer", "null"]},
                    "disposition": {"enum": ["emergency_now", "urgent_same_day", "within_24_72h", "routine", "self_care", "admin", null]},
                    "decided_by": {"type": ["string", "null"], "description": "small, frontier or human_review"},
                    "outcome": {"type": ["object", "null"], "description": "The workflow's outcome: decision, reasons, rules fired, cited passages, patient reply, route, steps with tier, model, adapter, usage and cost, totals"},
                    "error": {"type": ["object", "null"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}},
                    "release": {"enum": ["released", "held_for_review"], "description": "Portal keys only (they get this allow-listed view, without `outcome`): whether the patient's answer may be shown. A case sent to human review or decided by the frontier is held until a clinician confirms or overrides it"},
                    "patient_reply": {"type": ["string", "null"], "description": "Portal keys only: the answer for the patient once released (after an override, the clinician's disposition); null while held"},
                    "interim_reply": {"type": ["string", "null"], "description": "Portal keys only, while held: a clinician will reply; the emergency instruction first when the case's urgency is emergency_now"},
                    "cited": {"type": ["array", "null"], "description": "Portal keys only: the guideline passages the answer cites"},
                    "review": {"type": ["object", "null"], "description": "Portal keys only: the clinician's decision {action, disposition, at_ms}, if any"}}},
                "KeyRequest": {"type": "object", "additionalProperties": false, "required": ["name", "role"], "properties": {
                    "name": {"type": "string"}, "role": {"enum": ["portal", "clinician", "admin"]}}}
            }
        },
        "paths": {
            "/v1/triage": {"post": {
                "summary": "Triage a message (portal: for the patient of X-Patient-Token; admin)",
                "security": portal,
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 255}, "description": "A retry with the same key and message returns the first answer; the workflow runs once"}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TriageRequest"}}}},
                "responses": with_ok(errors(&["400", "401", "403", "409", "413", "415", "422", "429", "503", "504"]), "200",
                    json!({"description": "The decision (header Idempotent-Replayed: true on a replay)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TriageRecord"}}}}))
            }},
            "/v1/triage/{id}": {"get": {
                "summary": "A stored request and its outcome (portal: own patient only; clinician, admin: any)",
                "security": portal,
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": with_ok(errors(&["401", "404", "429"]), "200",
                    json!({"description": "Ended (202 while still accepted)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TriageRecord"}}}}))
            }},
            "/v1/models": {"get": {
                "summary": "OpenAI-compatible: the base model and its adapters",
                "security": bearer,
                "responses": with_ok(errors(&["401", "429"]), "200", json!({"description": "{object: list, data: [{id, object: model, owned_by, parent?}]}"}))
            }},
            "/v1/chat/completions": {"post": {
                "summary": "OpenAI-compatible chat completion on the small model (stream: true sends chat.completion.chunk events and data: [DONE]); response_format json_object / json_schema constrains the output",
                "security": bearer,
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["model", "messages"]}}}},
                "responses": with_ok(errors(&["400", "401", "413", "415", "429", "503", "504"]), "200", json!({"description": "chat.completion, or text/event-stream"}))
            }},
            "/v1/keys": {
                "get": {"summary": "API keys (admin; never secrets)", "security": bearer, "responses": with_ok(errors(&["401", "403"]), "200", json!({"description": "{data: [key]}"}))},
                "post": {"summary": "Create a key (admin); the secret is shown once", "security": bearer,
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/KeyRequest"}}}},
                    "responses": with_ok(errors(&["400", "401", "403"]), "201", json!({"description": "{key, secret}"}))}
            },
            "/v1/keys/{id}": {"delete": {"summary": "Revoke a key (admin)", "security": bearer,
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": with_ok(errors(&["401", "403", "404"]), "204", json!({"description": "Revoked"}))}},
            "/v1/review/queue": {"get": {"summary": "Cases waiting for a clinician: sent to human review or decided by the frontier, most urgent first (clinician, admin)", "security": bearer,
                "responses": with_ok(errors(&["401", "403"]), "200", json!({"description": "{data: [{request_id, patient_id, created_at_ms, disposition, decided_by, floor, urgency}]}"}))}},
            "/v1/review/{id}": {
                "get": {"summary": "One case: its outcome and its decision, if any (clinician, admin)", "security": bearer,
                    "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "responses": with_ok(errors(&["401", "403", "404"]), "200", json!({"description": "{request_id, status, message, patient_id, outcome, review}"}))},
                "post": {"summary": "Confirm or override a case, once (clinician, admin)", "security": bearer,
                    "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false, "required": ["action"],
                        "properties": {"action": {"enum": ["confirm", "override"]}, "disposition": {"type": "string", "description": "required for override"}, "reason": {"type": "string", "maxLength": 2000, "description": "required for override"}}}}}},
                    "responses": with_ok(errors(&["400", "401", "403", "404", "409", "422"]), "201", json!({"description": "{review}"}))}
            },
            "/healthz": {"get": {"summary": "The process answers", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Takes work: not draining, database answers", "responses": with_ok(errors(&["503"]), "200", json!({"description": "ready"}))}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition format"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}}
        }
    })
}
