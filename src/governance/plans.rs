//! Plans and an org's effective limits (issue 12 part A): the operator's plan administration,
//! an org's overrides, and the small cache every quota and rate check reads limits through.
//! The vocabulary (`Limit`, `Limits`, `Plan`, ...) is `control::limits`; storage is
//! `control::plans`.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use super::monthly::{Monthly, UsageSource};
use super::quota::Counted;
use super::Governance;
use crate::control::limits::{Limits, NewPlan, Plan, PlanPatch};
use crate::error::{Error, Result};
use crate::identity::{Action, OrgAccess};

/// How long an org's effective limits are trusted in memory. Changes made through this server
/// (plan edits, overrides, an org's plan) invalidate them at once; the TTL bounds staleness
/// from another process (the command line).
pub const LIMITS_TTL: Duration = Duration::from_secs(5);

/// The orgs' effective limits, each with when it was read.
#[derive(Default)]
pub struct LimitsCache(RwLock<HashMap<Uuid, (Limits, Instant)>>);

impl Governance {
    /// The org's effective limits (its plan's with its overrides), through a small cache.
    pub fn limits(&self, org: Uuid) -> Result<Limits> {
        if let Some((l, at)) = self
            .limits
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&org)
        {
            if at.elapsed() < LIMITS_TTL {
                return Ok(*l);
            }
        }
        let l = self.control.org_limits(org)?.effective;
        let mut map = self.limits.0.write().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.clear();
        }
        map.insert(org, (l, Instant::now()));
        Ok(l)
    }

    /// Forgets cached limits (all orgs: a plan change affects many). Called by whoever changes
    /// a plan, an org's plan or its overrides.
    pub fn invalidate_limits(&self) {
        self.limits
            .0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    // ---- the operator's plans (the route takes the `Operator` extractor; the command line
    // acts as the operator) ----

    pub fn list_plans(&self) -> Result<Vec<Plan>> {
        self.control.list_plans()
    }

    pub fn get_plan(&self, id: &str) -> Result<Plan> {
        self.control.get_plan(id)
    }

    pub fn create_plan(&self, new: NewPlan) -> Result<Plan> {
        self.control.create_plan(new)
    }

    pub fn update_plan(&self, id: &str, patch: PlanPatch) -> Result<Plan> {
        let plan = self.control.update_plan(id, patch)?;
        self.invalidate_limits();
        Ok(plan)
    }

    pub fn delete_plan(&self, id: &str) -> Result<()> {
        self.control.delete_plan(id)
    }

    /// Replaces an org's overrides (`{}` removes them; a key set to `null` is unlimited);
    /// answers its limits view. Operator only (as the plans).
    pub fn set_org_overrides(&self, org: &str, overrides: &Value) -> Result<Value> {
        let org = self.control.get_org(org)?.id;
        self.control.set_org_overrides(org, overrides)?;
        self.invalidate_limits();
        self.limits_view(org)
    }

    /// Merges into an org's overrides (RFC 7396: `null` removes an override, so the plan's
    /// value applies again). Operator only.
    pub fn merge_org_overrides(&self, org: &str, patch: &Value) -> Result<Value> {
        let org = self.control.get_org(org)?.id;
        self.control.merge_org_overrides(org, patch)?;
        self.invalidate_limits();
        self.limits_view(org)
    }

    /// The operator's view of an org's limits (id or slug).
    pub fn operator_org_limits(&self, org: &str) -> Result<Value> {
        self.limits_view(self.control.get_org(org)?.id)
    }

    /// What the org of the context is held to, and what it uses (`OrgRead`).
    pub fn org_limits(&self, access: &OrgAccess) -> Result<Value> {
        access.require(Action::OrgRead)?;
        self.limits_view(access.org_id())
    }

    /// An org's limits with what it uses of the counted ones (the store-counted ones as last
    /// counted, `null` when not counted yet) and of its monthly allowances.
    fn limits_view(&self, org: Uuid) -> Result<Value> {
        let l = self.control.org_limits(org)?;
        let now = self.identity.clock().now_text();
        let mut used = serde_json::Map::new();
        for c in Counted::ALL {
            let v = if c.in_stores() {
                self.ledger.known(org, c).map(|v| v.max(0))
            } else {
                Some(self.read_usage(org, c, &now)?)
            };
            used.insert(c.limit().as_str().into(), json!(v));
        }
        for m in [Monthly::ChatTokens, Monthly::EmbeddingChunks] {
            used.insert(
                m.limit().as_str().into(),
                json!(self.used_this_month(org, m)?),
            );
        }
        let mut v = serde_json::to_value(&l).map_err(|e| Error::internal(e.to_string()))?;
        v["used"] = Value::Object(used);
        Ok(v)
    }
}
