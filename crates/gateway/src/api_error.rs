//! Errors become HTTP here and only here: a status, a machine `code`, a human `message`, the
//! `field` when the error is about one, and Retry-After on 429/503. The body is
//! `{"error": {"code", "message", "field"}}` (the shape OpenAI clients also read).

use crate::GatewayError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::time::Duration;

#[derive(Debug)]
pub enum ApiError {
    /// Missing, unknown, revoked or malformed credentials (API key or patient token).
    Unauthorized {
        code: &'static str,
        message: String,
    },
    /// Authenticated, but the role may not do this.
    Forbidden(String),
    /// No such resource, or one the caller may not know exists (another patient's result).
    NotFound(String),
    BadRequest {
        code: &'static str,
        message: String,
        field: Option<String>,
    },
    PayloadTooLarge {
        limit: usize,
    },
    UnsupportedMediaType,
    /// The request is well-formed but cannot be processed as asked (e.g. an idempotency key
    /// reused for another message, a patient not in the records).
    Unprocessable {
        code: &'static str,
        message: String,
        field: Option<String>,
    },
    /// The resource is in a state that refuses this (a case already reviewed).
    Conflict {
        code: &'static str,
        message: String,
    },
    /// The same idempotency key is still being processed.
    InProgress {
        retry_after: Duration,
    },
    RateLimited {
        retry_after: Duration,
    },
    Overloaded {
        retry_after: Duration,
    },
    ShuttingDown,
    NotReady(String),
    DeadlineExceeded(u64),
    /// Details go to the log, never to the client.
    Internal(String),
}

/// Put on every error response so the metrics layer can count errors by code.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

impl ApiError {
    pub fn bad_field(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
            field: Some(field.to_string()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::InProgress { .. } | ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } | ApiError::Overloaded { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::ShuttingDown | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized { code, .. } => code,
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::BadRequest { code, .. } => code,
            ApiError::PayloadTooLarge { .. } => "body_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Unprocessable { code, .. } => code,
            ApiError::InProgress { .. } => "idempotency_in_progress",
            ApiError::Conflict { code, .. } => code,
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::NotReady(_) => "not_ready",
            ApiError::DeadlineExceeded(_) => "deadline_exceeded",
            ApiError::Internal(_) => "internal",
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Unauthorized { message, .. }
            | ApiError::BadRequest { message, .. }
            | ApiError::Unprocessable { message, .. }
            | ApiError::Conflict { message, .. }
            | ApiError::Forbidden(message)
            | ApiError::NotFound(message)
            | ApiError::NotReady(message) => message.clone(),
            ApiError::PayloadTooLarge { limit } => {
                format!("the request body is over the limit of {limit} bytes")
            }
            ApiError::UnsupportedMediaType => {
                "the request body must be JSON (Content-Type: application/json)".into()
            }
            ApiError::InProgress { .. } => {
                "a request with this Idempotency-Key is still being processed".into()
            }
            ApiError::RateLimited { .. } => "this API key is over its request rate".into(),
            ApiError::Overloaded { .. } => "the server is at capacity; retry later".into(),
            ApiError::ShuttingDown => "the server is shutting down; retry on another".into(),
            ApiError::DeadlineExceeded(ms) => {
                format!("the request did not finish within its deadline of {ms} ms")
            }
            ApiError::Internal(_) => "internal error (see the server log)".into(),
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::BadRequest { field, .. } | ApiError::Unprocessable { field, .. } => {
                field.as_deref()
            }
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after }
            | ApiError::Overloaded { retry_after }
            | ApiError::InProgress { retry_after } => Some(*retry_after),
            ApiError::ShuttingDown | ApiError::NotReady(_) => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::Overloaded { retry_after } => ApiError::Overloaded { retry_after },
            GatewayError::ShuttingDown => ApiError::ShuttingDown,
            GatewayError::DeadlineExceeded(ms) => ApiError::DeadlineExceeded(ms),
            GatewayError::Invalid { field, reason } => ApiError::BadRequest {
                code: "invalid_field",
                message: format!("{field}: {reason}"),
                field: Some(field),
            },
            GatewayError::UnknownPatient(id) => ApiError::Unprocessable {
                code: "unknown_patient",
                message: format!("patient {id} is not in the records database"),
                field: None,
            },
            GatewayError::NoEngine => ApiError::NotReady("this server has no model engine".into()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        }
        let body = json!({
            "error": {
                "code": self.code(),
                "message": self.message(),
                "field": self.field(),
            }
        });
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(after) = self.retry_after() {
            // Whole seconds, at least 1: a client reading 0 would retry at once.
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response.extensions_mut().insert(ErrorCode(self.code()));
        response
    }
}
