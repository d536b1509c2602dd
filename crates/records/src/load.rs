//! `Records::load_omop_zip`: verify, validate every table, then write all of them in ONE
//! transaction, so that a load either completes or leaves the database as it was.
//!
//! The archive is read twice on blocking threads: a first pass parses every row of every
//! table (so a malformed file fails before anything is written, and the progress total is
//! exact), a second pass streams batches to the database through a channel. A failure
//! while writing (the server gone, the disk full, the connection killed) rolls the whole
//! load back and is reported as [`RecordsError::RolledBack`]; the connection it used is
//! closed rather than returned to the pool.

use std::path::Path;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::csvread::{find_entries, read_table, sha256_file, Entry};
use crate::db::{Records, Tx};
use crate::error::RecordsError;
use crate::table::{rows_per_statement, OnConflict, Row, TableSpec, TABLES};

/// What a load wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadReport {
    /// Rows read from each table's CSV (and upserted), in load order.
    pub rows_per_table: Vec<(String, u64)>,
    /// Rows of the person table.
    pub persons: u64,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RecordsError> + Send + 'static,
) -> Result<T, RecordsError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RecordsError::Task(e.to_string()))?
}

impl Records {
    /// Loads the OMOP CSV zip (e.g. `shared/data/omop/Synthea27Nj_5.4.zip`). Verifies the
    /// sha256 when `expected_sha256` is given, then parses every table before writing any;
    /// `progress(done_rows, total_rows)` follows the writes. Existing ids are replaced, so
    /// loading twice leaves one copy. Every table is written in one transaction: when any
    /// write fails the load returns [`RecordsError::RolledBack`] and the database is as it
    /// was before (if the connection is lost during the final COMMIT itself, PostgreSQL
    /// cannot say whether it committed: [`RecordsError::CommitUncertain`]).
    pub async fn load_omop_zip(
        &self,
        path: &Path,
        expected_sha256: Option<&str>,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<LoadReport, RecordsError> {
        let path = path.to_path_buf();
        let expected = expected_sha256.map(|s| s.trim().to_ascii_lowercase());
        let p = path.clone();
        let (entries, totals) = blocking(move || {
            if let Some(expected) = expected {
                let actual = sha256_file(&p)?;
                if actual != expected {
                    return Err(RecordsError::Sha256Mismatch {
                        path: p,
                        expected,
                        actual,
                    });
                }
            }
            let entries = find_entries(&p, &TABLES)?;
            let totals = entries
                .iter()
                .zip(TABLES)
                .map(|(e, spec)| read_table(&p, e, spec, 4096, |_| true))
                .collect::<Result<Vec<u64>, _>>()?;
            Ok((entries, totals))
        })
        .await?;

        let total: u64 = totals.iter().sum();
        let file = path.file_name().map_or_else(
            || path.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        progress(0, total);

        // One transaction for every table, on a connection of its own.
        let mut conn = self.acquire().await?;
        let mut tx = conn.begin().await?;
        let mut done = 0u64;
        let mut rows_per_table = Vec::with_capacity(TABLES.len());
        let mut failed = None;
        for ((entry, spec), table_total) in entries.into_iter().zip(TABLES).zip(&totals) {
            let before = done;
            let written = load_table(&mut tx, &path, entry, spec, &mut |n| {
                done += n;
                progress(done, total);
            })
            .await;
            match written {
                Ok(written) => rows_per_table.push((spec.name.to_string(), written)),
                Err(e) => {
                    failed = Some(RecordsError::RolledBack {
                        what: format!("loading `{}` from {file}", spec.name),
                        source: Box::new(e),
                    });
                    break;
                }
            }
            // Keys repeated inside a file are written once; keep the count on the total.
            done = before + table_total;
            progress(done, total);
        }
        let outcome = match failed {
            Some(e) => {
                tx.rollback().await;
                Err(e)
            }
            None => tx
                .commit()
                .await
                .map_err(|e| e.into_records_error(format!("committing the load of {file}"))),
        };
        if outcome.is_err() {
            conn.discard();
        }
        outcome?;

        let persons = rows_per_table
            .iter()
            .find(|(t, _)| t == "person")
            .map(|(_, n)| *n)
            .unwrap_or(0);
        Ok(LoadReport {
            rows_per_table,
            persons,
        })
    }
}

/// Streams one table's rows from the archive into the open transaction; returns the rows read.
async fn load_table(
    tx: &mut Tx<'_>,
    path: &Path,
    entry: Entry,
    spec: &'static TableSpec,
    on_rows: &mut (dyn FnMut(u64) + Send),
) -> Result<u64, RecordsError> {
    let (sender, mut receiver) = mpsc::channel::<Vec<Row>>(4);
    let p = path.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || {
        read_table(&p, &entry, spec, rows_per_statement(spec) * 4, |batch| {
            sender.blocking_send(batch).is_ok()
        })
    });
    // On an error the receiver is dropped, and the reader stops at its next batch.
    while let Some(batch) = receiver.recv().await {
        tx.insert(spec, &batch, OnConflict::Replace).await?;
        on_rows(batch.len() as u64);
    }
    reader
        .await
        .map_err(|e| RecordsError::Task(e.to_string()))?
}
