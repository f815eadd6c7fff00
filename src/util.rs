//! Small helpers with no better home.

use std::time::{SystemTime, UNIX_EPOCH};

/// The current time as an XEP-0082 / RFC 3339 UTC timestamp with
/// millisecond precision, e.g. `2026-11-24T13:10:52.123Z`.
pub fn utc_timestamp() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_timestamp(d.as_secs() as i64, d.subsec_millis())
}

/// Formats seconds since the Unix epoch (days-from-civil inverse, H. Hinnant).
pub fn format_timestamp(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Raises this process's open-file limit to its hard limit: every socket
/// is a descriptor, and the usual soft limit (1024) is far below what a
/// federation edge or a load generator holds. Returns the new limit.
pub fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            crate::events::daemon::FdLimitNotRaised { error: &e }.emit();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_match_known_dates() {
        assert_eq!(super::format_timestamp(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::format_timestamp(951_782_400, 5),
            "2000-02-29T00:00:00.005Z"
        );
        assert_eq!(
            super::format_timestamp(1_795_525_852, 123),
            "2026-11-24T13:10:52.123Z"
        );
    }
}
