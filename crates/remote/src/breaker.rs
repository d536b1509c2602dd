//! A circuit breaker per backend.
//!
//! Why: when a provider is down, every triage request would otherwise spend its whole retry
//! budget (seconds) before failing. After `failures` consecutive failed calls the breaker opens
//! and calls fail at once, without touching the network, so the workflow can fall back (another
//! tier, human review) immediately. After `cooldown` one trial call goes through (half-open): its
//! success closes the breaker, its failure opens it for another cooldown.
//!
//! A "call" is one logical request after its retries, not one HTTP attempt.

use serde::Serialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What callers see of the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail fast until the cooldown ends.
    Open,
    /// The cooldown is over: the next call is a trial (others fail fast while it runs).
    HalfOpen,
}

#[derive(Debug)]
enum Inner {
    Closed { consecutive: u32 },
    Open { until: Instant },
    HalfOpen { trial_running: bool },
}

/// The permission to make one call; report its outcome with [`Breaker::record`].
#[derive(Debug, Clone, Copy)]
pub struct Permit {
    trial: bool,
}

/// What a finished call says about the backend's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered (2xx, or a 4xx that is the request's fault).
    Healthy,
    /// Transient failures ran out of retries, or the server sent something unreadable.
    Failed,
    /// Tells nothing either way (the caller's deadline ran out before any answer or failure).
    Unknown,
}

#[derive(Debug)]
pub struct Breaker {
    failures: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(failures: u32, cooldown: Duration) -> Self {
        Breaker {
            failures: failures.max(1),
            cooldown,
            inner: Mutex::new(Inner::Closed { consecutive: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves valid state (each update is one assignment).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// A permit to call, or how long until the breaker lets a trial through.
    pub fn acquire(&self) -> Result<Permit, Duration> {
        let mut g = self.lock();
        let now = Instant::now();
        match *g {
            Inner::Closed { .. } => Ok(Permit { trial: false }),
            Inner::Open { until } if now < until => Err(until - now),
            Inner::Open { .. }
            | Inner::HalfOpen {
                trial_running: false,
            } => {
                *g = Inner::HalfOpen {
                    trial_running: true,
                };
                Ok(Permit { trial: true })
            }
            // One trial at a time: a struggling server gets one request, not a stampede.
            Inner::HalfOpen {
                trial_running: true,
            } => Err(Duration::ZERO),
        }
    }

    pub fn record(&self, permit: Permit, outcome: Outcome) {
        let mut g = self.lock();
        match outcome {
            Outcome::Healthy => *g = Inner::Closed { consecutive: 0 },
            Outcome::Failed => {
                let consecutive = match *g {
                    Inner::Closed { consecutive } => consecutive + 1,
                    _ => self.failures,
                };
                *g = if permit.trial || consecutive >= self.failures {
                    tracing::warn!(
                        consecutive,
                        cooldown_ms = self.cooldown.as_millis() as u64,
                        "circuit breaker open"
                    );
                    Inner::Open {
                        until: Instant::now() + self.cooldown,
                    }
                } else {
                    Inner::Closed { consecutive }
                };
            }
            Outcome::Unknown => {
                if permit.trial {
                    *g = Inner::HalfOpen {
                        trial_running: false,
                    };
                }
            }
        }
    }

    /// Consecutive failed calls that open the breaker.
    pub fn threshold(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_n_failures_half_opens_and_closes() {
        let b = Breaker::new(2, Duration::from_millis(30));
        let p = b.acquire().unwrap();
        b.record(p, Outcome::Failed);
        assert_eq!(b.state(), BreakerState::Closed);
        let p = b.acquire().unwrap();
        b.record(p, Outcome::Failed);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.acquire().is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let trial = b.acquire().unwrap();
        assert!(b.acquire().is_err(), "only one trial at a time");
        b.record(trial, Outcome::Failed);
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(40));
        let trial = b.acquire().unwrap();
        b.record(trial, Outcome::Healthy);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breaker::new(2, Duration::from_secs(10));
        let p = b.acquire().unwrap();
        b.record(p, Outcome::Failed);
        let p = b.acquire().unwrap();
        b.record(p, Outcome::Healthy);
        let p = b.acquire().unwrap();
        b.record(p, Outcome::Failed);
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
