//! Upkeep of a SQLite file's write-ahead log, off the request path: background checkpoints
//! (the WAL's pages copied into the database file), the writer's own checkpoint when the WAL
//! has grown past its bound, and a thread that writes the WAL's and the database file's new
//! pages to disk every 20 ms between two checkpoints. The checkpoint and sync threads run
//! at idle priority: they give way to the request path's threads.
//!
//! Why the sync thread: with `synchronous = NORMAL` a commit only writes the WAL into the
//! page cache. A background (PASSIVE) checkpoint starts with an `fsync` of the WAL, which
//! then wrote out everything committed since the one before (~13 MB per 100 ms at 5,000
//! requests/s); on a kernel that does not preempt kernel code (this machine's is
//! `PREEMPT_NONE`) that held a CPU for ~1.5–2 ms while the threads queued there — the
//! writer, the HTTP workers — waited: ~5% of requests over 1 ms, in clusters 100 ms apart.
//! And a PASSIVE checkpoint under steady writes never copies the whole WAL, so it skips its
//! `fsync` of the database file: the writer's own checkpoint (below) then wrote seconds of
//! copied pages out at once, ~10 ms with the writer stopped. Written out every 20 ms, each
//! piece is small and the checkpoints' `fsync`s find little left: at 5,000 requests/s the
//! writer's checkpoint ~10 → ~2 ms, and the p99 added by the gateway ~2.1 → ~1.5 ms
//! (`loadtest --noop --rate 5000 --compare wal-sync` measures both in one run). Commits also
//! reach the disk within ~20 ms instead of at the next checkpoint.

use super::StoreOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection, SqlitePool};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
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
/// default that stops the writer for ~2 ms (what came since the last background checkpoint,
/// and two `fsync`s), once per 256 MB of WAL, about every 2 s at 5,000 requests/s. Its cost
/// grows with the bound (~30 ms at 1 GB), so a bigger one is not cheaper per request.
#[derive(Debug, Default)]
pub(super) struct WalUpkeep {
    /// The WAL's length in frames at the last background checkpoint.
    pub(super) frames: AtomicU64,
}

/// How often the background checkpoint runs. Each copies what came since the one before,
/// and its cost grows with that (at 5,000 requests/s: ~30 ms of copying and two `fsync`s
/// every 500 ms, the gateway's p99 up from ~1.5 ms to ~5 ms; every 100 ms, ~2 ms).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Numbers the checkpoint connections' threads, so each store's can be found by its name
/// (and only its own given idle priority). Linux keeps 15 bytes of a name: `cf-ckpt-` and
/// up to 7 digits.
static CHECKPOINT_THREADS: AtomicU64 = AtomicU64::new(0);

/// Moves the WAL's pages into the database file (PASSIVE: without blocking the writer) and
/// reports the WAL's length to the writer, until `pool` is closed or the writer has ended
/// (the store dropped: it holds the only strong handle on `upkeep`; before, the loop kept
/// the pool and its connections open for good). It runs on a connection of its own whose
/// thread is given idle priority unless `idle_priority` is off (see [`to_idle_priority`]):
/// the copy takes ~1–2 ms of CPU every 100 ms at 5,000 requests/s, and `perf sched
/// timehist` showed it finishing its slice at normal priority while the writer and the HTTP
/// workers waited (`loadtest --noop --rate 5000 --compare upkeep-priority` measures both in
/// one run).
pub(super) async fn checkpoint_loop(
    pool: SqlitePool,
    options: SqliteConnectOptions,
    upkeep: Weak<WalUpkeep>,
    idle_priority: bool,
) {
    let name = format!(
        "cf-ckpt-{}",
        CHECKPOINT_THREADS.fetch_add(1, Ordering::Relaxed) % 10_000_000
    );
    let options = options.thread_name({
        let name = name.clone();
        move |_| name.clone()
    });
    let mut conn: Option<SqliteConnection> = None;
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(upkeep) = upkeep.upgrade().filter(|_| !pool.is_closed()) else {
            if let Some(c) = conn.take() {
                let _ = c.close().await;
            }
            return;
        };
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match SqliteConnection::connect_with(&options).await {
                Ok(c) => {
                    if idle_priority {
                        to_idle_priority(&name);
                    }
                    conn.insert(c)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not connect for WAL checkpoints");
                    continue;
                }
            },
        };
        // (busy, frames in the WAL, frames copied)
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut *c)
            .await
        {
            Ok((_, frames, _)) => upkeep.frames.store(frames.max(0) as u64, Ordering::Relaxed),
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed");
                // A new connection next time.
                conn = None;
            }
        }
    }
}

/// Puts this process's threads named `name` in the idle scheduling class (Linux): they run
/// when a CPU has nothing else to do and give way at once to any other thread that wakes.
/// Any thread may lower its own process's priority, so this needs no privilege; where it
/// fails, the threads keep normal priority (logged at debug).
fn to_idle_priority(name: &str) {
    #[cfg(target_os = "linux")]
    {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        for task in tasks.flatten() {
            let named = std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim_end() == name);
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            if named {
                set_idle(tid);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}

/// Thread `tid` (0: the calling one) to `SCHED_IDLE`.
#[cfg(target_os = "linux")]
fn set_idle(tid: libc::pid_t) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the duration of the call; the call only
    // changes the scheduling policy of a thread of this process.
    let r = unsafe { libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) };
    if r != 0 {
        tracing::debug!(tid, error = %std::io::Error::last_os_error(), "SCHED_IDLE refused");
    }
}

/// The thread that writes the WAL and the database file out between checkpoints (see the
/// module's docs). It stops when this handle is dropped (the writer task holds it, until
/// the pool closes).
#[derive(Debug)]
pub(super) struct WalSync {
    _stop: mpsc::Sender<()>,
    /// Completed syncs, for [`crate::Store::wal_syncs`].
    pub(super) syncs: Arc<AtomicU64>,
}

impl WalSync {
    /// Starts the thread for the database file `db` (its WAL is `db` + `-wal`); `None` when
    /// the options turn it off or the thread cannot be started (logged: the checkpoints
    /// still write the files out, in bigger pieces).
    pub(super) fn start(db: PathBuf, options: &StoreOptions) -> Option<WalSync> {
        let every = options.wal_sync_every?;
        let idle_priority = options.upkeep_idle_priority;
        let mut wal = db.clone().into_os_string();
        wal.push("-wal");
        let files = [PathBuf::from(wal), db];
        let (stop, stopped) = mpsc::channel::<()>();
        let syncs = Arc::new(AtomicU64::new(0));
        let counted = syncs.clone();
        let spawned = std::thread::Builder::new()
            .name("careflow-wal-sync".into())
            .spawn(move || {
                // Writing out can wait for any thread of the request path.
                #[cfg(target_os = "linux")]
                if idle_priority {
                    set_idle(0);
                }
                loop {
                    match stopped.recv_timeout(every) {
                        Err(RecvTimeoutError::Timeout) => {}
                        // Dropped (the writer ended) or, never, a message: stop.
                        _ => return,
                    }
                    // Opened each time: SQLite deletes the WAL when its last connection
                    // closes and makes a new one later, which a kept descriptor would not
                    // follow. `fdatasync` through any descriptor writes out the file's pages.
                    let mut synced = false;
                    for path in &files {
                        let Ok(file) = std::fs::File::open(path) else {
                            continue;
                        };
                        match file.sync_data() {
                            Ok(()) => synced = true,
                            Err(e) => {
                                tracing::warn!(error = %e, file = %path.display(), "writing out failed")
                            }
                        }
                    }
                    if synced {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
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
