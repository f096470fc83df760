//! The lifecycle of orgs and workspaces: soft deletion (invisible and unusable at once, data
//! kept for the grace period), restore by the operator, and the purge that the background
//! upkeep runs (or the operator's `?purge=true`, at once).
//!
//! Deleting marks the control-plane rows (`control::lifecycle`) and closes the stores; nothing
//! can open a deleted workspace (`App::open_workspace` checks the record), its credentials stop
//! working (the status cache is cleared), and its jobs stop (the scheduler finds it gone). The
//! folders stay until the purge, which removes them through the same trash as before and
//! records `purged_at`; from then on a restore is `404`.

use chrono::Duration as ChronoDuration;
use uuid::Uuid;

use super::quota::Counted;
use crate::app::App;
use crate::control::format_time;
use crate::error::Result;
use crate::knowledge::status::UNFINISHED_JOBS_SQL;

/// When something deleted now is purged: now plus the configured grace period.
fn purge_after(app: &App) -> String {
    let days = i64::try_from(app.config.deletion_grace_days).unwrap_or(3650);
    format_time(app.identity.clock().now() + ChronoDuration::days(days))
}

/// Soft-deletes an org and its workspaces; with `purge`, removes their data at once.
pub fn delete_org(app: &App, org: Uuid, purge: bool) -> Result<()> {
    let workspaces = app.control.soft_delete_org(org, &purge_after(app))?;
    app.identity.invalidate_status();
    app.governance().invalidate_limits();
    for ws in &workspaces {
        // Closed now; its folder stays until the purge.
        app.registry.remove(*ws);
    }
    if purge {
        app.control
            .purge_now(Some(org), None, &app.identity.clock().now_text())?;
        purge_due(app);
    }
    tracing::info!(org_id = %org, workspaces = workspaces.len(), purge, "organization deleted");
    Ok(())
}

/// Soft-deletes a workspace; with `purge`, removes its data at once.
pub fn delete_workspace(app: &App, ws: Uuid, org: Uuid, purge: bool) -> Result<()> {
    app.control.soft_delete_workspace(ws, &purge_after(app))?;
    app.identity.invalidate_status();
    app.registry.remove(ws);
    super::freed(
        app,
        org,
        &[
            Counted::Workspaces,
            Counted::Documents,
            Counted::StorageBytes,
            Counted::ApiKeys,
        ],
    );
    if purge {
        app.control
            .purge_now(None, Some(ws), &app.identity.clock().now_text())?;
        purge_due(app);
    }
    tracing::info!(org_id = %org, workspace_id = %ws, purge, "workspace deleted");
    Ok(())
}

/// Requeues the unfinished jobs of restored workspaces (their scheduler markers went when the
/// workspace did).
fn resume_jobs(app: &App, org: Uuid, workspaces: &[Uuid]) {
    for ws in workspaces {
        let pending = app.open_workspace(*ws).and_then(|(_, h)| {
            let n: i64 = h.conn().query_row(
                &format!("SELECT count(*) FROM jobs WHERE status IN {UNFINISHED_JOBS_SQL}"),
                [],
                |r| r.get(0),
            )?;
            Ok(n)
        });
        match pending {
            Ok(0) => {}
            Ok(_) => {
                if let Err(e) = app.scheduler.mark(*ws) {
                    tracing::warn!(workspace_id = %ws, error = %e, "cannot mark restored jobs");
                }
                app.wake_scheduler(*ws, org);
            }
            Err(e) => tracing::warn!(workspace_id = %ws, error = %e, "cannot resume restored jobs"),
        }
    }
}

/// Restores a deleted org (and the workspaces deleted with it) before its purge. Quotas are not
/// checked: the operator restores what was there.
pub fn restore_org(app: &App, org: Uuid) -> Result<Vec<Uuid>> {
    let workspaces = app.control.restore_org(org)?;
    app.identity.invalidate_status();
    app.governance().invalidate_limits();
    super::freed(
        app,
        org,
        &[
            Counted::Workspaces,
            Counted::Documents,
            Counted::StorageBytes,
            Counted::ApiKeys,
        ],
    );
    resume_jobs(app, org, &workspaces);
    tracing::info!(org_id = %org, workspaces = workspaces.len(), "organization restored");
    Ok(workspaces)
}

/// Restores a deleted workspace of a live org before its purge.
pub fn restore_workspace(app: &App, ws: Uuid) -> Result<Uuid> {
    let org = app.control.restore_workspace(ws)?;
    app.identity.invalidate_status();
    super::freed(
        app,
        org,
        &[
            Counted::Workspaces,
            Counted::Documents,
            Counted::StorageBytes,
            Counted::ApiKeys,
        ],
    );
    resume_jobs(app, org, &[ws]);
    tracing::info!(org_id = %org, workspace_id = %ws, "workspace restored");
    Ok(org)
}

/// Purges what is due: the folders of workspaces past their grace period (through the trash),
/// then the orgs (their provider keys). Run by the background upkeep; returns how many
/// workspaces and orgs it purged.
pub fn purge_due(app: &App) -> (usize, usize) {
    let now = app.identity.clock().now_text();
    let mut purged = (0, 0);
    match app.control.workspaces_due_for_purge(&now) {
        Ok(ids) => {
            for ws in ids {
                app.remove_store(ws);
                match app.control.mark_workspace_purged(ws) {
                    Ok(()) => purged.0 += 1,
                    Err(e) => tracing::warn!(workspace_id = %ws, error = %e, "cannot record purge"),
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list workspaces due for purge"),
    }
    match app.control.orgs_due_for_purge(&now) {
        Ok(ids) => {
            for org in ids {
                match app.control.mark_org_purged(org) {
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
