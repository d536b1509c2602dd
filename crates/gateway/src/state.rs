//! What every handler shares: settings, the service, the store, keys, limits, metrics and
//! the queue. Authentication (API key, then the key's rate limit) and the patient token are
//! read here so every route does them the same way.

use crate::api_error::ApiError;
use crate::auth::{Keys, Principal};
use crate::config::Settings;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::queue::QueueHandle;
use crate::service::{ServiceInfo, TriageService};
use crate::store::Store;
use crate::GatewayError;
use axum::http::HeaderMap;
use careflow_core::PatientId;
use std::sync::Arc;
use std::time::Duration;

/// The header the portal's signed patient token travels in.
pub const PATIENT_TOKEN_HEADER: &str = "x-patient-token";

pub struct Inner {
    pub settings: Settings,
    pub service: Arc<dyn TriageService>,
    pub info: ServiceInfo,
    pub store: Store,
    pub keys: Keys,
    pub limiter: RateLimiter,
    pub metrics: Arc<Metrics>,
    pub queue: QueueHandle,
}

/// Cheap to clone; one per server.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds the state and starts the queue's actor (so: inside a tokio runtime). Requests
    /// a dead process left `accepted` are ended as `error: abandoned` first.
    pub async fn new(
        settings: Settings,
        service: Arc<dyn TriageService>,
        store: Store,
    ) -> Result<AppState, GatewayError> {
        let metrics = Arc::new(Metrics::new()?);
        // Past deadline + grace, no live gateway can still own a request.
        let horizon = settings.request_deadline + settings.shutdown_grace + Duration::from_secs(60);
        let before = careflow_ledger::now_ms() - horizon.as_millis().min(i64::MAX as u128) as i64;
        let abandoned = store.abandon_stale(before).await?;
        if abandoned > 0 {
            tracing::warn!(
                abandoned,
                "ended requests a stopped server had left unfinished"
            );
        }
        let queue = QueueHandle::start(settings.queue_depth, settings.workers, metrics.clone());
        Ok(AppState(Arc::new(Inner {
            info: service.info(),
            keys: Keys::new(store.clone(), settings.key_cache),
            limiter: RateLimiter::new(&settings.rate_limit),
            settings,
            service,
            store,
            metrics,
            queue,
        })))
    }

    /// The caller's API key, then its rate limit.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let auth = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let principal = self.keys.authenticate(auth).await?;
        tracing::Span::current().record("key_id", principal.key_id.as_str());
        self.limiter
            .check(&principal.key_id)
            .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
        Ok(principal)
    }

    /// The patient named by the `X-Patient-Token` header, if one was sent; `required` makes
    /// its absence a 401.
    pub fn patient(
        &self,
        headers: &HeaderMap,
        required: bool,
    ) -> Result<Option<PatientId>, ApiError> {
        let Some(raw) = headers.get(PATIENT_TOKEN_HEADER) else {
            if required {
                return Err(ApiError::Unauthorized {
                    code: "missing_patient_token",
                    message: "a portal request needs the patient's signed token in X-Patient-Token"
                        .into(),
                });
            }
            return Ok(None);
        };
        let Some(tokens) = &self.settings.patient_tokens else {
            return Err(ApiError::Unauthorized {
                code: "patient_tokens_not_configured",
                message: "this server verifies no patient tokens (gateway.jwt is not set)".into(),
            });
        };
        let token = raw.to_str().map_err(|_| ApiError::Unauthorized {
            code: "invalid_token",
            message: "the patient token is malformed".into(),
        })?;
        tokens.verify(token).map(Some)
    }
}
