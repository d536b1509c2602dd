//! `careflow serve`: the HTTP gateway (careflow-gateway) on the workflow built exactly as
//! `careflow triage` builds it, until Ctrl-C or SIGTERM, then a graceful drain.

use crate::commands::{redact, DbArgs, EngineArgs, KnowledgeArgs, SetupArgs};
use crate::config::RuntimeConfig;
use anyhow::{Context, Result};
use careflow_engine::Engine;
use careflow_gateway::{AppState, Store, WorkflowService};
use careflow_records::Records;
use clap::Args;
use std::sync::Arc;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on, over the config file's `gateway.listen` [default: 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<String>,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub knowledge: KnowledgeArgs,
    #[command(flatten)]
    pub setup: SetupArgs,
}

/// Threads for the async runtime `serve` runs on (`gateway.async_threads`, see
/// [`careflow_gateway::GatewayConfig::runtime_threads`]), from the config `main` resolves
/// before the runtime starts. A config that did not resolve gets the default here; [`run`]
/// then reports its error.
pub fn runtime_threads(rc: &Result<RuntimeConfig>) -> usize {
    match rc {
        Ok(rc) => rc.file.gateway.runtime_threads(),
        Err(_) => careflow_gateway::GatewayConfig::default().runtime_threads(),
    }
}

/// Serves with `rc`, the config resolved from `a` (`a.setup.resolve`) before the runtime
/// started.
pub async fn run(a: ServeArgs, rc: Result<RuntimeConfig>) -> Result<()> {
    let knowledge = a.knowledge.load()?;
    let rc = rc?;
    let mut gateway = rc.file.gateway.clone();
    if let Some(listen) = a.listen {
        gateway.listen = listen;
    }
    // Checked before the model loads: a bad [gateway] table costs no start-up time.
    let mut settings = gateway.build()?;
    // The dashboard compares against the flagship tier of the same prices file as the ledger.
    settings.console.with_prices(rc.prices()?)?;
    let url = rc.database_url();
    if let Some(dir) = url
        .strip_prefix("sqlite://")
        .and_then(|p| std::path::Path::new(p).parent())
    {
        std::fs::create_dir_all(dir).ok();
    }
    // Patients come from the portal's tokens, so the records are always read.
    let records = Records::connect(&url)
        .await
        .with_context(|| format!("connecting to {}", redact(&url)))?;
    records.init().await?;
    let store = Store::connect(&url)
        .await
        .with_context(|| format!("opening the gateway tables at {}", redact(&url)))?;
    let engine: Arc<dyn Engine> = rc.small_engine()?;
    let mut run = rc.file.run.clone();
    // The workflow's own deadline (past it the case goes to human review, a decision) comes
    // before the gateway's (past it the request ends as an error).
    if run.request_deadline_ms.is_none() {
        run.request_deadline_ms = Some(gateway.request_deadline_ms / 10 * 9);
    }
    let (workflow, ledger) = rc
        .build(engine.clone(), Some(records), knowledge, run)
        .await?;
    let warmed = workflow.warm().await?;
    eprintln!(
        "shared prefix: {} tokens computed once, {} from cache",
        warmed.computed, warmed.reused
    );
    let service = WorkflowService::new(Arc::new(workflow), engine, ledger);
    let listen = settings.listen;
    if settings.console.enabled && !listen.ip().is_loopback() && !settings.console.secure_cookie {
        eprintln!(
            "note: the review console's cookie is marked Secure only behind an HTTPS proxy \
             (X-Forwarded-Proto: https); set gateway.console.secure_cookie = true when serving \
             it over HTTPS on {listen}"
        );
    }
    let state = AppState::new(settings, Arc::new(service), store).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    eprintln!(
        "careflow gateway on http://{addr} ({threads} runtime thread(s), gateway.async_threads; \
         OpenAPI at /openapi.json; review console at http://{addr}/console); Ctrl-C drains \
         and stops",
        addr = listener.local_addr()?,
        threads = tokio::runtime::Handle::current().metrics().num_workers(),
    );
    careflow_gateway::run(listener, state, shutdown_signal()).await?;
    eprintln!("stopped: every accepted request has its stored outcome");
    Ok(())
}

/// Ctrl-C, or SIGTERM (what a container runtime sends).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
