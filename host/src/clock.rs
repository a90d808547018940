//! Wall-clock time as sluice records it: milliseconds since the epoch
//! (segment headers, the replica listing, `-timestamp`), and RFC 3339 for
//! people.

/// Wall-clock milliseconds since the epoch: the unit of every timestamp a
/// segment carries (0 if the clock is before the epoch).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Format milliseconds since the epoch as RFC 3339 (UTC).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let dt = time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let dt = dt + time::Duration::milliseconds(ms.rem_euclid(1000));
    dt.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Parse RFC 3339 into milliseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let dt = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some((dt.unix_timestamp_nanos() / 1_000_000) as i64)
}
