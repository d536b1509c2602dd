//! Who is calling, and for which patient.
//!
//! - Services authenticate with an API key, `Authorization: Bearer cfk_<id>.<secret>`. The
//!   secret is 32 random bytes, so a fast keyed hash is right (no password stretching): the
//!   database keeps HMAC-SHA256(salt, secret) with a per-key salt, and the secret is shown once.
//! - The patient's identity comes only from a token the portal signs (`X-Patient-Token`, a JWT
//!   verified against the issuer's public key: signature, `exp`, `iss`, `aud`; `sub` is the
//!   patient id) — never from the request body.

use crate::api_error::ApiError;
use crate::config::{JwtAlgorithm, JwtConfig};
use crate::store::{ApiKeyRecord, Store, StoredKey};
use crate::GatewayError;
use careflow_core::PatientId;
use hmac::{Hmac, Mac};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The patient portal: submits triage requests and reads the results of the patient
    /// named in the request's patient token.
    Portal,
    /// Reads any result.
    Clinician,
    /// Everything, and manages keys.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Portal => "portal",
            Role::Clinician => "clinician",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "portal" => Some(Role::Portal),
            "clinician" => Some(Role::Clinician),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub role: Role,
}

const KEY_PREFIX: &str = "cfk_";

/// `n` random bytes from the operating system, as hex.
pub(crate) fn random_hex(n: usize) -> Result<String, GatewayError> {
    let mut buf = vec![0u8; n];
    getrandom::getrandom(&mut buf).map_err(|e| GatewayError::Io {
        context: "reading random bytes".into(),
        cause: std::io::Error::other(e.to_string()),
    })?;
    Ok(hex::encode(buf))
}

/// A new request id: 32 hex digits, the first 12 the time in milliseconds and the other 20
/// random (80 bits). Time first, so new rows land at the end of the `triage_requests` key
/// and the audit index instead of on a random page each: with random ids every write dirtied
/// a page of its own, and SQLite's WAL grew by ~8 KB a request at 5,000 requests/s.
pub(crate) fn new_request_id() -> Result<String, GatewayError> {
    let millis = careflow_ledger::now_ms() & 0xffff_ffff_ffff;
    Ok(format!("{millis:012x}{}", random_hex(10)?))
}

fn mac(salt: &str, secret: &str) -> Result<Hmac<Sha256>, GatewayError> {
    let mut m =
        Hmac::<Sha256>::new_from_slice(salt.as_bytes()).map_err(|e| GatewayError::Config {
            field: "api key salt".into(),
            reason: e.to_string(),
        })?;
    m.update(secret.as_bytes());
    Ok(m)
}

/// Creates a key and returns its record and the full secret (shown once, stored hashed).
pub async fn create_key(
    store: &Store,
    name: &str,
    role: Role,
) -> Result<(ApiKeyRecord, String), GatewayError> {
    let id = random_hex(8)?;
    let secret = random_hex(32)?;
    let salt = random_hex(16)?;
    let digest = hex::encode(mac(&salt, &secret)?.finalize().into_bytes());
    let record = ApiKeyRecord {
        id: id.clone(),
        name: name.to_string(),
        role: role.as_str().to_string(),
        created_at_ms: careflow_ledger::now_ms(),
        revoked_at_ms: None,
    };
    store
        .insert_key(&StoredKey {
            record: record.clone(),
            salt,
            secret_hmac: digest,
        })
        .await?;
    Ok((record, format!("{KEY_PREFIX}{id}.{secret}")))
}

fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError::Unauthorized {
        code,
        message: message.to_string(),
    }
}

/// Verifies API keys, with a short cache so a busy key does not cost a database read per
/// request; the gateway's own revocations clear it at once.
pub struct Keys {
    store: Store,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Arc<StoredKey>)>>,
}

impl Keys {
    pub fn new(store: Store, ttl: Duration) -> Self {
        Keys {
            store,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The principal of an `Authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        let Some(value) = authorization else {
            return Err(unauthorized(
                "missing_credentials",
                "an API key is required: Authorization: Bearer <key>",
            ));
        };
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                unauthorized(
                    "invalid_credentials",
                    "expected Authorization: Bearer <key>",
                )
            })?;
        self.verify(token).await
    }

    /// The principal of a key's secret as issued (`cfk_…`), e.g. typed into the console's
    /// sign-in form.
    pub async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let (id, secret) = token
            .strip_prefix(KEY_PREFIX)
            .and_then(|rest| rest.split_once('.'))
            .ok_or_else(|| unauthorized("invalid_credentials", "not a careflow API key"))?;
        let stored = self.lookup(id).await?;
        let Some(stored) = stored else {
            return Err(unauthorized("invalid_credentials", "unknown API key"));
        };
        let verified = mac(&stored.salt, secret)
            .ok()
            .zip(hex::decode(&stored.secret_hmac).ok())
            .is_some_and(|(m, expected)| m.verify_slice(&expected).is_ok());
        if !verified {
            return Err(unauthorized("invalid_credentials", "unknown API key"));
        }
        if stored.record.revoked_at_ms.is_some() {
            return Err(unauthorized(
                "revoked_credentials",
                "this API key was revoked",
            ));
        }
        let role = Role::parse(&stored.record.role)
            .ok_or_else(|| ApiError::Internal(format!("key {id} has an unknown role")))?;
        Ok(Principal {
            key_id: stored.record.id.clone(),
            role,
        })
    }

    async fn lookup(&self, id: &str) -> Result<Option<Arc<StoredKey>>, ApiError> {
        if let Ok(cache) = self.cache.lock() {
            if let Some((at, key)) = cache.get(id) {
                if at.elapsed() < self.ttl {
                    return Ok(Some(key.clone()));
                }
            }
        }
        let found = self.store.find_key(id).await.map_err(ApiError::from)?;
        let Some(found) = found else {
            return Ok(None);
        };
        let found = Arc::new(found);
        if let Ok(mut cache) = self.cache.lock() {
            // Bounded: an attacker cycling ids only reaches here with ids that exist.
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(id.to_string(), (Instant::now(), found.clone()));
        }
        Ok(Some(found))
    }

    pub async fn create(
        &self,
        name: &str,
        role: Role,
    ) -> Result<(ApiKeyRecord, String), GatewayError> {
        create_key(&self.store, name, role).await
    }

    pub async fn revoke(&self, id: &str) -> Result<bool, GatewayError> {
        let revoked = self.store.revoke_key(id).await?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(id);
        }
        Ok(revoked)
    }

    pub async fn list(&self) -> Result<Vec<ApiKeyRecord>, GatewayError> {
        self.store.list_keys().await
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// Verifies the portal's patient tokens.
///
/// A portal sends the same token with every request of a patient's session, and an
/// Ed25519 or RSA verification costs more than the rest of the gateway's work on a request:
/// verified tokens are remembered (by their SHA-256) until their own `exp`, checked again on
/// every hit, so the cache never extends a token's life.
#[derive(Clone)]
pub struct PatientTokens {
    key: Arc<DecodingKey>,
    validation: Arc<Validation>,
    verified: Arc<Mutex<VerifiedTokens>>,
}

/// SHA-256 of a verified token -> (its patient, its `exp`).
type VerifiedTokens = HashMap<[u8; 32], (PatientId, u64)>;

const VERIFIED_TOKENS_MAX: usize = 50_000;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(u64::MAX)
}

impl PatientTokens {
    pub fn from_config(j: &JwtConfig) -> Result<Self, GatewayError> {
        let bad = |field: &str, reason: String| GatewayError::Config {
            field: format!("gateway.jwt.{field}"),
            reason,
        };
        let pem =
            match (&j.public_key_pem, &j.public_key_pem_path) {
                (Some(inline), None) => inline.clone(),
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|e| bad("public_key_pem_path", format!("{}: {e}", path.display())))?,
                (Some(_), Some(_)) => {
                    return Err(bad(
                        "public_key_pem",
                        "give public_key_pem or public_key_pem_path, not both".into(),
                    ))
                }
                (None, None) => return Err(bad(
                    "public_key_pem",
                    "the issuer's public key is required (public_key_pem or public_key_pem_path)"
                        .into(),
                )),
            };
        let field = if j.public_key_pem.is_some() {
            "public_key_pem"
        } else {
            "public_key_pem_path"
        };
        let (key, alg) = match j.algorithm {
            JwtAlgorithm::EdDSA => (DecodingKey::from_ed_pem(pem.as_bytes()), Algorithm::EdDSA),
            JwtAlgorithm::RS256 => (DecodingKey::from_rsa_pem(pem.as_bytes()), Algorithm::RS256),
        };
        let key = key.map_err(|e| {
            bad(
                field,
                format!("not a {:?} public key in PEM: {e}", j.algorithm),
            )
        })?;
        if j.issuer.trim().is_empty() {
            return Err(bad("issuer", "must not be empty".into()));
        }
        if j.audience.trim().is_empty() {
            return Err(bad("audience", "must not be empty".into()));
        }
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&j.issuer]);
        validation.set_audience(&[&j.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = j.leeway_s;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        Ok(PatientTokens {
            key: Arc::new(key),
            validation: Arc::new(validation),
            verified: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The patient a token names.
    pub fn verify(&self, token: &str) -> Result<PatientId, ApiError> {
        let digest: [u8; 32] = sha2::Sha256::digest(token.trim().as_bytes()).into();
        let now = unix_now();
        if let Ok(cache) = self.verified.lock() {
            // Past `exp` the token goes through full verification again (and fails there).
            if let Some((patient, exp)) = cache.get(&digest) {
                if now < *exp {
                    return Ok(*patient);
                }
            }
        }
        self.verify_signed(token)
    }

    fn verify_signed(&self, token: &str) -> Result<PatientId, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token.trim(), &self.key, &self.validation)
            .map_err(|e| {
                let (code, message) = match e.kind() {
                    ErrorKind::ExpiredSignature => {
                        ("token_expired", "the patient token has expired")
                    }
                    ErrorKind::ImmatureSignature => {
                        ("invalid_token", "the patient token is not valid yet")
                    }
                    ErrorKind::InvalidSignature => (
                        "invalid_token",
                        "the patient token's signature does not verify",
                    ),
                    ErrorKind::InvalidIssuer => {
                        ("invalid_token", "the patient token's issuer is not trusted")
                    }
                    ErrorKind::InvalidAudience => {
                        ("invalid_token", "the patient token is for another audience")
                    }
                    ErrorKind::InvalidAlgorithm => (
                        "invalid_token",
                        "the patient token's algorithm is not the configured one",
                    ),
                    ErrorKind::MissingRequiredClaim(_) => (
                        "invalid_token",
                        "the patient token lacks a required claim (exp, iss, aud, sub)",
                    ),
                    _ => ("invalid_token", "the patient token is malformed"),
                };
                unauthorized(code, message)
            })?;
        let patient = data.claims.sub.parse::<PatientId>().map_err(|_| {
            unauthorized(
                "invalid_token",
                "the patient token's subject is not a patient id",
            )
        })?;
        let digest: [u8; 32] = sha2::Sha256::digest(token.trim().as_bytes()).into();
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= VERIFIED_TOKENS_MAX {
                let now = unix_now();
                cache.retain(|_, (_, exp)| now < *exp);
                if cache.len() >= VERIFIED_TOKENS_MAX {
                    cache.clear();
                }
            }
            cache.insert(digest, (patient, data.claims.exp));
        }
        Ok(patient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_verify_only_with_their_secret_and_not_after_revocation() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let keys = Keys::new(store, Duration::from_secs(60));
        let (record, secret) = keys.create("portal-1", Role::Portal).await.unwrap();
        let header = format!("Bearer {secret}");
        let p = keys.authenticate(Some(&header)).await.unwrap();
        assert_eq!(p.role, Role::Portal);
        assert_eq!(p.key_id, record.id);
        let wrong = format!("Bearer {KEY_PREFIX}{}.{}", record.id, "00".repeat(32));
        assert_eq!(
            keys.authenticate(Some(&wrong)).await.unwrap_err().code(),
            "invalid_credentials"
        );
        assert_eq!(
            keys.authenticate(None).await.unwrap_err().code(),
            "missing_credentials"
        );
        assert!(keys.revoke(&record.id).await.unwrap());
        assert_eq!(
            keys.authenticate(Some(&header)).await.unwrap_err().code(),
            "revoked_credentials"
        );
        // The listing never carries secret material.
        let listed = serde_json::to_string(&keys.list().await.unwrap()).unwrap();
        assert!(!listed.contains(secret.split('.').nth(1).unwrap()));
    }
}
