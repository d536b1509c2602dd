//! `careflow`: triage patient-portal messages with a small self-hosted model.
//!
//! Subcommands: `demo` (the quick start), `triage`, `model`, `db`, `bench`.
//! Every command that prints a result has `--json` for machines; without it, a table for people.

mod adapters_cmd;
mod bench;
mod commands;
mod config;
mod cost_cmd;
mod distill_cmd;
mod eval_cmd;
mod keys_cmd;
mod output;
mod plan_cmd;
mod provision;
mod review_cmd;
mod serve_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "careflow",
    version,
    about = "Triage patient-portal messages through a multi-step workflow on a small self-hosted model",
    long_about = "careflow answers patient-portal messages with a triage disposition \
(emergency_now, urgent_same_day, within_24_72h, routine, self_care, or admin) through the steps \
Plan -> Retrieve -> Analyze -> Validate -> Respond, on one engine session per request, so that \
each token of a request is computed once. careflow supports clinicians; it does not diagnose.\n\n\
Quick start:\n  careflow demo                      # pull the model, load demo records, triage the seed message\n  \
careflow triage --patient 1 \"I've had sharp lower back pain for 3 days. Should I be worried?\"\n  \
careflow bench workflow            # stateless vs stateful vs prefix cache, as ratios"
)]
struct Cli {
    /// Log level filter (e.g. `info`, `careflow=debug`); env CAREFLOW_LOG.
    #[arg(
        long,
        global = true,
        env = "CAREFLOW_LOG",
        default_value = "warn,llama-cpp-2=error"
    )]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The quick start: provision the default model and demo records, then triage the seed message.
    Demo(commands::DemoArgs),
    /// Triage one message through the full workflow.
    Triage(commands::TriageArgs),
    /// Known models: pull, list.
    #[command(subcommand)]
    Model(commands::ModelCommand),
    /// The records database (OMOP CDM subset): init, load-omop, synth, query.
    #[command(subcommand)]
    Db(commands::DbCommand),
    /// The HTTP gateway: triage API, OpenAI-compatible endpoints, API keys, patient tokens,
    /// limits, audit, metrics; Ctrl-C or SIGTERM drains in-flight requests and stops.
    Serve(serve_cmd::ServeArgs),
    /// The gateway's API keys: create (the secret is shown once), list, revoke.
    #[command(subcommand)]
    Keys(keys_cmd::KeysCommand),
    /// Clinicians' review: the queue, and `export` of reviewed cases as JSONL (eval and
    /// distillation suites). The console is at /console on `careflow serve`.
    #[command(subcommand)]
    Review(review_cmd::ReviewCommand),
    /// Evaluations: triage strategies on a suite (`eval --suite`), two reports compared
    /// (`eval diff`), model-written SQL (`eval sql`).
    #[command(long_about = eval_cmd::LONG_ABOUT)]
    Eval(eval_cmd::EvalArgs),
    /// Benchmarks that print figures as ratios against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// What the workflow costs a month: flagship API vs managed small model vs self-hosted.
    #[command(long_about = cost_cmd::LONG_ABOUT)]
    Cost(cost_cmd::CostArgs),
    /// Distillation: teacher traces per step (`generate`), per-step adapters (`train`), the
    /// student's agreement with the teacher (`eval`).
    #[command(subcommand, long_about = distill_cmd::LONG_ABOUT)]
    Distill(distill_cmd::DistillCommand),
    /// Trained adapters: their manifests (base model, step, dataset, hyper-parameters, metrics).
    #[command(subcommand)]
    Adapters(adapters_cmd::AdaptersCommand),
    /// Capacity planning: GPUs, replicas and $/month for a daily volume, next to the APIs.
    #[command(long_about = plan_cmd::LONG_ABOUT)]
    Plan(plan_cmd::PlanArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // `serve` sizes its runtime from its config (`gateway.async_threads`), so it resolves the
    // config here, once, and serves with it; the other commands are a client, a batch or a
    // console of their own and keep two threads.
    let mut serve_config = match &cli.command {
        Command::Serve(a) => Some(a.setup.resolve(&a.engine, &a.db)),
        _ => None,
    };
    let threads = serve_config.as_ref().map_or(2, serve_cmd::runtime_threads);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result: Result<()> = runtime.block_on(async {
        match cli.command {
            Command::Demo(a) => commands::demo(a).await,
            Command::Triage(a) => commands::triage(a).await,
            Command::Model(c) => commands::model(c).await,
            Command::Db(c) => commands::db(c).await,
            Command::Serve(a) => {
                let rc = serve_config
                    .take()
                    .unwrap_or_else(|| a.setup.resolve(&a.engine, &a.db));
                serve_cmd::run(a, rc).await
            }
            Command::Keys(c) => keys_cmd::run(c).await,
            Command::Review(c) => review_cmd::run(c).await,
            Command::Bench(c) => bench::run(c).await,
            Command::Eval(c) => eval_cmd::run(c).await,
            Command::Cost(a) => cost_cmd::run(a).await,
            Command::Distill(c) => distill_cmd::run(c).await,
            Command::Adapters(c) => adapters_cmd::run(c).await,
            Command::Plan(a) => plan_cmd::run(a).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
