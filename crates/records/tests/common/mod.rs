//! Helpers shared by the integration tests: real SQLite files in a temporary directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use careflow_records::Records;

/// The Synthea sample bundled in the repository (`data/omop/`, with its licence note).
pub const SYNTHEA_ZIP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../data/omop/Synthea27Nj_5.4.zip"
);

pub fn synthea_zip() -> PathBuf {
    PathBuf::from(SYNTHEA_ZIP)
}

pub fn sqlite_url(dir: &Path, name: &str) -> String {
    format!("sqlite://{}", dir.join(name).display())
}

/// A fresh, initialised SQLite database file in `dir`.
pub async fn fresh_db(dir: &Path, name: &str) -> Records {
    let records = Records::connect(&sqlite_url(dir, name))
        .await
        .expect("connect");
    records.init().await.expect("init");
    records
}

pub fn quiet(_: u64, _: u64) {}

pub async fn count(records: &Records, table: &str) -> i64 {
    records
        .counts()
        .await
        .expect("counts")
        .into_iter()
        .find(|(t, _)| t == table)
        .map(|(_, n)| n)
        .expect("table in counts")
}
