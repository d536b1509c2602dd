//! `careflow keys`: the gateway's API keys. A secret is printed once, at creation; the
//! database keeps only a salted HMAC of it.

use crate::commands::{redact, DbArgs};
use crate::output;
use anyhow::{bail, Context, Result};
use careflow_gateway::{create_key, Role, Store};
use clap::Subcommand;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    /// The patient portal: submits, reads its patients' results (by their tokens).
    Portal,
    /// Reads any result.
    Clinician,
    /// Everything, and key management over HTTP.
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Portal => Role::Portal,
            RoleArg::Clinician => Role::Clinician,
            RoleArg::Admin => Role::Admin,
        }
    }
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once.
    Create {
        #[command(flatten)]
        db: DbArgs,
        /// Who holds it (e.g. `portal-prod`).
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        #[arg(long)]
        json: bool,
    },
    /// The keys, revoked ones included (never their secrets).
    List {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id; a running gateway refuses it within `gateway.key_cache_ms`.
    Revoke {
        #[command(flatten)]
        db: DbArgs,
        id: String,
    },
}

async fn store(db: &DbArgs) -> Result<Store> {
    let url = db.url();
    Store::connect(&url)
        .await
        .with_context(|| format!("opening the gateway tables at {}", redact(&url)))
}

pub async fn run(c: KeysCommand) -> Result<()> {
    match c {
        KeysCommand::Create {
            db,
            name,
            role,
            json,
        } => {
            if name.trim().is_empty() {
                bail!("--name: must not be empty");
            }
            let (key, secret) = create_key(&store(&db).await?, name.trim(), role.into()).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"key": key, "secret": secret})
                    )?
                );
            } else {
                eprintln!(
                    "created key {} ({}, {}); its secret, shown only now:",
                    key.id, key.name, key.role
                );
                println!("{secret}");
            }
        }
        KeysCommand::List { db, json } => {
            let keys = store(&db).await?.list_keys().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.id.clone(),
                            k.name.clone(),
                            k.role.clone(),
                            utc(k.created_at_ms),
                            k.revoked_at_ms.map(utc).unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                output::table(
                    &["id", "name", "role", "created (UTC)", "revoked (UTC)"],
                    &rows,
                );
            }
        }
        KeysCommand::Revoke { db, id } => {
            if !store(&db).await?.revoke_key(&id).await? {
                bail!("no active key `{id}` (see `careflow keys list`)");
            }
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM` in UTC.
fn utc(ms: i64) -> String {
    careflow_core::time::utc_minute(ms)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01 00:00");
        assert_eq!(super::utc(1_700_000_000_000), "2023-11-14 22:13");
    }
}
