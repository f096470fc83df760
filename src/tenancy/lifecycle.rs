//! The lifecycle of orgs and workspaces (issue 12 part A): soft deletion (invisible and
//! unusable at once, data kept for the grace period), restore by the operator, and the purge
//! that the server's upkeep runs (or the operator's `?purge=true`, at once).
//!
//! Deleting marks the control-plane rows (`control::lifecycle`) and closes the stores; nothing
//! can open a deleted workspace (every store is reached by its record first), its credentials
//! stop working (identity's status cache is cleared), and its jobs stop (the scheduler finds
//! it gone). The folders stay until the purge, which removes them through the trash and
//! records `purged_at`; from then on a restore is `404`.

use chrono::Duration as ChronoDuration;
use uuid::Uuid;

use super::Tenancy;
use crate::control::{format_time, Deleted, Org, WorkspaceRecord};
use crate::error::{Error, Result};
use crate::governance::quota::WORKSPACE_CONTENTS;
use crate::identity::{Action, OrgAccess, Principal, WorkspaceAccess};

/// How often the server runs the upkeep ([`Tenancy::purge_due`]; governance's idle
/// rate-limit buckets on the same beat).
pub const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Only the operator may purge at once.
fn check_purge(principal: &Principal, purge: bool) -> Result<()> {
    if purge && !principal.is_operator() {
        return Err(Error::forbidden(
            "only the operator may purge at once (?purge=true); without it the data is kept \
             for the grace period and then purged",
        ));
    }
    Ok(())
}

impl Tenancy {
    /// When something deleted now is purged: now plus the configured grace period.
    fn purge_after(&self) -> String {
        let days = i64::try_from(self.deletion_grace_days).unwrap_or(3650);
        format_time(self.identity.clock().now() + ChronoDuration::days(days))
    }

    /// Deletes the org and every one of its workspaces (`OrgDelete`): a soft delete (records
    /// marked, stores closed, data kept for the grace period and purged by the upkeep), or
    /// with `purge` (the operator's) removed at once.
    pub fn delete_org(&self, access: &OrgAccess, purge: bool) -> Result<()> {
        access.require(Action::OrgDelete)?;
        check_purge(access.principal(), purge)?;
        let org = access.org_id();
        let after = self.purge_after();
        let workspaces = self.with_reserve(|| self.control.soft_delete_org(org, &after))?;
        self.identity.invalidate_status();
        self.governance.invalidate_limits();
        for ws in &workspaces {
            // Closed now; its folder stays until the purge.
            self.registry.remove(*ws);
        }
        if purge {
            let now = self.identity.clock().now_text();
            self.with_reserve(|| self.control.purge_now(Some(org), None, &now))?;
            self.purge_due();
        }
        tracing::info!(org_id = %org, workspaces = workspaces.len(), purge, "organization deleted");
        Ok(())
    }

    /// Deletes the workspace (`WorkspaceDelete`): the record is marked deleted (from then on
    /// no context reaches it) and the store leaves the registry (a request already past
    /// authentication gets `404`, or finishes on the handle it holds); its folder is kept for
    /// the grace period and purged by the upkeep, or at once with `purge` (the operator's).
    pub fn delete_workspace(&self, ctx: &WorkspaceAccess, purge: bool) -> Result<()> {
        ctx.require(Action::WorkspaceDelete)?;
        check_purge(ctx.principal(), purge)?;
        let (ws, org) = (ctx.workspace_id(), ctx.org_id());
        let after = self.purge_after();
        self.with_reserve(|| self.control.soft_delete_workspace(ws, &after))?;
        self.identity.invalidate_status();
        self.registry.remove(ws);
        self.governance.freed(org, &WORKSPACE_CONTENTS);
        if purge {
            let now = self.identity.clock().now_text();
            self.with_reserve(|| self.control.purge_now(None, Some(ws), &now))?;
            self.purge_due();
        }
        tracing::info!(org_id = %org, workspace_id = %ws, purge, "workspace deleted");
        Ok(())
    }

    /// Deleted orgs and workspaces that can still be restored (operator only: the route takes
    /// the `Operator` extractor, as [`Tenancy::create_org`]).
    pub fn list_deleted(&self) -> Result<Vec<Deleted>> {
        self.control.list_deleted()
    }

    /// Restores a deleted org (by id: a deleted org's slug may be someone else's now) and the
    /// workspaces deleted with it, before its purge; their unfinished jobs resume. Quotas are
    /// not checked: the operator restores what was there. Operator only.
    pub fn restore_org(&self, org: Uuid) -> Result<(Org, Vec<Uuid>)> {
        let workspaces = self.control.restore_org(org)?;
        for ws in &workspaces {
            self.registry.readmit(*ws);
        }
        self.identity.invalidate_status();
        self.governance.invalidate_limits();
        self.governance.freed(org, &WORKSPACE_CONTENTS);
        for ws in &workspaces {
            self.knowledge.resume_workspace_jobs(*ws, org);
        }
        tracing::info!(org_id = %org, workspaces = workspaces.len(), "organization restored");
        Ok((self.control.get_org_by_id(org)?, workspaces))
    }

    /// Restores a deleted workspace of a live org before its purge. Operator only.
    pub fn restore_workspace(&self, ws: Uuid) -> Result<WorkspaceRecord> {
        let org = self.control.restore_workspace(ws)?;
        self.registry.readmit(ws);
        self.identity.invalidate_status();
        self.governance.freed(org, &WORKSPACE_CONTENTS);
        self.knowledge.resume_workspace_jobs(ws, org);
        tracing::info!(org_id = %org, workspace_id = %ws, "workspace restored");
        self.control.get_workspace(ws)
    }

    /// Purges what is due: the folders of workspaces past their grace period (through the
    /// trash; also any a crash left in place), then the orgs (their provider keys). Run by the
    /// server's upkeep and after start; returns how many workspaces and orgs it purged.
    pub fn purge_due(&self) -> (usize, usize) {
        let now = self.identity.clock().now_text();
        let mut purged = (0, 0);
        match self.control.workspaces_due_for_purge(&now) {
            Ok(ids) => {
                for ws in ids {
                    self.remove_store(ws);
                    match self.control.mark_workspace_purged(ws) {
                        Ok(()) => purged.0 += 1,
                        Err(e) => {
                            tracing::warn!(workspace_id = %ws, error = %e, "cannot record purge")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list workspaces due for purge"),
        }
        match self.control.orgs_due_for_purge(&now) {
            Ok(ids) => {
                for org in ids {
                    match self.control.mark_org_purged(org) {
                        Ok(()) => purged.1 += 1,
                        Err(e) => tracing::warn!(org_id = %org, error = %e, "cannot record purge"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list organizations due for purge"),
        }
        if purged != (0, 0) {
            tracing::info!(
                workspaces = purged.0,
                orgs = purged.1,
                "purged deleted data past its grace period"
            );
        }
        purged
    }
}
