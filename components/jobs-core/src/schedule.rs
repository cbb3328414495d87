//! `execute_at` validation for `/schedule`: ISO 8601 / RFC 3339 with `Z` or an offset, normalised
//! to UTC, not more than a minute in the past, not beyond the configured horizon.

use chrono::{DateTime, Duration, Utc};

/// A scheduled time this far in the past is still accepted (clock skew, slow clients).
pub const PAST_TOLERANCE: Duration = Duration::minutes(1);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScheduleError {
    #[error("execute_at is required, e.g. execute_at=2024-03-22T15:51:00Z")]
    Missing,
    #[error("execute_at {0:?} is not an ISO 8601 date-time with a time zone (e.g. 2024-03-22T15:51:00Z or 2024-03-23T00:51:00+09:00)")]
    Unparseable(String),
    #[error("execute_at {at} is more than a minute in the past (now {now})")]
    InPast { at: String, now: String },
    #[error("execute_at {at} is beyond the scheduling horizon of {horizon_seconds} s (latest {latest})")]
    BeyondHorizon { at: String, latest: String, horizon_seconds: i64 },
}

pub fn parse_execute_at(
    raw: Option<&str>,
    now: DateTime<Utc>,
    max_horizon: Duration,
) -> Result<DateTime<Utc>, ScheduleError> {
    use crate::job::timestamp;
    let raw = raw.map(str::trim).filter(|s| !s.is_empty()).ok_or(ScheduleError::Missing)?;
    let at = DateTime::parse_from_rfc3339(raw)
        .map_err(|_| ScheduleError::Unparseable(raw.to_owned()))?
        .to_utc();
    if at < now - PAST_TOLERANCE {
        return Err(ScheduleError::InPast { at: timestamp(at), now: timestamp(now) });
    }
    let latest = now + max_horizon;
    if at > latest {
        return Err(ScheduleError::BeyondHorizon {
            at: timestamp(at),
            latest: timestamp(latest),
            horizon_seconds: max_horizon.num_seconds(),
        });
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-03-22T15:00:00Z").unwrap().to_utc()
    }

    #[test]
    fn utc_and_offsets_are_normalised() {
        let h = Duration::days(1);
        let z = parse_execute_at(Some("2024-03-22T15:51:00Z"), now(), h).unwrap();
        let offset = parse_execute_at(Some("2024-03-23T00:51:00+09:00"), now(), h).unwrap();
        assert_eq!(z, offset);
        assert_eq!(crate::job::timestamp(z), "2024-03-22T15:51:00Z");
    }

    #[test]
    fn bad_times_are_rejected_with_reasons() {
        let h = Duration::days(1);
        assert_eq!(parse_execute_at(None, now(), h), Err(ScheduleError::Missing));
        for bad in ["tomorrow", "2024-03-22 15:51", "2024-03-22T15:51:00", "2024-13-40T00:00:00Z"] {
            assert!(matches!(parse_execute_at(Some(bad), now(), h), Err(ScheduleError::Unparseable(_))), "{bad}");
        }
        assert!(parse_execute_at(Some("2024-03-22T14:59:30Z"), now(), h).is_ok(), "30 s late is tolerated");
        assert!(matches!(parse_execute_at(Some("2024-03-22T14:58:00Z"), now(), h), Err(ScheduleError::InPast { .. })));
        assert!(matches!(parse_execute_at(Some("2024-03-24T15:00:00Z"), now(), h), Err(ScheduleError::BeyondHorizon { .. })));
    }
}
