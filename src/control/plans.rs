//! Plans and an org's limits as stored: the `plans` table (built-in and custom), an org's
//! overrides (`orgs.limits`), and the counts of control-plane resources that quotas compare
//! with. What the limits mean is `control::limits`; governance enforces them.

use rusqlite::{params, OptionalExtension, Row};
use serde_json::Value;
use uuid::Uuid;

use super::limits::{
    validate_overrides, Limits, NewPlan, OrgLimits, Plan, PlanPatch, PRIORITY_KEY,
};
use super::orgs::merge_patch;
use super::ControlPlane;
use crate::db::{self, json_column};
use crate::error::{Error, Result};

/// The columns [`RawPlan::from_row`] reads, by name.
const PLAN_COLUMNS: &str = "id, name, priority, limits, builtin, created_at, updated_at";

struct RawPlan {
    id: String,
    name: String,
    priority: i64,
    limits: String,
    builtin: bool,
    created_at: String,
    updated_at: String,
}

impl RawPlan {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get("id")?,
            name: r.get("name")?,
            priority: r.get("priority")?,
            limits: r.get("limits")?,
            builtin: r.get("builtin")?,
            created_at: r.get("created_at")?,
            updated_at: r.get("updated_at")?,
        })
    }

    fn finish(self) -> Result<Plan> {
        Ok(Plan {
            limits: Limits::from_plan(&json_column(&self.limits)?, self.priority)?,
            id: self.id,
            name: self.name,
            builtin: self.builtin,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// Splits `ingest_priority` out of a plan's limits object (it is stored in its own column).
fn split_priority(limits: &Value) -> Result<(Value, Option<i64>)> {
    let map = validate_overrides(limits)?;
    let mut rest = map.clone();
    let priority = rest.remove(PRIORITY_KEY).and_then(|v| v.as_i64());
    Ok((Value::Object(rest), priority))
}

impl ControlPlane {
    pub fn list_plans(&self) -> Result<Vec<Plan>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {PLAN_COLUMNS} FROM plans ORDER BY builtin DESC, priority, id"
        ))?;
        let rows = stmt.query_map([], RawPlan::from_row)?;
        rows.map(|r| r?.finish()).collect()
    }

    /// A plan by id; an unknown one is `404`.
    pub fn get_plan(&self, id: &str) -> Result<Plan> {
        self.conn()
            .query_row(
                &format!("SELECT {PLAN_COLUMNS} FROM plans WHERE id = ?1"),
                [id],
                RawPlan::from_row,
            )
            .optional()?
            .ok_or(Error::NotFound(crate::error::Resource::Plan))?
            .finish()
    }

    pub fn create_plan(&self, new: NewPlan) -> Result<Plan> {
        crate::ids::validate_slug(&new.id).map_err(|_| {
            Error::invalid("a plan id is a slug: lowercase letters, digits and '-'")
        })?;
        let name = match new.name {
            Some(n) => crate::ids::validate_name(&n)?,
            None => new.id.clone(),
        };
        let limits = new
            .limits
            .unwrap_or_else(|| Value::Object(Default::default()));
        let (limits, priority) = split_priority(&limits)?;
        let now = db::now();
        let inserted = self.conn().execute(
            "INSERT INTO plans (id, name, priority, limits, builtin, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5)",
            params![new.id, name, priority.unwrap_or(1), limits.to_string(), now],
        );
        match inserted {
            Ok(_) => self.get_plan(&new.id),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                Err(Error::Conflict(format!(
                    "a plan {:?} already exists",
                    new.id
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Changes a plan's name or limits: each key of `limits` replaces that limit (`null`:
    /// unlimited), the others stay.
    pub fn update_plan(&self, id: &str, patch: PlanPatch) -> Result<Plan> {
        let conn = self.conn();
        let (name, priority, stored): (String, i64, String) = conn
            .query_row(
                "SELECT name, priority, limits FROM plans WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?
            .ok_or(Error::NotFound(crate::error::Resource::Plan))?;
        let name = match patch.name {
            Some(n) => crate::ids::validate_name(&n)?,
            None => name,
        };
        let mut limits = json_column(&stored)?;
        let mut priority = priority;
        if let Some(p) = patch.limits {
            let (p, new_priority) = split_priority(&p)?;
            if let (Some(t), Some(p)) = (limits.as_object_mut(), p.as_object()) {
                for (k, v) in p {
                    t.insert(k.clone(), v.clone());
                }
            }
            priority = new_priority.unwrap_or(priority);
        }
        conn.execute(
            "UPDATE plans SET name = ?2, priority = ?3, limits = ?4, updated_at = ?5 WHERE id = ?1",
            params![id, name, priority, limits.to_string(), db::now()],
        )?;
        drop(conn);
        self.get_plan(id)
    }

    /// Deletes a custom plan no org uses (deleted orgs included: their rows keep the plan).
    pub fn delete_plan(&self, id: &str) -> Result<()> {
        let plan = self.get_plan(id)?;
        if plan.builtin {
            return Err(Error::Conflict(format!(
                "{id:?} is a built-in plan: it can be changed but not deleted"
            )));
        }
        let conn = self.conn();
        let users: i64 =
            conn.query_row("SELECT count(*) FROM orgs WHERE plan = ?1", [id], |r| {
                r.get(0)
            })?;
        if users > 0 {
            return Err(Error::Conflict(format!(
                "plan {id:?} is the plan of {users} organization(s): move them to another plan first"
            )));
        }
        conn.execute("DELETE FROM plans WHERE id = ?1", [id])?;
        Ok(())
    }

    /// What an org is held to: its plan's limits with its overrides on top. Deleted orgs too
    /// (the operator restores them).
    pub fn org_limits(&self, org_id: Uuid) -> Result<OrgLimits> {
        let (plan, plan_limits, priority, overrides): (String, String, i64, String) = self
            .auth_conn()
            .query_row(
                "SELECT p.id, p.limits, p.priority, o.limits FROM orgs o
                 JOIN plans p ON p.id = o.plan WHERE o.id = ?1",
                [org_id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?
            .ok_or(Error::NotFound(crate::error::Resource::Org))?;
        let overrides = json_column(&overrides)?;
        let mut effective = Limits::from_plan(&json_column(&plan_limits)?, priority)?;
        effective.apply(&overrides)?;
        Ok(OrgLimits {
            org_id,
            plan,
            overrides,
            effective,
        })
    }

    /// Replaces an org's overrides (`{}` removes them all).
    pub fn set_org_overrides(&self, org_id: Uuid, overrides: &Value) -> Result<OrgLimits> {
        validate_overrides(overrides)?;
        let n = self.conn().execute(
            "UPDATE orgs SET limits = ?2, updated_at = ?3 WHERE id = ?1 AND status <> 'deleted'",
            params![org_id.to_string(), overrides.to_string(), db::now()],
        )?;
        if n == 0 {
            return Err(Error::NotFound(crate::error::Resource::Org));
        }
        self.org_limits(org_id)
    }

    /// Merges `patch` into an org's overrides (RFC 7396: `null` removes an override).
    pub fn merge_org_overrides(&self, org_id: Uuid, patch: &Value) -> Result<OrgLimits> {
        let mut current = self.org_limits(org_id)?.overrides;
        merge_patch(&mut current, patch);
        self.set_org_overrides(org_id, &current)
    }

    /// The scheduler weight of `org_id`: its plan's priority or its override (1 when unknown).
    pub fn org_priority(&self, org_id: Uuid) -> Result<f64> {
        match self.org_limits(org_id) {
            Ok(l) => Ok(f64::from(l.effective.ingest_priority.max(1))),
            Err(Error::NotFound(_)) => Ok(1.0),
            Err(e) => Err(e),
        }
    }

    /// Live workspaces of an org (what the `workspaces` quota counts).
    pub fn count_workspaces(&self, org_id: Uuid) -> Result<i64> {
        Ok(self.conn().query_row(
            "SELECT count(*) FROM workspaces WHERE org_id = ?1 AND status <> 'deleted'",
            [org_id.to_string()],
            |r| r.get(0),
        )?)
    }

    /// Members of an org plus its open invitations, unexpired and unaccepted (an invitation
    /// holds a seat: what the `members` quota counts).
    pub fn count_seats(&self, org_id: Uuid, now: &str) -> Result<i64> {
        Ok(self.conn().query_row(
            "SELECT (SELECT count(*) FROM memberships WHERE org_id = ?1)
                  + (SELECT count(*) FROM invitations
                     WHERE org_id = ?1 AND accepted_at IS NULL AND expires_at > ?2)",
            params![org_id.to_string(), now],
            |r| r.get(0),
        )?)
    }

    /// Members of an org (what accepting an invitation is checked against).
    pub fn count_members(&self, org_id: Uuid) -> Result<i64> {
        Ok(self.conn().query_row(
            "SELECT count(*) FROM memberships WHERE org_id = ?1",
            [org_id.to_string()],
            |r| r.get(0),
        )?)
    }

    /// API keys of an org's live workspaces, not revoked and not expired (what the `api_keys`
    /// quota counts).
    pub fn count_api_keys(&self, org_id: Uuid, now: &str) -> Result<i64> {
        Ok(self.conn().query_row(
            "SELECT count(*) FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id
             WHERE k.org_id = ?1 AND k.revoked_at IS NULL
               AND (k.expires_at IS NULL OR k.expires_at > ?2) AND w.status <> 'deleted'",
            params![org_id.to_string(), now],
            |r| r.get(0),
        )?)
    }

    /// Live workspaces of an org, all of them (for measuring its stores).
    pub fn live_workspace_ids(&self, org_id: Uuid) -> Result<Vec<Uuid>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id FROM workspaces WHERE org_id = ?1 AND status <> 'deleted' ORDER BY id",
        )?;
        let ids = stmt
            .query_map([org_id.to_string()], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids.iter().filter_map(|s| Uuid::try_parse(s).ok()).collect())
    }
}
