//! The clock the identity layer reads "now" from, both when it issues an expiry (sessions,
//! invitations, API keys' `expires_at`, tenant tokens' `iat`/`exp`) and when it checks one. It is
//! the system clock; tests move it forward with [`Clock::advance`] instead of sleeping until a
//! credential expires. Nothing in the server advances it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use chrono::{DateTime, Utc};

/// The system clock plus an offset (zero unless a test advanced it). Clones share the offset
/// (the rate limiter's clock is a clone of identity's).
#[derive(Debug, Default, Clone)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

/// The process's monotonic origin, for [`Clock::monotonic_nanos`].
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        let offset = chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed));
        Utc::now() + offset
    }

    /// `now` in the form the control plane stores and compares times in (RFC 3339, UTC,
    /// milliseconds): what an `expires_at` column is compared with.
    pub fn now_text(&self) -> String {
        crate::control::format_time(self.now())
    }

    /// Nanoseconds of a monotonic clock since an origin in this process, plus the offset: what
    /// rate limits measure time with (never goes back, moves forward when a test advances it).
    pub fn monotonic_nanos(&self) -> u64 {
        let base = u64::try_from(origin().elapsed().as_nanos()).unwrap_or(u64::MAX);
        let offset = self.offset_ms.load(Ordering::Relaxed).max(0) as u64;
        base.saturating_add(offset.saturating_mul(1_000_000))
    }

    /// Seconds since the Unix epoch: what a tenant token's `iat` and `exp` are compared with.
    pub fn timestamp(&self) -> i64 {
        self.now().timestamp()
    }

    /// Moves the clock forward by `by` (tests only: lets an expiry pass without waiting for it).
    pub fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| {
                Some(o.saturating_add(ms))
            })
            .ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_the_system_clock_until_advanced() {
        let clock = Clock::default();
        let before = Utc::now();
        let now = clock.now();
        assert!(now >= before && now <= Utc::now());
        clock.advance(std::time::Duration::from_secs(3600));
        clock.advance(std::time::Duration::from_millis(500));
        let later = clock.now();
        assert!(later >= before + chrono::Duration::milliseconds(3_600_500));
        assert!(later <= Utc::now() + chrono::Duration::milliseconds(3_600_500));
        assert_eq!(clock.now_text().len(), "2024-01-01T00:00:00.000Z".len());
        assert!(clock.timestamp() >= before.timestamp() + 3600);
    }
}
