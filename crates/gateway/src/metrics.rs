//! Prometheus metrics, in a registry of the gateway's own (one per server, so tests running
//! several servers in one process do not share counters). Rendered at `/metrics`.

use crate::GatewayError;
use careflow_workflow::TriageOutcome;
use prometheus::{
    Counter, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Sub-millisecond buckets too: the gateway's own overhead is measured in them.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

pub struct Metrics {
    registry: Registry,
    /// By route (the matched pattern, never the raw path: ids would explode the series),
    /// method and status.
    pub http_duration: HistogramVec,
    /// By workflow step and tier.
    pub step_duration: HistogramVec,
    /// By kind: computed, reused, generated.
    pub tokens: IntCounterVec,
    pub cost_usd: Counter,
    /// Escalated requests by who decided in the end (frontier, human_review, small).
    pub escalations: IntCounterVec,
    /// Ended triage requests by status (done, error, rejected).
    pub outcomes: IntCounterVec,
    /// Error responses and failed requests by kind (the error code).
    pub errors: IntCounterVec,
    pub queue_depth: IntGauge,
    pub in_flight: IntGauge,
    /// Decisions by disposition and who decided (the dashboard's disposition mix and
    /// review rate).
    pub decisions: IntCounterVec,
    /// What the flagship API would have cost for the same work run statelessly, USD.
    pub flagship_usd: Counter,
    /// Clinicians' decisions by action (confirm, override).
    pub reviews: IntCounterVec,
}

fn m<T>(r: Result<T, prometheus::Error>) -> Result<T, GatewayError> {
    r.map_err(|e| GatewayError::Metrics(e.to_string()))
}

impl Metrics {
    pub fn new() -> Result<Self, GatewayError> {
        let registry = Registry::new_custom(Some("careflow".into()), None)
            .map_err(|e| GatewayError::Metrics(e.to_string()))?;
        let hist = |name: &str, help: &str, labels: &[&str]| {
            m(HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            ))
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            m(IntCounterVec::new(Opts::new(name, help), labels))
        };
        let metrics = Metrics {
            http_duration: hist(
                "http_request_duration_seconds",
                "HTTP request latency",
                &["route", "method", "status"],
            )?,
            step_duration: hist(
                "step_duration_seconds",
                "Workflow step latency",
                &["step", "tier"],
            )?,
            tokens: counter("tokens_total", "Tokens by kind", &["kind"])?,
            cost_usd: m(Counter::new(
                "cost_usd_total",
                "Cost of the workflow steps, USD",
            ))?,
            escalations: counter(
                "escalations_total",
                "Escalated requests by who decided",
                &["decided_by"],
            )?,
            outcomes: counter(
                "triage_requests_total",
                "Ended triage requests by status",
                &["status"],
            )?,
            errors: counter("errors_total", "Errors by kind", &["kind"])?,
            queue_depth: m(IntGauge::new(
                "queue_depth",
                "Requests waiting for a worker",
            ))?,
            in_flight: m(IntGauge::new("in_flight", "Requests being worked on"))?,
            decisions: counter(
                "decisions_total",
                "Decisions by disposition and who decided",
                &["disposition", "decided_by"],
            )?,
            flagship_usd: m(Counter::new(
                "flagship_equivalent_usd_total",
                "What the flagship API would have cost for the same work, run statelessly, USD",
            ))?,
            reviews: counter(
                "reviews_total",
                "Clinicians' decisions by action",
                &["action"],
            )?,
            registry,
        };
        let r = &metrics.registry;
        m(r.register(Box::new(metrics.http_duration.clone())))?;
        m(r.register(Box::new(metrics.step_duration.clone())))?;
        m(r.register(Box::new(metrics.tokens.clone())))?;
        m(r.register(Box::new(metrics.cost_usd.clone())))?;
        m(r.register(Box::new(metrics.escalations.clone())))?;
        m(r.register(Box::new(metrics.outcomes.clone())))?;
        m(r.register(Box::new(metrics.errors.clone())))?;
        m(r.register(Box::new(metrics.queue_depth.clone())))?;
        m(r.register(Box::new(metrics.in_flight.clone())))?;
        m(r.register(Box::new(metrics.decisions.clone())))?;
        m(r.register(Box::new(metrics.flagship_usd.clone())))?;
        m(r.register(Box::new(metrics.reviews.clone())))?;
        Ok(metrics)
    }

    /// Steps, tokens, cost and escalation of one decision.
    pub fn record_outcome(&self, o: &TriageOutcome, flagship_usd: f64) {
        self.decisions
            .with_label_values(&[o.disposition.label(), o.route.decided_by.as_str()])
            .inc();
        if flagship_usd.is_finite() && flagship_usd > 0.0 {
            self.flagship_usd.inc_by(flagship_usd);
        }
        for s in &o.steps {
            self.step_duration
                .with_label_values(&[s.step.as_str(), s.tier.as_str()])
                .observe(s.millis / 1000.0);
        }
        self.tokens
            .with_label_values(&["computed"])
            .inc_by(o.totals.computed);
        self.tokens
            .with_label_values(&["reused"])
            .inc_by(o.totals.reused);
        self.tokens
            .with_label_values(&["generated"])
            .inc_by(o.totals.generated);
        if o.cost_usd.is_finite() && o.cost_usd > 0.0 {
            self.cost_usd.inc_by(o.cost_usd);
        }
        if o.route.escalated {
            self.escalations
                .with_label_values(&[o.route.decided_by.as_str()])
                .inc();
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, GatewayError> {
        let mut buf = Vec::new();
        m(TextEncoder::new().encode(&self.registry.gather(), &mut buf))?;
        String::from_utf8(buf).map_err(|e| GatewayError::Metrics(e.to_string()))
    }
}
