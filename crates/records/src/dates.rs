//! Date parsing and the few calendar computations the facts need.

use chrono::{Datelike, Months, NaiveDate};

use crate::error::RecordsError;

/// `YYYY-MM-DD`, also accepting a datetime whose first ten characters are the date
/// (`2020-01-31 00:00:00`, `2020-01-31T…`) and the compact `YYYYMMDD`.
pub(crate) fn parse_date(s: &str) -> Option<NaiveDate> {
    let s = s.trim();
    let date_part = match s.as_bytes().get(10) {
        Some(b' ') | Some(b'T') => &s[..10],
        _ => s,
    };
    NaiveDate::parse_from_str(date_part, "%Y-%m-%d")
        .ok()
        .or_else(|| {
            (date_part.len() == 8)
                .then(|| NaiveDate::parse_from_str(date_part, "%Y%m%d").ok())
                .flatten()
        })
}

/// A caller's `today` argument.
pub(crate) fn parse_today(s: &str) -> Result<NaiveDate, RecordsError> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| RecordsError::BadDate(s.to_string()))
}

pub(crate) fn months_before(d: NaiveDate, months: u32) -> NaiveDate {
    d.checked_sub_months(Months::new(months))
        .unwrap_or(NaiveDate::MIN)
}

pub(crate) fn days_before(d: NaiveDate, days: i64) -> NaiveDate {
    d.checked_sub_signed(chrono::Duration::days(days))
        .unwrap_or(NaiveDate::MIN)
}

/// Whole months from `birth` to `today`; `None` when born after `today`.
pub(crate) fn age_in_months(birth: NaiveDate, today: NaiveDate) -> Option<u32> {
    if birth > today {
        return None;
    }
    let mut months =
        (today.year() - birth.year()) * 12 + today.month() as i32 - birth.month() as i32;
    if today.day() < birth.day() {
        months -= 1;
    }
    u32::try_from(months.max(0)).ok()
}

/// A birth date from OMOP's year / month / day columns; a missing or invalid month or
/// day becomes the 1st (the age is then at most one year or month too high).
pub(crate) fn birth_date(year: i64, month: Option<i64>, day: Option<i64>) -> Option<NaiveDate> {
    let year = i32::try_from(year).ok()?;
    let month = month
        .and_then(|m| u32::try_from(m).ok())
        .filter(|m| (1..=12).contains(m))
        .unwrap_or(1);
    let day = day.and_then(|d| u32::try_from(d).ok()).unwrap_or(1);
    NaiveDate::from_ymd_opt(year, month, day).or_else(|| NaiveDate::from_ymd_opt(year, month, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        parse_date(s).expect("date")
    }

    #[test]
    fn parses_the_forms_omop_exports_use() {
        assert_eq!(
            d("2020-01-31"),
            NaiveDate::from_ymd_opt(2020, 1, 31).expect("valid")
        );
        assert_eq!(d("2020-01-31 00:00:00"), d("2020-01-31"));
        assert_eq!(d("20200131"), d("2020-01-31"));
        assert_eq!(parse_date("2020-02-30"), None);
        assert_eq!(parse_date("31/01/2020"), None);
        assert_eq!(parse_date(""), None);
    }

    #[test]
    fn ages_count_whole_months() {
        let birth = d("2024-01-15");
        assert_eq!(age_in_months(birth, d("2024-04-14")), Some(2));
        assert_eq!(age_in_months(birth, d("2024-04-15")), Some(3));
        assert_eq!(age_in_months(birth, d("2026-01-15")), Some(24));
        assert_eq!(age_in_months(birth, d("2023-12-31")), None);
        assert_eq!(birth_date(2000, Some(2), Some(30)), Some(d("2000-02-01")));
        assert_eq!(birth_date(2000, None, None), Some(d("2000-01-01")));
        assert_eq!(months_before(d("2024-12-31"), 10), d("2024-02-29"));
    }
}
