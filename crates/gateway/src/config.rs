//! The gateway's settings: [`GatewayConfig`] is data (the `[gateway]` table of `careflow.toml`);
//! [`GatewayConfig::build`] checks it and loads what it names (the patient-token key) into
//! [`Settings`], so a bad file stops the server before it listens, with the field named.

use crate::auth::PatientTokens;
use crate::GatewayError;
use careflow_ledger::Prices;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address to listen on (`--listen` overrides it).
    pub listen: String,
    /// Largest request body accepted; larger bodies get 413.
    pub body_limit_bytes: usize,
    /// Requests that may wait for a worker; past it new requests get 429 with Retry-After.
    pub queue_depth: usize,
    /// Workflow runs in flight at once (the embedded engine batches them).
    pub workers: usize,
    /// Threads of the async runtime `careflow serve` runs on: HTTP, the queue, the database
    /// writer, the workflow's steps between model calls (the model decodes on threads of its
    /// own, `[small] threads`). 0: half the cores, at least one. On this project's 2-core
    /// machine one thread measured p99 0.59-0.90 ms added at 5,000 requests/s against
    /// 0.70-1.60 ms with two in eight interleaved pairs of runs, and 25,100 against 22,900
    /// requests/s at most; in one run (`loadtest --noop --compare async-threads`) 0.48-1.17x
    /// the p99 on two, `--rounds 3` 1.01x. A second thread mostly woke up to steal the
    /// first one's tasks, on a core the database and the engine need. Half the cores is not
    /// measured on bigger machines: set the count there from a load test.
    pub async_threads: usize,
    /// A request not finished by then (queue wait included) ends as `error: deadline`, 504.
    pub request_deadline_ms: u64,
    /// On shutdown, how long in-flight and queued work may still finish before it is
    /// stored as `error: shutdown`.
    pub shutdown_grace_ms: u64,
    /// How long a verified API key is trusted without reading the database again: a key
    /// revoked by another process (`careflow keys revoke`) stops working within this time.
    pub key_cache_ms: u64,
    /// Most tokens one `/v1/chat/completions` call may generate.
    pub chat_max_tokens: usize,
    pub rate_limit: RateLimitConfig,
    /// The portal's patient tokens; without it, portal keys cannot submit or read.
    pub jwt: Option<JwtConfig>,
    /// The clinicians' review console and the operations dashboard (`/console`).
    pub console: ConsoleConfig,
}

/// The review console and dashboard served under `/console`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console at all (the JSON review API is there either way).
    pub enabled: bool,
    /// A sign-in lasts this long, then the clinician signs in again.
    pub session_ttl_minutes: u64,
    /// Mark the session cookie `Secure` even when the request did not come through an HTTPS
    /// proxy (`X-Forwarded-Proto: https` marks it anyway).
    pub secure_cookie: bool,
    /// Days of history the dashboard shows.
    pub dashboard_days: u32,
    /// The prices-file tier the dashboard compares careflow's cost against.
    pub flagship_tier: String,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            session_ttl_minutes: 8 * 60,
            secure_cookie: false,
            dashboard_days: 14,
            flagship_tier: careflow_ledger::tiers::FLAGSHIP_API.into(),
        }
    }
}

/// The console's checked settings.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    pub enabled: bool,
    pub session_ttl: Duration,
    pub secure_cookie: bool,
    pub dashboard_days: u32,
    pub flagship_tier: String,
    /// Prices the flagship comparison (the embedded prices unless the server passes its own).
    pub prices: Arc<Prices>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "127.0.0.1:8080".into(),
            body_limit_bytes: 64 * 1024,
            queue_depth: 64,
            workers: 2,
            async_threads: 0,
            request_deadline_ms: 120_000,
            shutdown_grace_ms: 30_000,
            key_cache_ms: 2_000,
            chat_max_tokens: 512,
            rate_limit: RateLimitConfig::default(),
            jwt: None,
            console: ConsoleConfig::default(),
        }
    }
}

/// A token bucket per API key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained requests per second per key; 0 turns the limit off.
    pub per_key_per_second: f64,
    /// Requests a key may make at once above the sustained rate.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_key_per_second: 20.0,
            burst: 40,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    EdDSA,
    RS256,
}

/// How patient tokens issued by the portal are verified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    pub algorithm: JwtAlgorithm,
    /// The issuer's public key (PEM) in a file…
    #[serde(default)]
    pub public_key_pem_path: Option<PathBuf>,
    /// …or inline.
    #[serde(default)]
    pub public_key_pem: Option<String>,
    /// Clock skew tolerated on `exp`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_s: u64,
}

fn default_leeway() -> u64 {
    30
}

/// Checked settings, ready to serve with.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub body_limit_bytes: usize,
    pub queue_depth: usize,
    pub workers: usize,
    pub request_deadline: Duration,
    pub shutdown_grace: Duration,
    pub key_cache: Duration,
    pub chat_max_tokens: usize,
    pub rate_limit: RateLimitConfig,
    pub patient_tokens: Option<PatientTokens>,
    pub console: ConsoleSettings,
}

/// More runtime threads than this is a typo, not a machine.
const MAX_ASYNC_THREADS: usize = 1024;

impl GatewayConfig {
    /// The runtime threads to start: [`GatewayConfig::async_threads`], or for 0 half the
    /// cores this process may use (cgroup quotas included), at least one. Read before the
    /// runtime starts, so before [`GatewayConfig::build`] checks the config: a count past
    /// the limit gets the default here and its error from `build`.
    pub fn runtime_threads(&self) -> usize {
        match self.async_threads {
            n @ 1..=MAX_ASYNC_THREADS => n,
            _ => std::thread::available_parallelism()
                .map(|n| n.get() / 2)
                .unwrap_or(1)
                .max(1),
        }
    }

    /// Checks every field and loads the patient-token key; errors name the field.
    pub fn build(&self) -> Result<Settings, GatewayError> {
        let bad = |field: &str, reason: String| GatewayError::Config {
            field: format!("gateway.{field}"),
            reason,
        };
        let listen: SocketAddr = self
            .listen
            .parse()
            .map_err(|e| bad("listen", format!("`{}`: {e}", self.listen)))?;
        if self.body_limit_bytes < 1024 {
            return Err(bad("body_limit_bytes", "must be at least 1024".into()));
        }
        if self.queue_depth == 0 {
            return Err(bad("queue_depth", "must be at least 1".into()));
        }
        if self.workers == 0 {
            return Err(bad("workers", "must be at least 1".into()));
        }
        if self.async_threads > MAX_ASYNC_THREADS {
            return Err(bad(
                "async_threads",
                format!("must be at most {MAX_ASYNC_THREADS} (0: half the cores)"),
            ));
        }
        if self.request_deadline_ms == 0 {
            return Err(bad("request_deadline_ms", "must be at least 1".into()));
        }
        if self.chat_max_tokens == 0 {
            return Err(bad("chat_max_tokens", "must be at least 1".into()));
        }
        let r = &self.rate_limit;
        if !r.per_key_per_second.is_finite() || r.per_key_per_second < 0.0 {
            return Err(bad(
                "rate_limit.per_key_per_second",
                "must be a non-negative number (0 turns the limit off)".into(),
            ));
        }
        if r.per_key_per_second > 0.0 && r.burst == 0 {
            return Err(bad(
                "rate_limit.burst",
                "must be at least 1 when a rate is set".into(),
            ));
        }
        let patient_tokens = match &self.jwt {
            Some(j) => Some(PatientTokens::from_config(j)?),
            None => None,
        };
        let c = &self.console;
        if c.session_ttl_minutes == 0 || c.session_ttl_minutes > 7 * 24 * 60 {
            return Err(bad(
                "console.session_ttl_minutes",
                "must be between 1 and 10080 (a week)".into(),
            ));
        }
        if c.dashboard_days == 0 || c.dashboard_days > 366 {
            return Err(bad(
                "console.dashboard_days",
                "must be between 1 and 366".into(),
            ));
        }
        let prices = Prices::embedded()
            .map_err(|e| bad("console.flagship_tier", format!("the embedded prices: {e}")))?;
        let console = ConsoleSettings {
            enabled: c.enabled,
            session_ttl: Duration::from_secs(c.session_ttl_minutes * 60),
            secure_cookie: c.secure_cookie,
            dashboard_days: c.dashboard_days,
            flagship_tier: c.flagship_tier.clone(),
            prices: Arc::new(prices),
        };
        console.check_prices()?;
        Ok(Settings {
            console,
            listen,
            body_limit_bytes: self.body_limit_bytes,
            queue_depth: self.queue_depth,
            workers: self.workers,
            request_deadline: Duration::from_millis(self.request_deadline_ms),
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            key_cache: Duration::from_millis(self.key_cache_ms),
            chat_max_tokens: self.chat_max_tokens,
            rate_limit: self.rate_limit.clone(),
            patient_tokens,
        })
    }
}

impl ConsoleSettings {
    /// Uses `prices` (the server's prices file) for the flagship comparison; the tier must
    /// be in it.
    pub fn with_prices(&mut self, prices: Prices) -> Result<(), GatewayError> {
        let old = std::mem::replace(&mut self.prices, Arc::new(prices));
        if let Err(e) = self.check_prices() {
            self.prices = old;
            return Err(e);
        }
        Ok(())
    }

    fn check_prices(&self) -> Result<(), GatewayError> {
        self.prices
            .tier(&self.flagship_tier)
            .map(|_| ())
            .map_err(|e| GatewayError::Config {
                field: "gateway.console.flagship_tier".into(),
                reason: e.to_string(),
            })
    }

    /// What `usage` would cost on the flagship tier, run statelessly.
    pub fn flagship_usd(&self, usage: &careflow_core::TokenUsage) -> f64 {
        self.prices
            .cost(&self.flagship_tier, &careflow_ledger::stateless(usage))
            .unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_gets_half_the_cores_unless_a_count_is_set() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let auto = GatewayConfig::default().runtime_threads();
        assert_eq!(auto, (cores / 2).max(1));
        let set = GatewayConfig {
            async_threads: 3,
            ..Default::default()
        };
        assert_eq!(set.runtime_threads(), 3);
    }

    fn field_of(c: GatewayConfig) -> String {
        match c.build() {
            Err(GatewayError::Config { field, .. }) => field,
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn defaults_build_and_bad_fields_are_named() {
        assert!(GatewayConfig::default().build().is_ok());
        let c = GatewayConfig {
            listen: "nowhere".into(),
            ..Default::default()
        };
        assert_eq!(field_of(c), "gateway.listen");
        let c = GatewayConfig {
            workers: 0,
            ..Default::default()
        };
        assert_eq!(field_of(c), "gateway.workers");
        let c = GatewayConfig {
            async_threads: 100_000,
            ..Default::default()
        };
        assert_eq!(field_of(c), "gateway.async_threads");
        let mut c = GatewayConfig::default();
        c.rate_limit.per_key_per_second = f64::NAN;
        assert_eq!(field_of(c), "gateway.rate_limit.per_key_per_second");
        let c = GatewayConfig {
            jwt: Some(JwtConfig {
                issuer: "portal".into(),
                audience: "careflow".into(),
                algorithm: JwtAlgorithm::EdDSA,
                public_key_pem_path: None,
                public_key_pem: None,
                leeway_s: 0,
            }),
            ..Default::default()
        };
        assert_eq!(field_of(c), "gateway.jwt.public_key_pem");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml_like("{\"queue_depht\": 3}");
        assert!(e.contains("queue_depht"), "{e}");
    }

    fn toml_like(json: &str) -> String {
        match serde_json::from_str::<GatewayConfig>(json) {
            Err(e) => e.to_string(),
            Ok(_) => "accepted".into(),
        }
    }
}
