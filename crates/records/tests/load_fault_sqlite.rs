//! "Disk full mid-load" on SQLite, with a real fault: once about half the rows are written,
//! the progress callback lowers this process's file-size limit (`RLIMIT_FSIZE`, with
//! `SIGXFSZ` ignored) to just above the current size of the write-ahead log, so SQLite's
//! next write of the log fails in the kernel (`EFBIG`, which SQLite reports as a full disk
//! or an I/O error). The load (and a synth) must fail with a clear error and leave every
//! table as it was: empty in a fresh database, and the previous rows (with edits made
//! after the first load) untouched in one that already holds the sample.
//!
//! Why not a lock held by a second connection: the database is in WAL mode, where the
//! loader takes the write lock at its first row and keeps it until its one commit, so no
//! other connection can take it mid-load (that one waits and fails instead, not the load).
//!
//! The file-size limit is per process: this file is a test binary of its own with ONE test
//! function, so nothing else writes files while the limit is low. Linux on x86_64 or
//! aarch64 only (the signal and resource numbers below); elsewhere the file is empty.
#![cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use careflow_records::{Records, RecordsError, SYNTHEA_ZIP_SHA256};
use common::*;
use sqlx::{Executor, SqlitePool};

mod fsize {
    //! The file-size limit of this process, through the C library std already links.

    #[repr(C)]
    struct RLimit {
        cur: u64,
        max: u64,
    }
    const RLIMIT_FSIZE: i32 = 1;
    const SIGXFSZ: i32 = 25;
    const SIG_IGN: usize = 1;

    extern "C" {
        fn getrlimit(resource: i32, rlim: *mut RLimit) -> i32;
        fn setrlimit(resource: i32, rlim: *const RLimit) -> i32;
        fn signal(signum: i32, handler: usize) -> usize;
    }

    /// Restores the limit and the signal disposition it replaced when dropped.
    pub struct Lowered {
        cur: u64,
        max: u64,
        handler: usize,
    }

    /// Lowers the soft file-size limit to `bytes`: writes at or past that offset of any
    /// file fail with EFBIG (SIGXFSZ is ignored so that it does not kill the test).
    pub fn lower(bytes: u64) -> std::io::Result<Lowered> {
        let mut old = RLimit { cur: 0, max: 0 };
        // SAFETY: plain C calls with valid pointers to a repr(C) struct of two rlim_t.
        unsafe {
            if getrlimit(RLIMIT_FSIZE, &mut old) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let handler = signal(SIGXFSZ, SIG_IGN);
            let new = RLimit {
                cur: bytes.min(old.max),
                max: old.max,
            };
            if setrlimit(RLIMIT_FSIZE, &new) != 0 {
                let e = std::io::Error::last_os_error();
                signal(SIGXFSZ, handler);
                return Err(e);
            }
            Ok(Lowered {
                cur: old.cur,
                max: old.max,
                handler,
            })
        }
    }

    impl Drop for Lowered {
        fn drop(&mut self) {
            let old = RLimit {
                cur: self.cur,
                max: self.max,
            };
            // SAFETY: as above.
            unsafe {
                setrlimit(RLIMIT_FSIZE, &old);
                signal(SIGXFSZ, self.handler);
            }
        }
    }
}

/// Room left above the log's current size: far less than the rest of the load writes.
const MARGIN: u64 = 64 * 1024;

fn wal_len(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(PathBuf::from(wal))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// A progress callback that lowers the file-size limit once half of `total` is done, and
/// the lowered limit (kept until the caller drops it).
struct Fault {
    db: PathBuf,
    fired: AtomicBool,
    lowered: Mutex<Option<fsize::Lowered>>,
    error: Mutex<Option<String>>,
}

impl Fault {
    fn new(db: &Path) -> Fault {
        Fault {
            db: db.to_path_buf(),
            fired: AtomicBool::new(false),
            lowered: Mutex::new(None),
            error: Mutex::new(None),
        }
    }

    fn progress(&self, done: u64, total: u64) {
        if done * 2 >= total && done < total && !self.fired.swap(true, Ordering::SeqCst) {
            let limit = wal_len(&self.db) + MARGIN;
            match fsize::lower(limit) {
                Ok(l) => *self.lowered.lock().expect("lock") = Some(l),
                Err(e) => *self.error.lock().expect("lock") = Some(e.to_string()),
            }
        }
    }

    /// Restores the limit; panics if the fault was never injected.
    fn restore(&self) {
        if let Some(e) = self.error.lock().expect("lock").take() {
            panic!("could not lower the file-size limit: {e}");
        }
        let lowered = self.lowered.lock().expect("lock").take();
        assert!(lowered.is_some(), "the fault was never injected");
        drop(lowered);
    }
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    counts: Vec<(String, i64)>,
    first_concept_name: Option<String>,
    person_1_year_of_birth: Option<i64>,
}

async fn snapshot(records: &Records, raw: &SqlitePool) -> Snapshot {
    Snapshot {
        counts: records.counts().await.expect("counts"),
        first_concept_name: sqlx::query_scalar(
            "SELECT concept_name FROM concept ORDER BY concept_id LIMIT 1",
        )
        .fetch_optional(raw)
        .await
        .expect("concept name"),
        person_1_year_of_birth: sqlx::query_scalar(
            "SELECT year_of_birth FROM person WHERE person_id = 1",
        )
        .fetch_optional(raw)
        .await
        .expect("year of birth"),
    }
}

/// Empties the write-ahead log (its frames are all in the database file afterwards), so
/// that the next transaction writes it from the start and the limit set above its size
/// is reached by that transaction's own writes.
async fn truncate_wal(raw: &SqlitePool) {
    let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(raw)
        .await
        .expect("checkpoint");
    assert_eq!(busy, 0, "the checkpoint was blocked");
}

async fn failing_load(records: &Records, raw: &SqlitePool, db: &Path) -> RecordsError {
    truncate_wal(raw).await;
    let fault = Fault::new(db);
    let result = records
        .load_omop_zip(&synthea_zip(), Some(SYNTHEA_ZIP_SHA256), &|d, t| {
            fault.progress(d, t)
        })
        .await;
    fault.restore();
    let err = result.expect_err("the load must fail once the disk is full");
    println!("load failed with: {err}");
    err
}

/// The error says what happened: the load was rolled back, and why.
fn assert_clear(err: &RecordsError) {
    assert!(
        matches!(err, RecordsError::RolledBack { .. }),
        "expected a rolled-back load, got {err:?}"
    );
    assert!(err.to_string().contains("rolled back"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full_mid_load_or_synth_leaves_the_database_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fault.db");
    let records = fresh_db(dir.path(), "fault.db").await;
    let raw = SqlitePool::connect(&sqlite_url(dir.path(), "fault.db"))
        .await
        .expect("raw connection");

    // 1. A fresh database: the failed load leaves every table empty.
    let empty = snapshot(&records, &raw).await;
    assert!(empty.counts.iter().all(|(_, n)| *n == 0), "{empty:?}");
    let err = failing_load(&records, &raw, &db).await;
    assert_clear(&err);
    assert_eq!(snapshot(&records, &raw).await, empty, "still empty");

    // The database and the pool still work: a clean load.
    let started = std::time::Instant::now();
    let report = records
        .load_omop_zip(&synthea_zip(), Some(SYNTHEA_ZIP_SHA256), &quiet)
        .await
        .expect("a clean load after the failed one");
    println!("clean load on SQLite took {:.2?}", started.elapsed());
    assert_eq!(report.persons, 28);

    // 2. A database that holds the sample, edited since: the failed load changes nothing.
    for sql in [
        "UPDATE concept SET concept_name = 'edited after the first load' \
         WHERE concept_id = (SELECT min(concept_id) FROM concept)",
        "UPDATE person SET year_of_birth = 1900 WHERE person_id = 1",
        "DELETE FROM visit_occurrence WHERE person_id = 2",
    ] {
        raw.execute(sql).await.expect("edit");
    }
    let before = snapshot(&records, &raw).await;
    assert_eq!(before.person_1_year_of_birth, Some(1900));
    let err = failing_load(&records, &raw, &db).await;
    assert_clear(&err);
    assert_eq!(
        snapshot(&records, &raw).await,
        before,
        "a failed load leaves the previous rows as they were"
    );

    // 3. A synth that fails half-way writes no person at all (and no partial person).
    truncate_wal(&raw).await;
    let fault = Fault::new(&db);
    let result = records.synth(1_000, 3, &|d, t| fault.progress(d, t)).await;
    fault.restore();
    let err = result.expect_err("the synth must fail once the disk is full");
    println!("synth failed with: {err}");
    assert_clear(&err);
    assert_eq!(snapshot(&records, &raw).await, before, "no synthetic rows");

    // Afterwards everything writes again.
    assert_eq!(records.synth(20, 3, &quiet).await.expect("synth"), 20);
    raw.close().await;
}
