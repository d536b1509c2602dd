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
//!
//! The sync thread also reads the WAL ahead of the writer ([`Readahead`]). A WAL frame is a
//! 24-byte header and a 4 KB page, so no frame starts on a page boundary and every write
//! covers part of a page; when that page is not in the page cache, the kernel reads it from
//! disk before the write returns, in the writer, while every request of the group and of
//! the queue behind it waits. The WAL starts over every ~2 s at 5,000 requests/s, so the
//! writer keeps coming back to pages written seconds before, and on this machine some of
//! them were no longer cached (why is not known: `/proc/vmstat` counted no reclaim). A
//! 10-s run read 1-6 MB from disk, and `perf` showed the writer's thread blocked in
//! `ext4_block_write_begin` ~40-190 times in 5 s; with the readahead, 0-34 times. The p99
//! gain is smaller than this machine's noise in most single runs: in six pairs of separate
//! runs at 5,000 requests/s the p99 added was 0.66-0.72 ms against 0.65-0.92 ms (5 of 6
//! lower); `loadtest --noop --rate 5000 --compare wal-readahead --rounds 6` (each variant
//! six times, in turn) gave 0.76x the p99 without it, `--rounds 4` 1.03x.

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
    /// `upkeep`: where the checkpoints report the WAL's length, which tells the readahead
    /// where the writer is.
    pub(super) fn start(
        db: PathBuf,
        options: &StoreOptions,
        upkeep: Weak<WalUpkeep>,
    ) -> Option<WalSync> {
        let every = options.wal_sync_every?;
        let idle_priority = options.upkeep_idle_priority;
        // `posix_fadvise` is asked for on Linux only (the libc dependency is Linux's).
        let mut readahead =
            (options.wal_readahead && cfg!(target_os = "linux")).then(|| Readahead {
                restart_frames: options.wal_restart_frames,
                ..Readahead::default()
            });
        let mut wal = db.clone().into_os_string();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
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
                    for (path, is_wal) in [(&wal, true), (&db, false)] {
                        let Ok(file) = std::fs::File::open(path) else {
                            continue;
                        };
                        if let (true, Some(r)) = (is_wal, readahead.as_mut()) {
                            // The WAL's length, read and let go at once: the writer holds the
                            // only strong handle on `upkeep` (see `checkpoint_loop`).
                            if let Some(frames) =
                                upkeep.upgrade().map(|u| u.frames.load(Ordering::Relaxed))
                            {
                                r.ask(&file, frames);
                            }
                        }
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

/// How far ahead of the writer the WAL is read: at 5,000 requests/s (~100-150 MB of WAL a
/// second) 200-300 ms of commits, more than twice the lag of the WAL length it goes by
/// (reported every [`CHECKPOINT_EVERY`]).
const READAHEAD: u64 = 32 << 20;

/// The WAL is asked for in pieces this big, one system call each: the kernel does not
/// preempt kernel code here, and the call's return lets a waiting thread run.
#[cfg(target_os = "linux")]
const READAHEAD_PIECE: u64 = 1 << 20;

/// The WAL file's header, before its first frame.
const WAL_HEADER: u64 = 32;

/// A WAL frame's header, before its page.
const FRAME_HEADER: u64 = 24;

/// Which parts of the WAL the sync thread asks the kernel to read into the page cache before
/// the writer gets there (`posix_fadvise(WILLNEED)`: the reads are started and not waited
/// for; pages already cached cost a lookup). The writer's place is known from the WAL's
/// length at the last checkpoint; the window runs [`READAHEAD`] past it, and once it reaches
/// the length past which the WAL starts over, the WAL's beginning, where the writer goes
/// next, is asked for too.
#[derive(Debug, Default)]
struct Readahead {
    /// [`StoreOptions::wal_restart_frames`].
    restart_frames: u64,
    /// The WAL's length in frames last time (less now: it has started over).
    frames: u64,
    /// Where the last window ended.
    asked_to: u64,
    /// Whether the WAL's beginning has been asked for in this round.
    asked_beginning: bool,
    /// The WAL's page size, once its header has given it (it is the database's, which does
    /// not change under an open store).
    page_size: Option<u64>,
}

impl Readahead {
    /// Asks for the next window of `wal`, `frames` long now, whose page size its header
    /// gives. A WAL with no header yet (or a foreign one) is left alone.
    fn ask(&mut self, wal: &std::fs::File, frames: u64) {
        let Some(page_size) = self.page_size.or_else(|| wal_page_size(wal)) else {
            return;
        };
        self.page_size = Some(page_size);
        for range in self.next(frames, page_size).into_iter().flatten() {
            advise_willneed(wal, range);
        }
    }

    /// The byte ranges to ask for now: ahead of the writer, and the WAL's beginning once the
    /// window reaches the restart.
    fn next(&mut self, frames: u64, page_size: u64) -> [Option<std::ops::Range<u64>>; 2] {
        // Saturating: a bound of u64::MAX frames ("never restart") is a fair setting.
        let offset = |frames: u64| {
            frames
                .saturating_mul(page_size + FRAME_HEADER)
                .saturating_add(WAL_HEADER)
        };
        if frames < self.frames {
            // Started over: the writer is back at the beginning.
            self.asked_to = 0;
            self.asked_beginning = false;
        }
        self.frames = frames;
        let end = offset(frames).saturating_add(READAHEAD);
        let ahead = self.asked_to.max(offset(frames))..end;
        self.asked_to = end;
        let beginning = (end >= offset(self.restart_frames) && !self.asked_beginning).then(|| {
            self.asked_beginning = true;
            0..READAHEAD
        });
        [(!ahead.is_empty()).then_some(ahead), beginning]
    }
}

/// The page size a WAL's header gives (big-endian at byte 8) when the header is a WAL's (its
/// magic number, big-endian at byte 0) and the size one SQLite uses.
#[cfg(unix)]
fn wal_page_size(wal: &std::fs::File) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; 12];
    wal.read_exact_at(&mut header, 0).ok()?;
    let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let size = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    (matches!(magic, 0x377f_0682 | 0x377f_0683)
        && size.is_power_of_two()
        && (512..=65_536).contains(&size))
    .then_some(u64::from(size))
}

#[cfg(not(unix))]
fn wal_page_size(_wal: &std::fs::File) -> Option<u64> {
    None
}

/// Starts the reads of `range` of `file` into the page cache, in [`READAHEAD_PIECE`]s.
fn advise_willneed(file: &std::fs::File, range: std::ops::Range<u64>) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let mut at = range.start;
        while at < range.end {
            let len = READAHEAD_PIECE.min(range.end - at);
            // SAFETY: `file` is an open descriptor for the duration of the call, which only
            // gives the kernel advice about its page cache. Past the file's end it does
            // nothing; an error is advice not taken.
            unsafe {
                libc::posix_fadvise(
                    file.as_raw_fd(),
                    at as libc::off_t,
                    len as libc::off_t,
                    libc::POSIX_FADV_WILLNEED,
                );
            }
            at += len;
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, range);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readahead_runs_ahead_of_the_writer_and_to_the_beginning_before_a_restart() {
        let frame = 4096 + FRAME_HEADER;
        let mut r = Readahead {
            restart_frames: 65_536,
            ..Readahead::default()
        };
        // First: from the writer's place to READAHEAD past it.
        let [ahead, beginning] = r.next(1_000, 4096);
        let at = WAL_HEADER + 1_000 * frame;
        assert_eq!(ahead, Some(at..at + READAHEAD));
        assert_eq!(beginning, None);
        // Then only what the window gained: nothing asked for twice.
        let [ahead, _] = r.next(1_100, 4096);
        assert_eq!(ahead, Some(at + READAHEAD..at + 100 * frame + READAHEAD));
        assert_eq!(r.next(1_100, 4096), [None, None]);
        // Near the bound the beginning is asked for, once.
        let [_, beginning] = r.next(65_000, 4096);
        assert_eq!(beginning, Some(0..READAHEAD));
        assert_eq!(r.next(65_100, 4096)[1], None);
        // After the restart the window starts over from the writer's new place.
        let [ahead, beginning] = r.next(50, 4096);
        let at = WAL_HEADER + 50 * frame;
        assert_eq!(ahead, Some(at..at + READAHEAD));
        assert_eq!(beginning, None);
    }

    #[test]
    fn a_wal_that_never_starts_over_is_read_ahead_without_overflow() {
        let mut r = Readahead {
            restart_frames: u64::MAX,
            ..Readahead::default()
        };
        let [ahead, beginning] = r.next(10, 4096);
        assert!(ahead.is_some());
        assert_eq!(beginning, None);
        let [_, beginning] = r.next(u64::MAX / 2, 65_536);
        assert_eq!(beginning, Some(0..READAHEAD));
    }

    #[test]
    fn the_page_size_is_read_from_the_wal_header_and_a_file_without_one_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db-wal");
        let mut header = vec![0x37, 0x7f, 0x06, 0x82, 0, 0x2d, 0xe2, 0x18];
        header.extend_from_slice(&4096u32.to_be_bytes());
        header.resize(32, 0);
        std::fs::write(&path, &header).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        assert_eq!(wal_page_size(&file), Some(4096));
        std::fs::write(&path, b"").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        assert_eq!(wal_page_size(&file), None);
        std::fs::write(&path, [0u8; 32]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        assert_eq!(wal_page_size(&file), None);
        // A page size where a WAL's magic number is not.
        let mut foreign = vec![0u8; 8];
        foreign.extend_from_slice(&4096u32.to_be_bytes());
        std::fs::write(&path, &foreign).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        assert_eq!(wal_page_size(&file), None);
    }
}
