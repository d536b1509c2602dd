//! Load test of the gateway on loopback, with its own load generator (hyper HTTP/1.1
//! clients, one per connection, on a runtime of their own).
//!
//! ```text
//! cargo run --release -p careflow-gateway --example loadtest -- --noop [--requests N]
//!     [--concurrency C] [--rate R] [--idempotency-keys] [--async-threads N]
//!     [--compare wal-sync|upkeep-priority|wal-readahead|async-threads] [--rounds N] [--json]
//! cargo run --release -p careflow-gateway --example loadtest -- [--requests 8] [--concurrency 2]
//! ```
//!
//! `--noop`: the engine replaced by `NoopService`. The same requests are first run against
//! the service directly (no HTTP, no auth, no database), then through the gateway (API key,
//! patient token, validation, queue, `accepted` + `done` + audit rows in SQLite), in the
//! same run, and the difference is the gateway's own overhead. `--rate` paces the senders
//! to a target request rate (default: as fast as the connections go). `--idempotency-keys`
//! sends each request with an `Idempotency-Key` of its own, as a portal that retries would
//! (the gateway then waits for the `accepted` row, whose insert tells a retry, before the
//! work starts; without a key that row is committed alongside the ending). `--database URL`
//! puts the gateway's tables elsewhere (default: a SQLite file in a temporary directory).
//! `--compare wal-sync` measures a gateway whose WAL is written out by the checkpoints only,
//! then one with the default WAL sync thread (`StoreOptions::wal_sync_every`), each on a new
//! SQLite file, and prints the second's p99 as a ratio of the first's; `--compare
//! upkeep-priority` does the same with the checkpoint and sync threads at normal priority,
//! then at idle priority (`StoreOptions::upkeep_idle_priority`); `--compare wal-readahead`
//! without, then with the WAL read ahead of the writer (`StoreOptions::wal_readahead`);
//! `--compare async-threads` measures a gateway on a 2-thread runtime, then one on the
//! default (`gateway.async_threads`: half the cores) or `--async-threads N`, which also sets
//! the runtime of every other run. `--rounds N` measures each variant N times, the variants
//! in turn (A B, B A, …: the machine's noise, ~0.5 ms of p99 between batches, moves with
//! time), and reports medians: with `--json`, `http` holds the medians of the rates and
//! percentiles and the sums of requests, errors and seconds over the rounds.
//! Without `--noop`: the full workflow on the default model (no records: no patient).

use bytes::Bytes;
use careflow_core::{PatientId, PatientMessage};
use careflow_gateway::{
    create_key, AppState, GatewayConfig, JwtAlgorithm, JwtConfig, NoopService, Role, Store,
    StoreOptions, TriageJob, TriageService, WorkflowService,
};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    noop: bool,
    requests: usize,
    concurrency: usize,
    rate: Option<f64>,
    json: bool,
    database: Option<String>,
    idempotency_keys: bool,
    ticks: bool,
    compare: Option<String>,
    /// The server runtime's threads (default: `GatewayConfig`'s, as `careflow serve`).
    async_threads: Option<usize>,
    /// Measurements per variant, taken in turn (A B, B A, A B, …); medians are reported.
    rounds: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        noop: false,
        requests: 0,
        concurrency: 0,
        rate: None,
        json: false,
        database: None,
        idempotency_keys: false,
        ticks: false,
        compare: None,
        async_threads: None,
        rounds: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name}: a value is required"));
        match flag.as_str() {
            "--noop" => a.noop = true,
            "--json" => a.json = true,
            "--idempotency-keys" => a.idempotency_keys = true,
            "--pacing" => match value("--pacing")?.as_str() {
                "even" => a.ticks = false,
                "ticks" => a.ticks = true,
                other => return Err(format!("--pacing: `{other}` is not even or ticks")),
            },
            "--requests" => {
                a.requests = value("--requests")?
                    .parse()
                    .map_err(|e| format!("--requests: {e}"))?
            }
            "--concurrency" => {
                a.concurrency = value("--concurrency")?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?
            }
            "--rate" => {
                a.rate = Some(
                    value("--rate")?
                        .parse()
                        .map_err(|e| format!("--rate: {e}"))?,
                )
            }
            "--database" => a.database = Some(value("--database")?),
            "--compare" => a.compare = Some(value("--compare")?),
            "--async-threads" => {
                let n: usize = value("--async-threads")?
                    .parse()
                    .map_err(|e| format!("--async-threads: {e}"))?;
                if n == 0 {
                    return Err("--async-threads: at least 1".into());
                }
                a.async_threads = Some(n);
            }
            "--rounds" => {
                a.rounds = value("--rounds")?
                    .parse()
                    .map_err(|e| format!("--rounds: {e}"))?;
                if a.rounds == 0 {
                    return Err("--rounds: at least 1".into());
                }
            }
            "--bench" => {} // passed by `cargo bench`-style runners
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if a.requests == 0 {
        a.requests = if a.noop { 20_000 } else { 8 };
    }
    if a.concurrency == 0 {
        a.concurrency = if a.noop { 32 } else { 2 };
    }
    Ok(a)
}

#[derive(Debug, Clone, serde::Serialize)]
struct Stats {
    requests: usize,
    errors: usize,
    seconds: f64,
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Several measurements of one variant as one: the medians of their rates and percentiles,
/// the largest max, every request and error.
fn median_of(runs: &[Stats]) -> Stats {
    let median = |f: fn(&Stats) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    Stats {
        requests: runs.iter().map(|r| r.requests).sum(),
        errors: runs.iter().map(|r| r.errors).sum(),
        seconds: runs.iter().map(|r| r.seconds).sum(),
        requests_per_second: median(|r| r.requests_per_second),
        p50_ms: median(|r| r.p50_ms),
        p99_ms: median(|r| r.p99_ms),
        max_ms: runs.iter().map(|r| r.max_ms).fold(0.0, f64::max),
    }
}

fn stats(mut lat: Vec<f64>, errors: usize, seconds: f64) -> Stats {
    lat.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        if lat.is_empty() {
            return 0.0;
        }
        lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1]
    };
    Stats {
        requests: lat.len() + errors,
        errors,
        seconds,
        requests_per_second: (lat.len() + errors) as f64 / seconds,
        p50_ms: q(0.50),
        p99_ms: q(0.99),
        max_ms: lat.last().copied().unwrap_or(0.0),
    }
}

/// Sends `n` requests over `c` connections (paced to `rate` in total, if given), each with
/// an idempotency key of its own (`keys`, a prefix unique to the run) when asked.
async fn drive(
    addr: std::net::SocketAddr,
    headers: Vec<(&'static str, String)>,
    keys: Option<Arc<str>>,
    n: usize,
    c: usize,
    rate: Option<f64>,
    ticks: bool,
) -> Result<Stats, String> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    // Even pacing: tokio's timer has a resolution of 1 ms, so sleeping until each request's
    // instant sends them in bursts (5 at once every millisecond at 5,000/s). A thread of its
    // own sleeps to each instant (the OS timer, tens of microseconds) and lets one request go.
    let pacer = match rate {
        Some(r) if !ticks => {
            let go = Arc::new(tokio::sync::Semaphore::new(0));
            let release = go.clone();
            std::thread::spawn(move || {
                for i in 0..n {
                    let at = start + Duration::from_secs_f64(i as f64 / r);
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    release.add_permits(1);
                }
            });
            Some(go)
        }
        _ => None,
    };
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (next, headers, keys, pacer) =
            (next.clone(), headers.clone(), keys.clone(), pacer.clone());
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let mut lat = Vec::new();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                if let Some(go) = &pacer {
                    go.acquire().await.map_err(|e| e.to_string())?.forget();
                } else if let Some(r) = rate {
                    let at = start + Duration::from_secs_f64(i as f64 / r);
                    tokio::time::sleep_until(at.into()).await;
                }
                let body =
                    json!({"message": format!("I have had a mild cough for {} days.", i % 7 + 1)})
                        .to_string();
                let mut req = hyper::Request::post("/v1/triage").header("host", "127.0.0.1");
                for (k, v) in &headers {
                    req = req.header(*k, v);
                }
                if let Some(prefix) = &keys {
                    req = req.header("idempotency-key", format!("{prefix}-{i}"));
                }
                let req = req
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| e.to_string())?;
                let t = Instant::now();
                sender.ready().await.map_err(|e| e.to_string())?;
                let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
                let ok = resp.status() == 200;
                resp.into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?;
                if ok {
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                } else {
                    errors += 1;
                }
            }
            Ok::<_, String>((lat, errors))
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.map_err(|e| e.to_string())??;
        lat.extend(l);
        errors += e;
    }
    Ok(stats(lat, errors, start.elapsed().as_secs_f64()))
}

/// The same work without HTTP: `c` tasks calling the service directly.
async fn direct(service: Arc<dyn TriageService>, n: usize, c: usize) -> Stats {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (next, service) = (next.clone(), service.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let Ok(message) = PatientMessage::parse("I have had a mild cough for 3 days.")
                else {
                    errors += 1;
                    continue;
                };
                let job = TriageJob {
                    request_id: "direct".into(),
                    message,
                    patient: Some(PatientId(1)),
                };
                let t = Instant::now();
                match service.triage(job).await {
                    Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            lat.extend(l);
            errors += e;
        }
    }
    stats(lat, errors, start.elapsed().as_secs_f64())
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<(), String> {
    let a = args()?;
    // The server and the load generator get a runtime each, so neither steals the other's
    // scheduler; on a 2-core machine they still share the cores (noted in the results). The
    // server's has as many threads as `careflow serve` would start (`gateway.async_threads`).
    let threads = a
        .async_threads
        .unwrap_or_else(|| GatewayConfig::default().runtime_threads());
    let server_rt = server_runtime(threads)?;
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;

    let (service, model): (Arc<dyn TriageService>, String) = if a.noop {
        (Arc::new(NoopService::new()), "noop".into())
    } else {
        server_rt.block_on(real_service())?
    };

    // An issuer for patient tokens (the portal's), so the measured path verifies one.
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| e.to_string())?;
    let pair =
        ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| e.to_string())?;
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(ring::signature::KeyPair::public_key(&pair).as_ref());
    use base64::Engine as _;
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(&spki)
    );
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() + 3600)
        .unwrap_or(0);
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &json!({"sub": "1", "iss": "portal", "aud": "careflow", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref()),
    )
    .map_err(|e| e.to_string())?;
    // Keys unique to this run, so a `--database` used before replays nothing.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let keys = |run: &str| {
        a.idempotency_keys
            .then(|| Arc::<str>::from(format!("{run}-{stamp}")))
    };

    // Without `--compare` one gateway with the default store options; with it, the baseline
    // and the default, in turn (below), each on a database of its own, in this same run.
    let default_threads = format!(
        "{threads} runtime thread(s) ({})",
        if a.async_threads.is_some() {
            "--async-threads"
        } else {
            "gateway.async_threads' default"
        }
    );
    if a.compare.as_deref() == Some("async-threads") && threads == 2 {
        return Err(
            "--compare async-threads: the gateway would run on 2 threads either way (the \
             default here, or --async-threads 2); pass --async-threads with another count"
                .into(),
        );
    }
    // A store option's comparison: the gateway with `baseline`, then with the defaults.
    let against_default = |baseline: &'static str, options: StoreOptions, default: &'static str| {
        vec![
            (baseline, options, threads),
            (default, StoreOptions::default(), threads),
        ]
    };
    let variants: Vec<(&str, StoreOptions, usize)> = match a.compare.as_deref() {
        None => vec![("default", StoreOptions::default(), threads)],
        Some("wal-sync") => against_default(
            "WAL written out by the checkpoints only",
            StoreOptions {
                wal_sync_every: None,
                ..StoreOptions::default()
            },
            "WAL written out every 20 ms (default)",
        ),
        Some("upkeep-priority") => against_default(
            "checkpoint and sync threads at normal priority",
            StoreOptions {
                upkeep_idle_priority: false,
                ..StoreOptions::default()
            },
            "at idle priority (default)",
        ),
        Some("wal-readahead") => against_default(
            "no WAL readahead",
            StoreOptions {
                wal_readahead: false,
                ..StoreOptions::default()
            },
            "WAL read ahead of the writer (default)",
        ),
        Some("async-threads") => vec![
            ("2 runtime threads", StoreOptions::default(), 2),
            (&default_threads, StoreOptions::default(), threads),
        ],
        Some(other) => {
            return Err(format!(
            "--compare: `{other}` is not wal-sync, upkeep-priority, wal-readahead or async-threads"
        ))
        }
    };
    if variants.len() > 1 && a.database.is_some() {
        return Err("--compare starts each gateway on a new SQLite file: no --database".into());
    }
    // Each round measures every variant, the order turned round each time (A B, B A, …), so
    // neither always runs first, on a machine freshly quiet, or second, after the other.
    let order: Vec<(usize, usize)> = (0..a.rounds)
        .flat_map(|round| {
            let mut idx: Vec<usize> = (0..variants.len()).collect();
            if round % 2 == 1 {
                idx.reverse();
            }
            idx.into_iter().map(move |i| (round, i))
        })
        .collect();
    let mut measured: Vec<Vec<Stats>> = vec![Vec::new(); variants.len()];
    let mut direct_stats = None;
    for (round, i) in order {
        let (_, options, variant_threads) = &variants[i];
        // A variant with another thread count gets a runtime of its own, dropped after it.
        let own_rt = (*variant_threads != threads)
            .then(|| server_runtime(*variant_threads))
            .transpose()?;
        let rt = own_rt.as_ref().unwrap_or(&server_rt);
        let db_url = a.database.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                dir.path()
                    .join(format!("loadtest-{round}-{i}.db"))
                    .display()
            )
        });
        let gw = rt.block_on(start_gateway(
            &a,
            service.clone(),
            &db_url,
            *options,
            pem.clone(),
        ))?;
        // The noop measures the portal path (API key + patient token); the real workflow
        // has no records here, so it runs as admin without a patient.
        let headers = if a.noop {
            vec![
                ("authorization", format!("Bearer {}", gw.portal)),
                ("content-type", "application/json".to_string()),
                ("x-patient-token", token.clone()),
            ]
        } else {
            vec![
                ("authorization", format!("Bearer {}", gw.admin)),
                ("content-type", "application/json".to_string()),
            ]
        };
        // Warm-up: connections, caches, the SQLite file.
        let warm = a.requests.min(if a.noop { 500 } else { 1 });
        client_rt.block_on(drive(
            gw.addr,
            headers.clone(),
            keys(&format!("warm-up-{round}-{i}")),
            warm,
            a.concurrency.min(warm),
            None,
            a.ticks,
        ))?;
        // The service alone, once, on the runtime of the default thread count.
        if a.noop && direct_stats.is_none() {
            direct_stats =
                Some(server_rt.block_on(direct(service.clone(), a.requests, a.concurrency)));
        }
        let http = client_rt.block_on(drive(
            gw.addr,
            headers,
            keys(&format!("run-{round}-{i}")),
            a.requests,
            a.concurrency,
            a.rate,
            a.ticks,
        ))?;
        // Drained and closed before the next measurement starts, and before its runtime and
        // its files go: nothing of it runs on into the next.
        let _ = gw.shutdown.send(());
        rt.block_on(async {
            let _ = gw.task.await;
            gw.store.close().await;
        });
        drop(own_rt);
        // A measured database is not needed again: its pages would only crowd the disk and
        // the page cache of the next measurement.
        if a.database.is_none() {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(
                    dir.path().join(format!("loadtest-{round}-{i}.db{suffix}")),
                );
            }
        }
        measured[i].push(http);
    }
    let runs: Vec<(&str, Stats)> = variants
        .iter()
        .zip(&measured)
        .map(|((label, _, _), m)| (*label, median_of(m)))
        .collect();
    let (_, http) = runs.last().cloned().ok_or("no gateway was measured")?;
    let compared = (runs.len() > 1).then(|| {
        let (base, new) = (&runs[0].1, &runs[runs.len() - 1].1);
        json!({
            "what": a.compare,
            "runs": runs.iter().zip(&measured).map(|((label, s), m)| json!({
                "options": label,
                "http": s,
                "p99_ms_each_round": m.iter().map(|r| r.p99_ms).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "p50_ratio": new.p50_ms / base.p50_ms,
            "p99_ratio": new.p99_ms / base.p99_ms,
        })
    });
    let report = json!({
        "service": if a.noop { "noop" } else { "workflow" },
        "model": model,
        "requests": a.requests,
        "concurrency": a.concurrency,
        "target_rate": a.rate,
        "idempotency_keys": a.idempotency_keys,
        "rounds": a.rounds,
        "http": http,
        "p99_ms_each_round": measured.last().map(|m| m.iter().map(|r| r.p99_ms).collect::<Vec<_>>()),
        "direct": direct_stats,
        "added_ms": direct_stats.as_ref().map(|d| json!({
            "p50": http.p50_ms - d.p50_ms,
            "p99": http.p99_ms - d.p99_ms,
        })),
        "compared": compared,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "server_threads": threads,
        "note": "server and load generator (1 thread, and a pacing thread) share this machine's cores",
    });
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!(
        "gateway load test ({} service, model {model}): {} requests, {} connections{}{}",
        if a.noop { "no-op" } else { "workflow" },
        a.requests,
        a.concurrency,
        a.rate
            .map(|r| format!(", paced to {r:.0}/s"))
            .unwrap_or_default(),
        if a.idempotency_keys {
            ", an idempotency key each"
        } else {
            ""
        }
    );
    let each = |m: &[Stats]| {
        m.iter()
            .map(|r| format!("{:.3}", r.p99_ms))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if a.rounds > 1 {
        println!(
            "  {} rounds, variants in turn; medians over the rounds",
            a.rounds
        );
    }
    if runs.len() > 1 {
        let base = &runs[0].1;
        for ((label, s), m) in runs.iter().zip(&measured) {
            println!(
                "  {label}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, errors {} ({:.2}x the first's p99){}",
                s.p50_ms,
                s.p99_ms,
                s.max_ms,
                s.errors,
                s.p99_ms / base.p99_ms,
                if a.rounds > 1 { format!("; p99 each round: {}", each(m)) } else { String::new() }
            );
        }
        println!("  the last, in full:");
    } else if a.rounds > 1 {
        if let Some(m) = measured.last() {
            println!("  p99 each round: {} ms", each(m));
        }
    }
    println!(
        "  through HTTP:   {:>9.2} req/s   p50 {:>8.3} ms   p99 {:>8.3} ms   max {:>8.3} ms   errors {}",
        http.requests_per_second, http.p50_ms, http.p99_ms, http.max_ms, http.errors
    );
    if let Some(d) = &direct_stats {
        println!(
            "  service alone:  {:>9.2} req/s   p50 {:>8.3} ms   p99 {:>8.3} ms   max {:>8.3} ms   errors {}",
            d.requests_per_second, d.p50_ms, d.p99_ms, d.max_ms, d.errors
        );
        println!(
            "  added by the gateway: p50 {:.3} ms, p99 {:.3} ms",
            http.p50_ms - d.p50_ms,
            http.p99_ms - d.p99_ms
        );
    }
    Ok(())
}

/// A multi-thread runtime for the gateway with `threads` worker threads.
fn server_runtime(threads: usize) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// A gateway being measured: where it listens, its two API keys, and how to stop it.
struct Gateway {
    addr: std::net::SocketAddr,
    portal: String,
    admin: String,
    shutdown: tokio::sync::oneshot::Sender<()>,
    /// The server task, which ends once it has drained after `shutdown`.
    task: tokio::task::JoinHandle<Result<(), careflow_gateway::GatewayError>>,
    store: Store,
}

/// Starts a gateway over `service` on `db_url` (created if missing) with `options`,
/// verifying patient tokens with `pem`, on a port of its own.
async fn start_gateway(
    a: &Args,
    service: Arc<dyn TriageService>,
    db_url: &str,
    options: StoreOptions,
    pem: String,
) -> Result<Gateway, String> {
    let mut config = GatewayConfig {
        queue_depth: a.requests.max(64),
        workers: if a.noop { a.concurrency } else { 2 },
        request_deadline_ms: 600_000,
        jwt: Some(JwtConfig {
            issuer: "portal".into(),
            audience: "careflow".into(),
            algorithm: JwtAlgorithm::EdDSA,
            public_key_pem: Some(pem),
            public_key_pem_path: None,
            leeway_s: 0,
        }),
        ..Default::default()
    };
    config.rate_limit.per_key_per_second = 0.0;
    let settings = config.build().map_err(|e| e.to_string())?;
    let store = Store::connect_with(db_url, options)
        .await
        .map_err(|e| e.to_string())?;
    let (_, portal) = create_key(&store, "load-portal", Role::Portal)
        .await
        .map_err(|e| e.to_string())?;
    let (_, admin) = create_key(&store, "load-admin", Role::Admin)
        .await
        .map_err(|e| e.to_string())?;
    let state = AppState::new(settings, service, store.clone())
        .await
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(careflow_gateway::run(listener, state, async move {
        let _ = stop.await;
    }));
    Ok(Gateway {
        addr,
        portal,
        admin,
        shutdown,
        task,
        store,
    })
}

async fn real_service() -> Result<(Arc<dyn TriageService>, String), String> {
    use careflow_engine::{models, EngineConfig};
    let path = models::default_model_path();
    if !path.is_file() {
        return Err(format!(
            "{} is not cached (careflow model pull smollm2-135m)",
            path.display()
        ));
    }
    let threads = std::env::var("CAREFLOW_THREADS")
        .ok()
        .and_then(|t| t.parse().ok());
    let engine = Arc::new(
        EngineConfig {
            threads,
            ..EngineConfig::for_model(&path)
        }
        .build()
        .map_err(|e| e.to_string())?,
    );
    let wf = careflow_workflow::TriageWorkflow::new(
        engine.clone(),
        None,
        careflow_knowledge::RuleSet::embedded().map_err(|e| e.to_string())?,
        careflow_knowledge::Guidelines::embedded().map_err(|e| e.to_string())?,
        careflow_workflow::WorkflowConfig::default(),
    )
    .map_err(|e| e.to_string())?;
    wf.warm().await.map_err(|e| e.to_string())?;
    let name = careflow_engine::Engine::info(engine.as_ref()).name.clone();
    Ok((
        Arc::new(WorkflowService::new(Arc::new(wf), engine, None)),
        name,
    ))
}
