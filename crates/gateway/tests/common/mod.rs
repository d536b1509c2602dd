//! A real server on 127.0.0.1:0 with a SQLite store in a temporary directory, three keys
//! (portal, clinician, admin), and an Ed25519 issuer that signs patient tokens.
#![allow(dead_code)]

use async_trait::async_trait;
use base64::Engine as _;
use careflow_core::{Disposition, TokenUsage};
use careflow_gateway::{
    create_key, AppState, GatewayConfig, GatewayError, JwtAlgorithm, JwtConfig, NoopService, Role,
    ServiceInfo, Store, TriageJob, TriageService,
};
use careflow_workflow::{StepReport, TriageOutcome};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::KeyPair;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ISSUER: &str = "https://portal.example.test";
pub const AUDIENCE: &str = "careflow";

/// An Ed25519 key pair: the private half signs, the public half (PEM) goes in the config.
pub struct Issuer {
    pub encoding: EncodingKey,
    pub public_pem: String,
}

impl Issuer {
    pub fn generate() -> Issuer {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        // SubjectPublicKeyInfo for Ed25519: a fixed 12-byte header, then the 32-byte key.
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(pair.public_key().as_ref());
        let b64 = base64::engine::general_purpose::STANDARD.encode(&spki);
        Issuer {
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            public_pem: format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n"),
        }
    }

    pub fn token_with(&self, claims: Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.encoding).unwrap()
    }

    /// A valid token for `patient`, an hour long.
    pub fn token(&self, patient: i64) -> String {
        self.token_with(json!({
            "sub": patient.to_string(), "iss": ISSUER, "aud": AUDIENCE,
            "exp": now() + 3600, "iat": now(),
        }))
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub store: Store,
    pub db_url: String,
    pub portal: String,
    pub clinician: String,
    pub admin: String,
    pub issuer: Issuer,
    shutdown: Option<oneshot::Sender<()>>,
    pub handle: Option<JoinHandle<Result<(), GatewayError>>>,
    _dir: tempfile::TempDir,
}

/// Test defaults: no rate limit (tests that want one set it), short deadlines.
pub fn test_config(issuer: &Issuer) -> GatewayConfig {
    let mut c = GatewayConfig {
        listen: "127.0.0.1:0".into(),
        request_deadline_ms: 10_000,
        shutdown_grace_ms: 5_000,
        jwt: Some(JwtConfig {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            algorithm: JwtAlgorithm::EdDSA,
            public_key_pem_path: None,
            public_key_pem: Some(issuer.public_pem.clone()),
            leeway_s: 0,
        }),
        ..Default::default()
    };
    c.rate_limit.per_key_per_second = 0.0;
    c
}

pub async fn start(
    service: Arc<dyn TriageService>,
    tweak: impl FnOnce(&mut GatewayConfig),
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("gateway.db").display());
    start_on(service, tweak, dir, db_url).await
}

pub async fn start_on(
    service: Arc<dyn TriageService>,
    tweak: impl FnOnce(&mut GatewayConfig),
    dir: tempfile::TempDir,
    db_url: String,
) -> Server {
    let issuer = Issuer::generate();
    let mut config = test_config(&issuer);
    tweak(&mut config);
    let settings = config.build().unwrap();
    let store = Store::connect(&db_url).await.unwrap();
    let (_, portal) = create_key(&store, "portal", Role::Portal).await.unwrap();
    let (_, clinician) = create_key(&store, "clinician", Role::Clinician)
        .await
        .unwrap();
    let (_, admin) = create_key(&store, "admin", Role::Admin).await.unwrap();
    let state = AppState::new(settings, service, store.clone())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(careflow_gateway::run(listener, state.clone(), async move {
        let _ = rx.await;
    }));
    Server {
        base,
        client: reqwest::Client::new(),
        state,
        store,
        db_url,
        portal,
        clinician,
        admin,
        issuer,
        shutdown: Some(tx),
        handle: Some(handle),
        _dir: dir,
    }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POST /v1/triage with a key, an optional patient token and a raw JSON body.
    pub async fn triage_raw(
        &self,
        key: &str,
        token: Option<&str>,
        body: String,
        idempotency_key: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url("/v1/triage"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.header("x-patient-token", t);
        }
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        req.send().await.unwrap()
    }

    /// A portal submission for `patient`.
    pub async fn triage(&self, patient: i64, message: &str) -> reqwest::Response {
        let token = self.issuer.token(patient);
        self.triage_raw(
            &self.portal,
            Some(&token),
            json!({"message": message}).to_string(),
            None,
        )
        .await
    }

    /// Stops the server (graceful drain) and waits for `run` to return.
    pub async fn shutdown(&mut self) -> Result<(), GatewayError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(h) => h.await.unwrap(),
            None => Ok(()),
        }
    }

    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The `{"error": {...}}` body of a response, with its status.
pub async fn error_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    (status, body["error"].clone())
}

/// A new, empty PostgreSQL database on the server `CAREFLOW_TEST_POSTGRES_URL` names (as
/// scripts/test.sh sets it), named `careflow_{tag}_{pid}`; `None` when the variable is unset.
pub async fn fresh_postgres(tag: &str) -> Option<String> {
    use sqlx::{Connection, Executor};
    let url = std::env::var("CAREFLOW_TEST_POSTGRES_URL").ok()?;
    let database = format!("careflow_{tag}_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    admin
        .execute(format!("DROP DATABASE IF EXISTS {database}").as_str())
        .await
        .unwrap();
    admin
        .execute(format!("CREATE DATABASE {database}").as_str())
        .await
        .unwrap();
    let (root, query) = match url.split_once('?') {
        Some((r, q)) => (r.to_string(), format!("?{q}")),
        None => (url.clone(), String::new()),
    };
    let root = &root[..root.rfind('/').unwrap()];
    Some(format!("{root}/{database}{query}"))
}

/// Drops a database [`fresh_postgres`] made (its connections first).
pub async fn drop_postgres(db_url: &str) {
    use sqlx::{Connection, Executor};
    let (Ok(url), Some(database)) = (
        std::env::var("CAREFLOW_TEST_POSTGRES_URL"),
        db_url
            .split('?')
            .next()
            .and_then(|u| u.rsplit('/').next())
            .map(str::to_string),
    ) else {
        return;
    };
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let _ = sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&database)
    .execute(&mut admin)
    .await;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {database}").as_str())
        .await
        .unwrap();
}

/// A workflow stand-in whose outcome follows the message: "urgent…" → human review of an
/// urgent case (a rule's floor), "unsure…" or one holding `<script>` → human review of a
/// routine case, "frontier…" → self-care decided by the frontier tier, anything else →
/// self-care decided by the small model. Every outcome has a drafted reply and two steps with
/// tokens (the dashboard's figures).
pub struct Scripted;

#[async_trait]
impl TriageService for Scripted {
    async fn triage(&self, job: TriageJob) -> Result<TriageOutcome, GatewayError> {
        let mut o = NoopService::outcome(&job);
        let text = job.message.as_str().to_string();
        let (d, by, floor) = if text.starts_with("urgent") {
            (
                Disposition::UrgentSameDay,
                "human_review",
                Some(Disposition::UrgentSameDay),
            )
        } else if text.starts_with("unsure") || text.contains("<script>") {
            (Disposition::Routine, "human_review", None)
        } else if text.starts_with("frontier") {
            (Disposition::SelfCare, "frontier", None)
        } else {
            (Disposition::SelfCare, "small", None)
        };
        o.disposition = d;
        o.floor = floor;
        o.route.decided_by = by.into();
        o.route.escalated = by != "small";
        o.patient_reply = "Drafted answer for the patient.".into();
        o.steps = ["plan", "analyze"]
            .iter()
            .enumerate()
            .map(|(i, step)| StepReport {
                step: step.to_string(),
                kind: step.to_string(),
                tier: "small".into(),
                price_key: None,
                model: "noop".into(),
                adapter: None,
                usage: TokenUsage {
                    submitted: 500,
                    computed: 100 + 50 * i as u64,
                    reused: 400 - 50 * i as u64,
                    generated: 20,
                    micros: 0,
                },
                cost_usd: 0.0001,
                attempts: 1,
                millis: 10.0 + 10.0 * i as f64,
                prompt: None,
                output: Value::Null,
            })
            .collect();
        o.totals = o.steps.iter().fold(TokenUsage::default(), |mut t, s| {
            t += s.usage;
            t
        });
        o.cost_usd = 0.0002;
        Ok(o)
    }
    fn info(&self) -> ServiceInfo {
        NoopService::new().info()
    }
}
