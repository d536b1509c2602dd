//! The one boundary between HTTP and the engine: [`TriageService`]. Handlers never see a
//! workflow; they see a validated [`TriageJob`] going in and a `TriageOutcome` coming out.
//!
//! Two implementations: [`WorkflowService`] runs the real workflow (and writes the cost
//! ledger); [`NoopService`] answers at once with a fixed outcome, so tests and the load test
//! can measure the gateway alone.

use crate::GatewayError;
use async_trait::async_trait;
use careflow_core::{Disposition, PatientId, PatientMessage, TokenUsage};
use careflow_engine::Engine;
use careflow_ledger::Ledger;
use careflow_workflow::{
    Decision, Mode, Route, TriageOutcome, TriageRequest, TriageWorkflow, WorkflowError,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A triage request that passed validation and authentication: the patient comes from the
/// verified token, never from the body.
#[derive(Debug, Clone)]
pub struct TriageJob {
    /// The gateway's id: the same in the response, the request row, the ledger and the audit.
    pub request_id: String,
    pub message: PatientMessage,
    pub patient: Option<PatientId>,
}

/// What the service runs, for `/v1/models` and for checking a request's `workflow` field.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    /// The small model's name (the base model).
    pub model: String,
    /// LoRA adapters loaded on it (each listed as a model of its own).
    pub adapters: Vec<String>,
    /// The workflow's name (e.g. `triage`).
    pub workflow: String,
}

#[async_trait]
pub trait TriageService: Send + Sync + 'static {
    async fn triage(&self, job: TriageJob) -> Result<TriageOutcome, GatewayError>;
    fn info(&self) -> ServiceInfo;
    /// The small tier's engine, for the OpenAI-compatible endpoints (`None`: not served).
    fn engine(&self) -> Option<Arc<dyn Engine>> {
        None
    }
}

/// The real service: the workflow on its engine, and the cost ledger.
pub struct WorkflowService {
    workflow: Arc<TriageWorkflow>,
    engine: Arc<dyn Engine>,
    ledger: Option<Ledger>,
}

impl WorkflowService {
    /// `engine` is the workflow's small tier (the workflow keeps its tiers private).
    pub fn new(
        workflow: Arc<TriageWorkflow>,
        engine: Arc<dyn Engine>,
        ledger: Option<Ledger>,
    ) -> Self {
        WorkflowService {
            workflow,
            engine,
            ledger,
        }
    }
}

#[async_trait]
impl TriageService for WorkflowService {
    async fn triage(&self, job: TriageJob) -> Result<TriageOutcome, GatewayError> {
        let mut outcome = self
            .workflow
            .run(TriageRequest {
                message: job.message,
                patient: job.patient,
            })
            .await
            .map_err(|e| match e {
                WorkflowError::UnknownPatient(id) => GatewayError::UnknownPatient(id),
                WorkflowError::Input(m) => GatewayError::Invalid {
                    field: "message".into(),
                    reason: m.to_string(),
                },
                other => GatewayError::Service(other.to_string()),
            })?;
        // One id for the request everywhere: response, request row, ledger, audit.
        outcome.request_id = job.request_id;
        if let Some(ledger) = &self.ledger {
            // The decision is stored with the request whatever happens here: a ledger outage
            // costs cost accounting, not the patient's answer.
            if let Err(e) = ledger.record(&outcome.ledger_entries()).await {
                tracing::error!(request_id = %outcome.request_id, error = %e, "cost ledger write failed");
            }
        }
        Ok(outcome)
    }

    fn info(&self) -> ServiceInfo {
        let info = self.engine.info();
        ServiceInfo {
            model: info.name.clone(),
            adapters: info.adapters.clone(),
            workflow: self.workflow.definition().name.clone(),
        }
    }

    fn engine(&self) -> Option<Arc<dyn Engine>> {
        Some(self.engine.clone())
    }
}

/// Answers every request with the same outcome, after an optional delay: the engine
/// replaced by nothing, to measure the gateway (and to make overload in tests).
#[derive(Debug, Default)]
pub struct NoopService {
    delay: Duration,
    calls: AtomicU64,
}

impl NoopService {
    pub fn new() -> Self {
        NoopService::default()
    }

    /// Each request takes this long (a slow engine, for overload and shutdown tests).
    pub fn with_delay(delay: Duration) -> Self {
        NoopService {
            delay,
            calls: AtomicU64::new(0),
        }
    }

    /// Requests run so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// The fixed outcome (public so the load test can call the service without HTTP).
    pub fn outcome(job: &TriageJob) -> TriageOutcome {
        TriageOutcome {
            request_id: job.request_id.clone(),
            workflow: "triage".into(),
            disposition: Disposition::Routine,
            decision: Decision::Accept,
            confidence: 1.0,
            proposed: Some(Disposition::Routine),
            floor: None,
            reasons: vec!["no-op service: no model ran".into()],
            notes: Vec::new(),
            rules_fired: Vec::new(),
            cited: Vec::new(),
            patient_reply: String::new(),
            patient_id: job.patient.map(|p| p.0),
            record_summary: None,
            sql: None,
            route: Route {
                decided_by: "small".into(),
                escalated: false,
                reasons: Vec::new(),
                outcome: "no-op".into(),
                handoff: None,
            },
            // No steps: a no-op ran none (and StepReport belongs to the workflow crate).
            steps: Vec::new(),
            totals: TokenUsage::default(),
            cost_usd: 0.0,
            prefix_tokens: 0,
            transcript_tokens: 0,
            mode: Mode::StatefulPrefixCache,
            model: "noop".into(),
            elapsed_ms: 0.0,
        }
    }
}

#[async_trait]
impl TriageService for NoopService {
    async fn triage(&self, job: TriageJob) -> Result<TriageOutcome, GatewayError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        Ok(NoopService::outcome(&job))
    }

    fn info(&self) -> ServiceInfo {
        ServiceInfo {
            model: "noop".into(),
            adapters: Vec::new(),
            workflow: "triage".into(),
        }
    }
}
