//! The two timestamp formats S3 uses, turned into Unix milliseconds:
//! ISO 8601 in listings, RFC 7231 (IMF-fixdate) in `Last-Modified`.

/// `2026-11-25T17:45:29.123Z` → ms since the epoch.
pub fn iso8601_ms(s: &str) -> Option<u64> {
    let s = s.trim().strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, sec) = (t.next()??, t.next()??, t.next()??);
    // Milliseconds from the first three fractional digits, whatever the precision.
    let ms = format!("{frac:0<3}").get(..3)?.parse::<i64>().ok()?;
    to_ms(year, month, day, h, m, sec, ms)
}

/// `Wed, 25 Nov 2026 17:45:29 GMT` → ms since the epoch.
pub fn http_date_ms(s: &str) -> Option<u64> {
    let mut parts = s.split_whitespace().skip(1);
    let day = parts.next()?.parse().ok()?;
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? as i64 + 1;
    let year = parts.next()?.parse().ok()?;
    let mut t = parts.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, sec) = (t.next()??, t.next()??, t.next()??);
    to_ms(year, month, day, h, m, sec, 0)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn to_ms(year: i64, month: i64, day: i64, h: i64, m: i64, s: i64, ms: i64) -> Option<u64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s;
    u64::try_from(secs * 1000 + ms).ok()
}

/// Days since 1970-01-01 in the proleptic Gregorian calendar (Howard
/// Hinnant's algorithm), to avoid a date crate for two formats.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_formats() {
        assert_eq!(iso8601_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(iso8601_ms("2026-11-25T17:45:29.123Z"), Some(1_795_628_729_123));
        assert_eq!(iso8601_ms("2026-11-25T17:45:29Z"), Some(1_795_628_729_000));
        assert_eq!(iso8601_ms("2026-11-25T17:45:29.5Z"), Some(1_795_628_729_500));
        assert_eq!(http_date_ms("Wed, 25 Nov 2026 17:45:29 GMT"), Some(1_795_628_729_000));
        assert_eq!(http_date_ms("Thu, 29 Feb 2024 00:00:00 GMT"), Some(1_709_164_800_000));
        assert_eq!(iso8601_ms("yesterday"), None);
        assert_eq!(http_date_ms("Wed, 25 Foo 2026 17:45:29 GMT"), None);
    }
}
