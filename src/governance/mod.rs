//! Governance (issue 12, part A): plans and limits, quotas checked before work is accepted,
//! request rate limits, and the lifecycle of orgs and workspaces (soft deletion, restore,
//! purge). Domain code: no axum. Existing operations call in through one thin hook each
//! (listed in ARCHITECTURE.md, "Governance").

pub mod lifecycle;
pub mod plans;
pub mod quota;
pub mod ratelimit;
pub mod usage;

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::app::App;
use crate::clock::Clock;
use crate::control::ControlPlane;
use crate::error::{Error, Result};
use crate::identity::Principal;
use plans::{Limit, Limits};
use quota::{Ask, Counted, Ledger, Reservation};
use ratelimit::{Credential, RateLimits, Verdict};
use usage::{Monthly, UsageSource};

/// How long an org's effective limits are trusted in memory. Changes made through this server
/// (plan edits, overrides, an org's plan) invalidate them at once; the TTL bounds staleness
/// from another process (the command line).
pub const LIMITS_TTL: Duration = Duration::from_secs(5);

/// How often the server runs [`upkeep`].
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(60);

/// The periodic upkeep: purges deleted orgs and workspaces past their grace period, drops idle
/// rate-limit buckets.
pub fn upkeep(app: &App) {
    lifecycle::purge_due(app);
    app.governance().rates.prune();
}

/// Governance's in-memory state, one per server.
pub struct Governance {
    limits: RwLock<HashMap<Uuid, (Limits, Instant)>>,
    pub ledger: Ledger,
    pub rates: RateLimits,
    usage: Box<dyn UsageSource>,
}

impl Governance {
    /// `clock` is the server's (identity's): rate limits and monthly periods follow it.
    pub fn new(clock: Clock) -> Governance {
        Governance {
            limits: RwLock::new(HashMap::new()),
            ledger: Ledger::default(),
            rates: RateLimits::new(clock.clone()),
            usage: Box::new(usage::InMemoryUsage::new(clock)),
        }
    }

    /// The org's effective limits, through a small cache.
    pub fn limits(&self, control: &ControlPlane, org: Uuid) -> Result<Limits> {
        if let Some((l, at)) = self
            .limits
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&org)
        {
            if at.elapsed() < LIMITS_TTL {
                return Ok(*l);
            }
        }
        let l = control.org_limits(org)?.effective;
        let mut map = self.limits.write().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.clear();
        }
        map.insert(org, (l, Instant::now()));
        Ok(l)
    }

    /// Forgets cached limits (all orgs: a plan change affects many).
    pub fn invalidate_limits(&self) {
        self.limits
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The monthly usage source (chat tokens, embedding chunks).
    pub fn usage(&self) -> &dyn UsageSource {
        self.usage.as_ref()
    }

    /// The rate check of one request by `principal` reaching `org`. The operator is never
    /// limited.
    pub fn rate_check(
        &self,
        control: &ControlPlane,
        principal: &Principal,
        org: Uuid,
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
        let l = self.limits(control, org)?;
        Ok(Some(self.rates.check(
            Some(credential),
            l.get(Limit::RequestsPerMinutePerKey),
            org,
            l.get(Limit::RequestsPerMinutePerOrg),
        )))
    }
}

/// Reads an org's current usage of a counted resource from its store of truth.
fn read_usage(app: &App, org: Uuid, what: Counted) -> Result<i64> {
    let now = app.identity.clock().now_text();
    match what {
        Counted::Workspaces => app.control.count_workspaces(org),
        Counted::Members => app.control.count_seats(org, &now),
        Counted::ApiKeys => app.control.count_api_keys(org, &now),
        Counted::Documents | Counted::StorageBytes => {
            let mut docs = 0i64;
            let mut bytes = 0i64;
            for ws in app.control.live_workspace_ids(org)? {
                let (_, handle) = match app.open_workspace(ws) {
                    Ok(h) => h,
                    Err(Error::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                };
                let s = handle.stats()?;
                docs += s.documents;
                bytes += i64::try_from(s.bytes_on_disk).unwrap_or(i64::MAX);
            }
            Ok(if what == Counted::Documents {
                docs
            } else {
                bytes
            })
        }
    }
}

/// Reserves room for `asks` in `org` under its effective limits, or refuses with
/// `QuotaExceeded` (nothing reserved). Commit the reservation once the work is done.
pub fn reserve(app: &App, org: Uuid, asks: &[(Counted, i64)]) -> Result<Reservation> {
    let limits = app.governance().limits(&app.control, org)?;
    let asks: Vec<Ask> = asks
        .iter()
        .map(|&(what, delta)| Ask {
            what,
            delta,
            limit: limits.get(what.limit()),
        })
        .collect();
    app.governance()
        .ledger
        .reserve(org, &asks, &|what| read_usage(app, org, what))
}

/// The checks of a document upload: its size against `upload_bytes`, room for one more
/// document and its bytes, and the month's embedding chunks not used up. `replaces` is true when
/// it names an `external_id` (it may replace a document: counted again from the stores later).
pub fn reserve_document(app: &App, org: Uuid, bytes: u64, replaces: bool) -> Result<Reservation> {
    let limits = app.governance().limits(&app.control, org)?;
    if let Some(max) = limits.get(Limit::UploadBytes) {
        if bytes > max {
            return Err(Error::PayloadTooLarge(format!(
                "the document is {bytes} bytes; the organization's plan allows uploads of at most \
                 {max} bytes"
            )));
        }
    }
    check_monthly(app, org, Monthly::EmbeddingChunks)?;
    let r = reserve(
        app,
        org,
        &[
            (Counted::Documents, 1),
            (
                Counted::StorageBytes,
                i64::try_from(bytes).unwrap_or(i64::MAX),
            ),
        ],
    )?;
    if replaces {
        app.governance()
            .ledger
            .stale(org, &[Counted::Documents, Counted::StorageBytes]);
    }
    Ok(r)
}

/// A monthly allowance (chat tokens, embedding chunks): refused once the month's usage has
/// reached the limit (a request's own consumption is known only after it ran).
pub fn check_monthly(app: &App, org: Uuid, what: Monthly) -> Result<()> {
    let limits = app.governance().limits(&app.control, org)?;
    if let Some(max) = limits.get(what.limit()) {
        let used = app.governance().usage().used_this_month(org, what)?;
        if used >= max {
            return Err(quota::exceeded(what.limit(), max, used));
        }
    }
    Ok(())
}

/// After a deletion that frees counted resources (documents, a workspace, keys): the counts
/// are read again from the stores at the next quiet check.
pub fn freed(app: &App, org: Uuid, what: &[Counted]) {
    app.governance().ledger.stale(org, what);
}
