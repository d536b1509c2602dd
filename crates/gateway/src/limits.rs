//! Per-key rate limits: a token bucket per API key (refilled continuously, `burst` deep).
//! The queue bounds the engine's work; this bounds what one caller may take of it.

use crate::config::RateLimitConfig;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(c: &RateLimitConfig) -> Self {
        RateLimiter {
            rate: c.per_key_per_second,
            burst: f64::from(c.burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `key`'s bucket; when it is empty, how long until one is back.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        // A poisoned lock only means another request panicked mid-update: the map is
        // still usable, and refusing every request because of it would be worse.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, at) = buckets.entry(key.to_string()).or_insert((self.burst, now));
        let refilled =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Ok(())
        } else {
            *tokens = refilled;
            Err(Duration::from_secs_f64((1.0 - refilled) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_then_says_when_to_come_back() {
        let l = RateLimiter::new(&RateLimitConfig {
            per_key_per_second: 2.0,
            burst: 3,
        });
        for _ in 0..3 {
            assert!(l.check("a").is_ok());
        }
        let wait = l.check("a").unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(l.check("b").is_ok(), "buckets are per key");
        let off = RateLimiter::new(&RateLimitConfig {
            per_key_per_second: 0.0,
            burst: 0,
        });
        assert!((0..1000).all(|_| off.check("a").is_ok()));
    }
}
