//! When to try a request again, and how long to wait first.
//!
//! Exponential backoff with full jitter (a uniformly random wait in `[0, min(max, base * 2^n)]`):
//! many clients failing at once spread their retries instead of returning together. A server's
//! `Retry-After` (seconds or an HTTP-date) takes precedence, since the server knows when it will
//! have room, but is capped by the configured maximum so one header cannot park a request for
//! minutes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The retry schedule of one backend.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 = the wait after the first failed attempt).
    pub fn backoff(&self, retry: u32) -> Duration {
        let cap = self
            .base
            .checked_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max);
        let cap_us = cap.as_micros().min(u64::MAX as u128) as u64;
        Duration::from_micros(fastrand::u64(0..=cap_us))
    }

    /// The wait before the next attempt: the server's `Retry-After` when it sent one (capped),
    /// jittered backoff otherwise.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(ra) => ra.min(self.max),
            None => self.backoff(retry),
        }
    }
}

/// Statuses worth another attempt: rate limited (429), server errors that usually pass (500,
/// 502, 503, 504), and Anthropic's "overloaded" (529). Other 4xx mean the request itself is
/// wrong and will fail the same way again.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504 | 529)
}

/// Parses a `Retry-After` value: delay-seconds (`"2"`, fractional accepted) or an IMF-fixdate
/// HTTP-date (`"Sun, 06 Nov 1994 08:49:37 GMT"`), relative to `now`. A date in the past is a
/// zero wait. `None` for anything else.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)));
    }
    let at = parse_http_date(v)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// OpenAI also sends `retry-after-ms`; milliseconds, fractional accepted.
pub fn parse_retry_after_ms(value: &str) -> Option<Duration> {
    let ms = value.trim().parse::<f64>().ok()?;
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms.min(1e12) / 1000.0))
}

/// IMF-fixdate only (RFC 9110 §5.6.7): the format every current server sends.
fn parse_http_date(v: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_weekday, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: u32 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as u32
        + 1;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<u64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || *h > 23 || *m > 59 || *s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days.checked_mul(86_400)? + (*h * 3600 + *m * 60 + *s) as i64;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 0.5 ", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:40 GMT", now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(
            parse_retry_after_ms("250"),
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn backoff_is_jittered_within_the_exponential_cap() {
        let p = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        for retry in 0..40 {
            let cap = Duration::from_millis((100u64 << retry.min(20)).min(1000));
            for _ in 0..50 {
                assert!(p.backoff(retry) <= cap);
            }
        }
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(60))),
            Duration::from_millis(1000)
        );
        assert!(is_retryable_status(529) && !is_retryable_status(400));
    }
}
