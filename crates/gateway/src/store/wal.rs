//! Upkeep of a SQLite file's write-ahead log, off the request path: background checkpoints
//! (the WAL's pages copied into the database file), the writer's own checkpoint when the WAL
//! has grown past its bound, and a thread that writes the WAL's new pages to disk every few
//! milliseconds between two checkpoints.
//!
//! Why the last: with `synchronous = NORMAL` a commit only writes the WAL into the page
//! cache, and the checkpoint's first step is an `fsync` of the WAL, which then had to write
//! out everything committed since the one before (~13 MB per 100 ms at 5,000 requests/s).
//! On a kernel that does not preempt kernel code (this machine's is `PREEMPT_NONE`) that
//! writeback held its CPU for ~1.5–2 ms while the threads queued there — the writer, the
//! HTTP workers — waited: ~5% of requests over 1 ms, in clusters 100 ms apart. Written out
//! every 20 ms, each piece is a fifth of that and the checkpoint's own `fsync` finds little
//! left (at 5,000 requests/s: p99 added by the gateway ~2.5 → ~1.5 ms; `loadtest --noop
//! --compare wal-sync` measures both in one run). Commits also reach the disk within ~20 ms
//! instead of at the next checkpoint.

use super::StoreOptions;
use sqlx::SqlitePool;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

/// How the background checkpoints and the writer share the WAL's upkeep.
///
/// A PASSIVE checkpoint copies the WAL's pages into the database file without blocking the
/// writer, but it never lets the WAL start over while writes go on (a restart needs every
/// frame copied, and frames keep coming): under steady load the WAL grew ~80 MB/s at 5,000
/// requests/s, without end. So the background loop reports the WAL's length, and past
/// [`StoreOptions::wal_restart_frames`] the writer checkpoints itself between two groups —
/// nothing is written meanwhile, so that checkpoint can finish the WAL and the next commit
/// start it again from its beginning (see `SqliteWriter::upkeep` for when it cannot). By
/// default that stops the writer for up to ~25 ms (the copy and two `fsync`s; the load
/// test's max latency at 5,000 requests/s), once per 256 MB of WAL, about every 2–4 s at
/// that rate.
#[derive(Debug, Default)]
pub(super) struct WalUpkeep {
    /// The WAL's length in frames at the last background checkpoint.
    pub(super) frames: AtomicU64,
}

/// How often the background checkpoint runs. Each copies what came since the one before,
/// and its cost grows with that (at 5,000 requests/s: ~30 ms of copying and two `fsync`s
/// every 500 ms, the gateway's p99 up from ~1.5 ms to ~5 ms; every 100 ms, ~2 ms).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Moves the WAL's pages into the database file (PASSIVE: without blocking the writer) and
/// reports the WAL's length to the writer, until the pool is closed.
pub(super) async fn checkpoint_loop(pool: SqlitePool, upkeep: Arc<WalUpkeep>) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        // (busy, frames in the WAL, frames copied)
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&pool)
            .await
        {
            Ok((_, frames, _)) => upkeep.frames.store(frames.max(0) as u64, Ordering::Relaxed),
            Err(e) => {
                if pool.is_closed() {
                    return;
                }
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
        }
    }
}

/// The thread that writes the WAL out between checkpoints (see the module's docs). It
/// stops when this handle is dropped (the writer task holds it).
#[derive(Debug)]
pub(super) struct WalSync {
    _stop: mpsc::Sender<()>,
    /// Completed syncs, for [`crate::Store::wal_syncs`].
    pub(super) syncs: Arc<AtomicU64>,
}

impl WalSync {
    /// Starts the thread for the database file `db` (its WAL is `db` + `-wal`); `None` when
    /// the options turn it off or the thread cannot be started (logged: the checkpoints
    /// still write the WAL out, in bigger pieces).
    pub(super) fn start(db: PathBuf, options: &StoreOptions) -> Option<WalSync> {
        let every = options.wal_sync_every?;
        let mut wal = db.into_os_string();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let (stop, stopped) = mpsc::channel::<()>();
        let syncs = Arc::new(AtomicU64::new(0));
        let counted = syncs.clone();
        let spawned = std::thread::Builder::new()
            .name("careflow-wal-sync".into())
            .spawn(move || loop {
                match stopped.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {}
                    // Dropped (the writer ended) or, never, a message: stop.
                    _ => return,
                }
                // Opened each time: SQLite deletes the WAL when its last connection closes
                // and makes a new one later, which a kept descriptor would not follow.
                // `fdatasync` through any descriptor writes out the file's pages.
                let Ok(file) = std::fs::File::open(&wal) else {
                    continue;
                };
                match file.sync_data() {
                    Ok(()) => {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(error = %e, "writing the WAL out failed"),
                }
            });
        match spawned {
            Ok(_) => Some(WalSync { _stop: stop, syncs }),
            Err(e) => {
                tracing::warn!(error = %e, "could not start the WAL sync thread");
                None
            }
        }
    }
}
