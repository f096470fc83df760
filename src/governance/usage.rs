//! Monthly allowances (chat tokens, embedding chunks) read their usage through [`UsageSource`],
//! a narrow trait: the metering of issue 12 part B can implement it over its persistent
//! counters. [`InMemoryUsage`] is the simple one used until then: counters per org and calendar
//! month (UTC, by the server's clock) in memory, so they start from zero when the server
//! restarts.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::Datelike;
use uuid::Uuid;

use super::plans::Limit;
use crate::clock::Clock;
use crate::error::Result;

/// A resource with a monthly allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Monthly {
    ChatTokens,
    EmbeddingChunks,
}

impl Monthly {
    pub fn limit(self) -> Limit {
        match self {
            Monthly::ChatTokens => Limit::ChatTokensPerMonth,
            Monthly::EmbeddingChunks => Limit::EmbeddingChunksPerMonth,
        }
    }
}

/// Where monthly usage is read from and recorded to.
pub trait UsageSource: Send + Sync {
    /// The org's usage of `what` in the current calendar month.
    fn used_this_month(&self, org: Uuid, what: Monthly) -> Result<u64>;
    /// Adds `amount` to the org's usage of `what` in the current month.
    fn record(&self, org: Uuid, what: Monthly, amount: u64);
}

/// Counters in memory, per org and month.
pub struct InMemoryUsage {
    clock: Clock,
    counts: Mutex<HashMap<(Uuid, i32, u32, Monthly), u64>>,
}

impl InMemoryUsage {
    pub fn new(clock: Clock) -> InMemoryUsage {
        InMemoryUsage {
            clock,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn month(&self) -> (i32, u32) {
        let now = self.clock.now();
        (now.year(), now.month())
    }
}

impl UsageSource for InMemoryUsage {
    fn used_this_month(&self, org: Uuid, what: Monthly) -> Result<u64> {
        let (y, m) = self.month();
        Ok(self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(org, y, m, what))
            .copied()
            .unwrap_or(0))
    }

    fn record(&self, org: Uuid, what: Monthly, amount: u64) {
        let (y, m) = self.month();
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        // Past months are no longer read.
        c.retain(|k, _| (k.1, k.2) == (y, m));
        let v = c.entry((org, y, m, what)).or_insert(0);
        *v = v.saturating_add(amount);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_org_and_month() {
        let clock = Clock::default();
        let u = InMemoryUsage::new(clock.clone());
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        u.record(a, Monthly::ChatTokens, 100);
        u.record(a, Monthly::ChatTokens, 50);
        u.record(b, Monthly::ChatTokens, 7);
        assert_eq!(u.used_this_month(a, Monthly::ChatTokens).unwrap(), 150);
        assert_eq!(u.used_this_month(a, Monthly::EmbeddingChunks).unwrap(), 0);
        assert_eq!(u.used_this_month(b, Monthly::ChatTokens).unwrap(), 7);
        // A new month starts from zero.
        clock.advance(std::time::Duration::from_secs(32 * 24 * 3600));
        assert_eq!(u.used_this_month(a, Monthly::ChatTokens).unwrap(), 0);
    }
}
