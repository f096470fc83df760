//! Login throttling: failed attempts are counted per email and per client address in a fixed
//! window; past the limit, further attempts (right or wrong) are refused with `429` until the
//! window ends. A success clears the email's count. In memory: a restart forgets it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed logins allowed per email per window.
pub const PER_EMAIL: u32 = 5;
/// Failed logins allowed per client address per window.
pub const PER_CLIENT: u32 = 30;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Entries kept before expired ones are pruned.
const PRUNE_AT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

#[derive(Debug, Default)]
pub struct Throttle {
    map: Mutex<HashMap<String, Window>>,
}

impl Throttle {
    fn keys(email: &str, client: Option<&str>) -> [(Option<String>, u32); 2] {
        [
            (Some(format!("e:{email}")), PER_EMAIL),
            (client.map(|c| format!("c:{c}")), PER_CLIENT),
        ]
    }

    /// `Err(seconds)` when this email or client is locked out for that long.
    pub fn check(&self, email: &str, client: Option<&str>) -> Result<(), u64> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut wait = 0u64;
        for (key, limit) in Self::keys(email, client) {
            if let Some(w) = key.and_then(|k| map.get(&k).copied()) {
                let end = w.started + WINDOW;
                if w.failures >= limit && end > now {
                    wait = wait.max((end - now).as_secs().max(1));
                }
            }
        }
        if wait > 0 {
            Err(wait)
        } else {
            Ok(())
        }
    }

    pub fn failed(&self, email: &str, client: Option<&str>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if map.len() >= PRUNE_AT {
            map.retain(|_, w| w.started + WINDOW > now);
        }
        for (key, _) in Self::keys(email, client) {
            if let Some(k) = key {
                let w = map.entry(k).or_insert(Window {
                    started: now,
                    failures: 0,
                });
                if w.started + WINDOW <= now {
                    *w = Window {
                        started: now,
                        failures: 0,
                    };
                }
                w.failures += 1;
            }
        }
    }

    pub fn succeeded(&self, email: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&format!("e:{email}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_the_limit_and_success_clears() {
        let t = Throttle::default();
        for _ in 0..PER_EMAIL {
            assert!(t.check("a@x", Some("1.2.3.4")).is_ok());
            t.failed("a@x", Some("1.2.3.4"));
        }
        let wait = t.check("a@x", Some("5.6.7.8")).expect_err("locked");
        assert!(wait > 0 && wait <= WINDOW.as_secs());
        assert!(
            t.check("b@x", Some("1.2.3.4")).is_ok(),
            "client under its limit"
        );
        t.succeeded("a@x");
        assert!(t.check("a@x", None).is_ok());
    }

    #[test]
    fn per_client_limit() {
        let t = Throttle::default();
        for i in 0..PER_CLIENT {
            t.failed(&format!("u{i}@x"), Some("9.9.9.9"));
        }
        assert!(t.check("new@x", Some("9.9.9.9")).is_err());
        assert!(t.check("new@x", Some("8.8.8.8")).is_ok());
    }
}
