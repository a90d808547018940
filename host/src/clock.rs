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

/// RFC 3339 to the second, as Litestream's JSON prints times.
pub fn rfc3339_seconds(ms: i64) -> String {
    rfc3339(ms.div_euclid(1000) * 1000)
}

/// Parse RFC 3339 into milliseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let dt = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some((dt.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Time since boot, counting suspend (`CLOCK_BOOTTIME`): the lease's
/// clock. A holder must not believe its lease still valid after the
/// machine slept through its expiry, which `Instant` (`CLOCK_MONOTONIC`,
/// stopped while suspended) would let it.
pub fn boottime() -> std::time::Duration {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const CLOCK: libc::clockid_t = libc::CLOCK_BOOTTIME;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC;
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given.
    if unsafe { libc::clock_gettime(CLOCK, &mut ts) } != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}
