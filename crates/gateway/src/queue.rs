//! The bounded queue in front of the engine: an actor (one tokio task) that owns the
//! receiving end of a bounded channel and starts at most `workers` tasks at once; handlers
//! hold a [`QueueHandle`].
//!
//! - [`QueueHandle::reserve`] fails fast: with `workers` running and `depth` waiting, the
//!   next request is [`GatewayError::Overloaded`] with a Retry-After estimated from recent
//!   service times; a closed queue is `ShuttingDown`. A reservation is a slot taken before
//!   the request is stored as accepted, so an accepted request always fits.
//! - Shutdown has two stages: [`QueueHandle::close`] refuses new work while queued and
//!   running work goes on; [`QueueHandle::abort`] (at the end of the grace period) fires every
//!   task's [`Ctx::cancel`] — running ones stop, queued ones are started already cancelled —
//!   so each task stores its own ending (`error: shutdown`) instead of vanishing.

use crate::metrics::Metrics;
use crate::GatewayError;
use futures_util::future::BoxFuture;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// What a task is told when it starts.
#[derive(Clone)]
pub struct Ctx {
    /// The request's deadline (it includes the time spent queued).
    pub deadline: Instant,
    /// Fired when the server gives up on unfinished work (end of the shutdown grace).
    pub cancel: CancellationToken,
}

/// A unit of engine work. It owns its reply channel and its persistence: the queue only
/// decides when it runs.
pub type Task = Box<dyn FnOnce(Ctx) -> BoxFuture<'static, ()> + Send>;

struct Item {
    task: Task,
    deadline: Instant,
}

struct Shared {
    closed: AtomicBool,
    abort: CancellationToken,
    /// Reserved, queued or running tasks (at most `capacity`).
    active: AtomicUsize,
    running: AtomicUsize,
    capacity: usize,
    idle: Notify,
    /// Exponentially weighted service time, in microseconds (for Retry-After).
    ewma_micros: AtomicU64,
    workers: usize,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn done_one(&self) {
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

#[derive(Clone)]
pub struct QueueHandle {
    tx: mpsc::Sender<Item>,
    shared: Arc<Shared>,
}

/// A place in the queue, held between the request being stored and it being queued.
pub struct Slot {
    permit: Option<mpsc::OwnedPermit<Item>>,
    shared: Arc<Shared>,
}

impl Slot {
    pub fn send(mut self, task: Task, deadline: Instant) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let shared = self.shared.clone();
        // Exactly one `done_one` per slot: by the finished task, or by `Drop` if never sent.
        let wrapped: Task = Box::new(move |ctx| {
            Box::pin(async move {
                let started = Instant::now();
                shared.metrics.in_flight.inc();
                shared.running.fetch_add(1, Ordering::AcqRel);
                task(ctx).await;
                shared.running.fetch_sub(1, Ordering::AcqRel);
                shared.metrics.in_flight.dec();
                let took = started.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
                let old = shared.ewma_micros.load(Ordering::Relaxed);
                let new = if old == 0 { took } else { (old * 7 + took) / 8 };
                shared.ewma_micros.store(new, Ordering::Relaxed);
                shared.done_one();
            })
        });
        permit.send(Item {
            task: wrapped,
            deadline,
        });
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.permit.is_some() {
            self.shared.done_one();
        }
    }
}

impl QueueHandle {
    /// Starts the actor: `depth` requests may wait, `workers` run at once.
    pub fn start(depth: usize, workers: usize, metrics: Arc<Metrics>) -> QueueHandle {
        let capacity = depth + workers;
        let (tx, rx) = mpsc::channel(capacity);
        let shared = Arc::new(Shared {
            closed: AtomicBool::new(false),
            abort: CancellationToken::new(),
            active: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            capacity,
            idle: Notify::new(),
            ewma_micros: AtomicU64::new(0),
            workers,
            metrics,
        });
        tokio::spawn(actor(rx, shared.clone()));
        QueueHandle { tx, shared }
    }

    /// Takes a place in the queue, or says why not at once. Admission counts every request
    /// reserved, queued or running against `workers + depth`, so the capacity does not
    /// depend on how fast the actor drains the channel.
    pub fn reserve(&self) -> Result<Slot, GatewayError> {
        let sh = &self.shared;
        if sh.closed.load(Ordering::Acquire) {
            return Err(GatewayError::ShuttingDown);
        }
        let admitted = sh
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < sh.capacity).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            return Err(GatewayError::Overloaded {
                retry_after: self.retry_after(),
            });
        }
        match self.tx.clone().try_reserve_owned() {
            Ok(permit) => Ok(Slot {
                permit: Some(permit),
                shared: sh.clone(),
            }),
            // The channel holds `capacity` items, so it is never full here; closed means
            // the actor is gone.
            Err(_) => {
                sh.done_one();
                Err(GatewayError::ShuttingDown)
            }
        }
    }

    /// A guess at when a place will be free: the requests waiting times the recent service
    /// time, over the workers; between 1 and 60 seconds.
    pub fn retry_after(&self) -> Duration {
        let per = self.shared.ewma_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let waiting = self.depth() as f64 + 1.0;
        let secs = (per * waiting / self.shared.workers as f64).ceil();
        Duration::from_secs_f64(secs.clamp(1.0, 60.0))
    }

    /// Requests accepted and not yet running.
    pub fn depth(&self) -> usize {
        let active = self.shared.active.load(Ordering::Acquire);
        active.saturating_sub(self.shared.running.load(Ordering::Acquire))
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Stage 1 of shutdown: refuse new work; queued and running work goes on.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }

    /// Stage 2: cancel what is left (each task stores its own ending).
    pub fn abort(&self) {
        self.close();
        self.shared.abort.cancel();
    }

    /// Waits until nothing is reserved, queued or running.
    pub async fn idle(&self) {
        loop {
            let notified = self.shared.idle.notified();
            if self.shared.active.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

async fn actor(mut rx: mpsc::Receiver<Item>, shared: Arc<Shared>) {
    let workers = Arc::new(Semaphore::new(shared.workers));
    loop {
        // Wait for a free worker first, so requests wait in the bounded channel (where the
        // handle sees them as queue depth), not in this task.
        let permit = tokio::select! {
            p = workers.clone().acquire_owned() => match p {
                Ok(p) => Some(p),
                Err(_) => return,
            },
            _ = shared.abort.cancelled() => None,
        };
        let Some(item) = rx.recv().await else {
            return; // every handle is gone: the server has ended
        };
        shared.metrics.queue_depth.set(rx.len() as i64);
        let ctx = Ctx {
            deadline: item.deadline,
            cancel: shared.abort.clone(),
        };
        // After abort, tasks start without a worker: they only store their ending.
        tokio::spawn(async move {
            let _permit = permit;
            (item.task)(ctx).await;
        });
    }
}
