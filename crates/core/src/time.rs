//! UTC calendar dates without a time-zone library: days since 1970-01-01 to the civil date
//! (Howard Hinnant's `civil_from_days`), for reports, keys, the dashboard and prompts.

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// `(year, month, day)` of the day `days` after 1970-01-01 (negative: before it).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DD` of the day `days` after 1970-01-01.
pub fn utc_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD HH:MM` (UTC) of `ms` milliseconds since the epoch.
pub fn utc_minute(ms: i64) -> String {
    let minutes = ms.rem_euclid(DAY_MS) / 60_000;
    format!(
        "{} {:02}:{:02}",
        utc_date(ms.div_euclid(DAY_MS)),
        minutes / 60,
        minutes % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_days() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(-1), "1969-12-31");
        assert_eq!(utc_date(11_016), "2000-02-29");
        assert_eq!(utc_date(20_454), "2026-01-01");
        assert_eq!(utc_date(20_789), "2026-12-02");
        assert_eq!(
            utc_minute(20_789 * DAY_MS + 13 * 3_600_000 + 7 * 60_000 + 59_999),
            "2026-12-02 13:07"
        );
    }
}
