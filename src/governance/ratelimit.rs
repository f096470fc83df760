//! Request rate limits: token buckets (GCRA, the `governor` crate) per credential (API key,
//! tenant-token subject, user session) and per org (one bucket shared by all the org's
//! credentials), sized by the org's plan (`requests_per_minute_per_key`,
//! `requests_per_minute_per_org`; a bucket holds a minute's worth and refills continuously).
//!
//! In memory, O(1) per request: a sharded map (read lock on the hot path, write lock only to
//! make a bucket or resize one whose limit changed) and an atomic compare-and-swap in the
//! bucket. Time is [`crate::clock::Clock`]'s monotonic nanoseconds, so tests advance it instead
//! of sleeping. Buckets idle for over two minutes are full again and are dropped by
//! [`RateLimits::prune`].

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::ops::Add;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock as GovernorClock, Reference};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use uuid::Uuid;

use super::usage::Refusal;
use super::Governance;
use crate::clock::Clock;
use crate::control::limits::Limit;
use crate::error::Result;
use crate::identity::Principal;

/// The window every bucket refills over.
pub const WINDOW_SECS: u64 = 60;
const SHARDS: usize = 16;
/// A bucket unused this long is full again: dropping it changes nothing.
pub const IDLE: Duration = Duration::from_secs(2 * WINDOW_SECS);

/// A moment of [`BridgeClock`]: nanoseconds since the process's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Moment(u64);

impl Add<Nanos> for Moment {
    type Output = Moment;
    fn add(self, d: Nanos) -> Moment {
        Moment(self.0.saturating_add(d.as_u64()))
    }
}

impl Reference for Moment {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_sub(earlier.0))
    }
    fn saturating_sub(&self, d: Nanos) -> Self {
        Moment(self.0.checked_sub(d.as_u64()).unwrap_or(self.0))
    }
}

/// The server's clock as governor's clock.
#[derive(Debug, Clone, Default)]
pub struct BridgeClock(pub Clock);

impl GovernorClock for BridgeClock {
    type Instant = Moment;
    fn now(&self) -> Moment {
        Moment(self.0.monotonic_nanos())
    }
}

/// Whose own bucket a request draws from (besides its org's).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Credential {
    ApiKey(Uuid),
    /// A tenant token: its parent key and its subject (or its `jti` when it names none),
    /// hashed, so every end user of an app has a bucket of their own.
    TenantToken(Uuid, u64),
    /// A user's login session.
    Session(Uuid),
}

impl Credential {
    pub fn tenant_token(key: Uuid, subject_or_jti: &str) -> Credential {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        subject_or_jti.hash(&mut h);
        Credential::TenantToken(key, h.finish())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Credential(Credential),
    Org(Uuid),
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, BridgeClock, StateInformationMiddleware>;

struct Bucket {
    per_minute: u32,
    limiter: Limiter,
    last_used: AtomicU64,
}

/// One policy's state after a request, for the `RateLimit-Policy` / `RateLimit` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// `"key"` (the credential's bucket) or `"org"`.
    pub name: &'static str,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
}

/// The outcome of a request's rate check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed(Vec<Window>),
    /// Over a limit: retry after this many seconds (at least 1).
    Limited {
        retry_after_secs: u64,
        windows: Vec<Window>,
    },
}

pub struct RateLimits {
    shards: Vec<RwLock<HashMap<Key, Arc<Bucket>>>>,
    clock: BridgeClock,
}

impl RateLimits {
    pub fn new(clock: Clock) -> RateLimits {
        RateLimits {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            clock: BridgeClock(clock),
        }
    }

    fn shard(&self, key: &Key) -> &RwLock<HashMap<Key, Arc<Bucket>>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    fn bucket(&self, key: Key, per_minute: NonZeroU32) -> Arc<Bucket> {
        let shard = self.shard(&key);
        if let Some(b) = shard
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .filter(|b| b.per_minute == per_minute.get())
        {
            return b.clone();
        }
        let mut map = shard.write().unwrap_or_else(|p| p.into_inner());
        match map.get(&key) {
            Some(b) if b.per_minute == per_minute.get() => b.clone(),
            _ => {
                let limiter = RateLimiter::direct_with_clock(
                    Quota::per_minute(per_minute),
                    self.clock.clone(),
                )
                .with_middleware::<StateInformationMiddleware>();
                let b = Arc::new(Bucket {
                    per_minute: per_minute.get(),
                    limiter,
                    last_used: AtomicU64::new(0),
                });
                map.insert(key, b.clone());
                b
            }
        }
    }

    /// Draws one request from a bucket; `Err` carries the seconds to wait.
    fn draw(&self, key: Key, name: &'static str, per_minute: u64) -> Result<Window, (u64, Window)> {
        // A limit of 0 refuses everything; governor needs at least 1.
        let pm = u32::try_from(per_minute).unwrap_or(u32::MAX);
        let Some(nz) = NonZeroU32::new(pm) else {
            return Err((
                WINDOW_SECS,
                Window {
                    name,
                    limit: 0,
                    remaining: 0,
                    reset_secs: WINDOW_SECS,
                },
            ));
        };
        let b = self.bucket(key, nz);
        let now = self.clock.now();
        b.last_used.store(now.0, Ordering::Relaxed);
        let per_cell = (WINDOW_SECS * 1_000_000_000) / u64::from(pm);
        match b.limiter.check() {
            Ok(snap) => {
                let remaining = snap.remaining_burst_capacity();
                let missing = u64::from(pm.saturating_sub(remaining));
                Ok(Window {
                    name,
                    limit: pm,
                    remaining,
                    reset_secs: (missing * per_cell).div_ceil(1_000_000_000),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(now);
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err((
                    secs.max(1),
                    Window {
                        name,
                        limit: pm,
                        remaining: 0,
                        reset_secs: WINDOW_SECS,
                    },
                ))
            }
        }
    }

    /// Checks one request: the credential's bucket (when it has one and a limit) then the org's.
    /// `None` limits are unlimited.
    pub fn check(
        &self,
        credential: Option<Credential>,
        per_key: Option<u64>,
        org: Uuid,
        per_org: Option<u64>,
    ) -> Verdict {
        let mut windows = Vec::with_capacity(2);
        if let (Some(c), Some(limit)) = (credential, per_key) {
            match self.draw(Key::Credential(c), "key", limit) {
                Ok(w) => windows.push(w),
                Err((secs, w)) => {
                    windows.push(w);
                    return Verdict::Limited {
                        retry_after_secs: secs,
                        windows,
                    };
                }
            }
        }
        if let Some(limit) = per_org {
            match self.draw(Key::Org(org), "org", limit) {
                Ok(w) => windows.push(w),
                Err((secs, w)) => {
                    windows.push(w);
                    return Verdict::Limited {
                        retry_after_secs: secs,
                        windows,
                    };
                }
            }
        }
        Verdict::Allowed(windows)
    }

    /// Drops the buckets unused for [`IDLE`] (full again by then). Returns how many.
    pub fn prune(&self) -> usize {
        let now = self.clock.now().0;
        let idle = u64::try_from(IDLE.as_nanos()).unwrap_or(u64::MAX);
        let mut n = 0;
        for shard in &self.shards {
            let mut map = shard.write().unwrap_or_else(|p| p.into_inner());
            let before = map.len();
            map.retain(|_, b| now.saturating_sub(b.last_used.load(Ordering::Relaxed)) < idle);
            n += before - map.len();
        }
        n
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Governance {
    /// The rate-limit buckets (the server's upkeep prunes idle ones).
    pub fn rate_limits(&self) -> &RateLimits {
        &self.rates
    }

    /// The rate check of one request by `principal` reaching `org` (and `ws`): the
    /// credential's bucket, then the org's. The operator is never limited (`None`). A
    /// `Limited` verdict is counted as a refusal here.
    pub fn rate_check(
        &self,
        principal: &Principal,
        org: Uuid,
        ws: Option<Uuid>,
    ) -> Result<Option<Verdict>> {
        let credential = match principal {
            Principal::Operator => return Ok(None),
            Principal::User { session_id, .. } => Credential::Session(*session_id),
            Principal::ApiKey { key_id, .. } => Credential::ApiKey(*key_id),
            Principal::TenantToken {
                key_id,
                subject,
                token_id,
                ..
            } => Credential::tenant_token(
                *key_id,
                subject
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .unwrap_or(token_id),
            ),
        };
        let l = self.limits(org)?;
        let verdict = self.rates.check(
            Some(credential),
            l.get(Limit::RequestsPerMinutePerKey),
            org,
            l.get(Limit::RequestsPerMinutePerOrg),
        );
        if matches!(verdict, Verdict::Limited { .. }) {
            self.record_refusal(org, ws, Refusal::RateLimit);
        }
        Ok(Some(verdict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(v: &Verdict) -> bool {
        matches!(v, Verdict::Allowed(_))
    }

    #[test]
    fn a_key_gets_its_minute_then_waits_for_the_refill() {
        let clock = Clock::default();
        let rl = RateLimits::new(clock.clone());
        let org = Uuid::from_u128(1);
        let key = || Some(Credential::ApiKey(Uuid::from_u128(2)));
        for i in 0..6 {
            let v = rl.check(key(), Some(6), org, None);
            match &v {
                Verdict::Allowed(w) => assert_eq!(w[0].remaining, 5 - i),
                other => panic!("request {i}: {other:?}"),
            }
        }
        match rl.check(key(), Some(6), org, None) {
            Verdict::Limited {
                retry_after_secs, ..
            } => assert!((1..=10).contains(&retry_after_secs), "{retry_after_secs}"),
            other => panic!("{other:?}"),
        }
        // One request comes back every 10 s.
        clock.advance(Duration::from_secs(10));
        assert!(allowed(&rl.check(key(), Some(6), org, None)));
        assert!(!allowed(&rl.check(key(), Some(6), org, None)));
        // Another key of the same org has its own bucket.
        let other = Some(Credential::ApiKey(Uuid::from_u128(3)));
        assert!(allowed(&rl.check(other, Some(6), org, None)));
    }

    #[test]
    fn the_org_bucket_is_shared_by_its_credentials() {
        let clock = Clock::default();
        let rl = RateLimits::new(clock.clone());
        let org = Uuid::from_u128(1);
        for i in 0..4u128 {
            let c = Some(Credential::Session(Uuid::from_u128(10 + i)));
            assert!(allowed(&rl.check(c, Some(100), org, Some(4))));
        }
        let c = Some(Credential::tenant_token(Uuid::from_u128(5), "alice"));
        match rl.check(c, Some(100), org, Some(4)) {
            Verdict::Limited { windows, .. } => {
                assert_eq!(windows.last().map(|w| w.name), Some("org"))
            }
            other => panic!("{other:?}"),
        }
        // Another org is not affected; unlimited is never limited.
        assert!(allowed(&rl.check(None, None, Uuid::from_u128(9), Some(4))));
        for _ in 0..100 {
            assert!(allowed(&rl.check(None, None, org, None)));
        }
        // A zero limit refuses; a changed limit takes effect at once.
        assert!(!allowed(&rl.check(None, None, org, Some(0))));
        assert!(allowed(&rl.check(None, None, org, Some(5))));
        // Idle buckets go.
        clock.advance(IDLE + Duration::from_secs(1));
        assert!(rl.prune() > 0);
        assert!(rl.is_empty());
    }
}
