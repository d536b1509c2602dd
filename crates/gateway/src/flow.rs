//! A triage request from acceptance to its stored ending.
//!
//! [`submit`] runs in a task of its own (not in the HTTP handler), so a client that hangs
//! up cannot leave a request accepted without an ending: take a queue slot (or be refused,
//! stored as `rejected`; a retry of a stored request is answered from it), store the request
//! as `accepted`, queue the work. The work ([`run`]) stores `done` + the audit row, or `error`
//! with its kind — on the service's failure, at the deadline, or at the end of the shutdown
//! grace — then answers the handler.
//!
//! The `accepted` row of a request without an Idempotency-Key is queued to the database
//! writer and not waited for: the ending is queued after it, so it is committed with it or
//! after it, and the answer waits for both. A key's row is waited for, since its insert is
//! what tells a retry (the key already taken) from a new request.

use crate::queue::Ctx;
use crate::service::TriageJob;
use crate::state::AppState;
use crate::store::{AuditRecord, Ending, NewRequest, RequestRow, StepFigures};
use crate::GatewayError;
use careflow_core::{PatientId, PatientMessage};
use careflow_workflow::TriageOutcome;
use sha2::{Digest, Sha256};
use std::time::Instant;
use tokio::sync::oneshot;

/// An authenticated, validated request about to be submitted.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub request_id: String,
    pub key_id: String,
    pub role: &'static str,
    pub patient: Option<PatientId>,
    pub message: PatientMessage,
    pub message_sha256: String,
    pub idempotency_key: Option<String>,
    pub received: Instant,
}

/// How a submission ended for the handler.
pub enum Submitted {
    /// The outcome and its JSON as stored.
    Done(Box<TriageOutcome>, String),
    /// The idempotency key was already taken (a concurrent retry won): answer with that row.
    Duplicate(Box<RequestRow>),
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

pub async fn submit(st: AppState, a: Accepted) -> Result<Submitted, GatewayError> {
    let new = NewRequest {
        request_id: a.request_id.clone(),
        api_key_id: a.key_id.clone(),
        patient_id: a.patient.map(|p| p.0),
        idempotency_key: a.idempotency_key.clone(),
        message_sha256: a.message_sha256.clone(),
    };
    let slot = match st.queue.reserve() {
        Ok(slot) => slot,
        Err(e) => {
            // A retry of a stored request is answered from it, overloaded or not (if the
            // read fails, the refusal stands).
            if let Some(k) = &a.idempotency_key {
                match st.store.request_by_idempotency_key(&a.key_id, k).await {
                    Ok(Some(row)) => return Ok(Submitted::Duplicate(Box::new(row))),
                    Ok(None) => {}
                    Err(db) => {
                        tracing::warn!(request_id = %a.request_id, error = %db, "could not look up a retry's idempotency key")
                    }
                }
            }
            st.metrics.outcomes.with_label_values(&["rejected"]).inc();
            if let Err(db) = st.store.reject(&new, e.kind()).await {
                tracing::error!(request_id = %a.request_id, error = %db, "could not store a refused request");
            }
            return Err(e);
        }
    };
    // Without an idempotency key there is nothing to learn from the `accepted` row before
    // the work starts, so its commit is not waited for here: the ending is queued after it
    // and committed with it or after it, and the handler's answer waits for both. That takes
    // one database round trip off a request's path (the gateway's overhead at 5,000
    // requests/s). With a key, the row says whether a concurrent retry won, so it is awaited.
    let pending_accept = match &a.idempotency_key {
        None => Some(st.store.accept_queued(&new).await?),
        // The key already taken (a retry, or a concurrent one that won): that request's
        // row is the answer.
        Some(k) => {
            if !st.store.accept(&new).await? {
                drop(slot);
                return st
                    .store
                    .request_by_idempotency_key(&a.key_id, k)
                    .await?
                    .map(|r| Submitted::Duplicate(Box::new(r)))
                    .ok_or_else(collision);
            }
            None
        }
    };
    let (tx, rx) = oneshot::channel();
    let deadline = a.received + st.settings.request_deadline;
    let state = st.clone();
    let request_id = a.request_id.clone();
    slot.send(
        Box::new(move |ctx| Box::pin(run(state, a, ctx, tx))),
        deadline,
    );
    let answer = rx
        .await
        .map_err(|_| GatewayError::Service("the worker ended without an answer".into()))?;
    if let Some(pending) = pending_accept {
        // Resolved by now (the ending was committed after it), unless the writer failed.
        match pending.applied().await {
            Ok(true) => {}
            Ok(false) => return Err(collision()),
            // Its ending found no row to end: nothing of it is stored, so the answer is an
            // error even if the work decided.
            Err(e) => {
                st.metrics.errors.with_label_values(&["database"]).inc();
                tracing::error!(request_id = %request_id, error = %e, "could not store an accepted request");
                return Err(e);
            }
        }
    }
    answer
}

/// An `accepted` row that found its request id taken (80 random bits a millisecond: not
/// expected to happen).
fn collision() -> GatewayError {
    GatewayError::Service("request id collision".into())
}

type Reply = oneshot::Sender<Result<Submitted, GatewayError>>;

async fn run(st: AppState, a: Accepted, ctx: Ctx, reply: Reply) {
    let deadline_ms = st.settings.request_deadline.as_millis() as u64;
    if ctx.cancel.is_cancelled() {
        end(&st, &a, Err(GatewayError::ShuttingDown), reply).await;
        return;
    }
    if Instant::now() >= ctx.deadline {
        end(
            &st,
            &a,
            Err(GatewayError::DeadlineExceeded(deadline_ms)),
            reply,
        )
        .await;
        return;
    }
    let job = TriageJob {
        request_id: a.request_id.clone(),
        message: a.message.clone(),
        patient: a.patient,
    };
    let service = st.service.clone();
    let work = service.triage(job);
    tokio::pin!(work);
    let result = tokio::select! {
        r = &mut work => r,
        _ = ctx.cancel.cancelled() => Err(GatewayError::ShuttingDown),
        _ = tokio::time::sleep_until(ctx.deadline.into()) => {
            end(&st, &a, Err(GatewayError::DeadlineExceeded(deadline_ms)), reply).await;
            // The work goes on to its end rather than being dropped mid-step: a dropped
            // workflow would leave its engine session open. Its late result is not stored
            // (the deadline ended the request) — only its cost reaches the ledger.
            tokio::select! {
                _ = &mut work => tracing::info!(request_id = %a.request_id, "finished after its deadline"),
                _ = ctx.cancel.cancelled() => {}
            }
            return;
        }
    };
    end(&st, &a, result, reply).await;
}

/// Stores the ending (the first one wins), counts it, logs it, answers the handler.
async fn end(
    st: &AppState,
    a: &Accepted,
    result: Result<TriageOutcome, GatewayError>,
    reply: Reply,
) {
    let elapsed_ms = a.received.elapsed().as_secs_f64() * 1000.0;
    // Only a prefix of the message's hash is logged, never the text.
    let sha = &a.message_sha256[..12];
    let answer = match result {
        Ok(outcome) => match serde_json::to_string(&outcome) {
            Ok(json) => {
                // Data minimisation: the text is kept only where a clinician will read it.
                let for_review = crate::store::needs_review(&outcome.route.decided_by);
                let ending = Ending::Done {
                    outcome_json: json.clone(),
                    audit: Box::new(audit_record(a, &outcome)),
                    message: for_review.then(|| a.message.as_str().to_string()),
                };
                // A decision whose record could not be stored is not given out: the audit
                // log must hold every decision a patient received.
                store(st, a, &ending).await.map(|()| {
                    record_done(st, a, &outcome, sha, elapsed_ms);
                    Submitted::Done(Box::new(outcome), json)
                })
            }
            Err(e) => Err(GatewayError::Service(format!(
                "serialising the outcome: {e}"
            ))),
        },
        Err(e) => Err(e),
    };
    if let Err(e) = &answer {
        let ending = Ending::Error {
            kind: e.kind().to_string(),
            message: e.to_string(),
        };
        // A failure is logged and counted in `store`; the answer is this error either way.
        let _ = store(st, a, &ending).await;
        // Counted by status here; the error response itself is counted by its code in
        // `server::observe` (when the client is still there to get one).
        st.metrics.outcomes.with_label_values(&["error"]).inc();
        tracing::warn!(
            request_id = %a.request_id, key_id = %a.key_id, status = "error", kind = e.kind(),
            message_sha256 = sha, elapsed_ms, "triage"
        );
    }
    // The handler may be gone (client hung up): the ending is stored either way.
    let _ = reply.send(answer);
}

/// Counts and logs a stored decision.
fn record_done(st: &AppState, a: &Accepted, outcome: &TriageOutcome, sha: &str, elapsed_ms: f64) {
    st.metrics.outcomes.with_label_values(&["done"]).inc();
    // Step by step, as the dashboard prices them.
    let flagship: f64 = outcome
        .steps
        .iter()
        .map(|s| st.settings.console.flagship_usd(&s.usage))
        .sum();
    st.metrics.record_outcome(outcome, flagship);
    tracing::info!(
        request_id = %a.request_id, key_id = %a.key_id, status = "done",
        disposition = outcome.disposition.label(), decided_by = %outcome.route.decided_by,
        message_sha256 = sha, elapsed_ms, "triage"
    );
}

/// Stores an ending: `Err` only when the database failed (logged and counted here); an
/// ending that finds the request already ended (deadline or shutdown first) is not one.
async fn store(st: &AppState, a: &Accepted, ending: &Ending) -> Result<(), GatewayError> {
    match st.store.finish(&a.request_id, ending).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            tracing::info!(request_id = %a.request_id, "already ended (deadline or shutdown first)");
            Ok(())
        }
        Err(e) => {
            st.metrics.errors.with_label_values(&["database"]).inc();
            tracing::error!(request_id = %a.request_id, error = %e, "could not store the request's ending");
            Err(e)
        }
    }
}

fn audit_record(a: &Accepted, o: &TriageOutcome) -> AuditRecord {
    let mut tiers: Vec<&str> = Vec::new();
    for s in &o.steps {
        if !tiers.contains(&s.tier.as_str()) {
            tiers.push(&s.tier);
        }
    }
    let models: Vec<serde_json::Value> = o
        .steps
        .iter()
        .map(|s| serde_json::json!({"step": s.step, "tier": s.tier, "model": s.model, "adapter": s.adapter}))
        .collect();
    let rules: Vec<&str> = o.rules_fired.iter().map(|r| r.id.as_str()).collect();
    let decision = serde_json::to_value(o.decision)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    AuditRecord {
        request_id: a.request_id.clone(),
        api_key_id: a.key_id.clone(),
        role: a.role.to_string(),
        patient_id: a.patient.map(|p| p.0),
        message_sha256: a.message_sha256.clone(),
        workflow: o.workflow.clone(),
        disposition: o.disposition.label().to_string(),
        decision,
        decided_by: o.route.decided_by.clone(),
        escalated: o.route.escalated,
        rules_fired: serde_json::to_string(&rules).unwrap_or_default(),
        tiers: serde_json::to_string(&tiers).unwrap_or_default(),
        models: serde_json::to_string(&models).unwrap_or_default(),
        cost_usd: finite(o.cost_usd),
        steps: o
            .steps
            .iter()
            .map(|s| StepFigures {
                step: s.step.clone(),
                tier: s.tier.clone(),
                millis: finite(s.millis),
                submitted: s.usage.submitted,
                computed: s.usage.computed,
                reused: s.usage.reused,
                generated: s.usage.generated,
                cost_usd: finite(s.cost_usd),
            })
            .collect(),
    }
}

fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}
