//! Plans: the scheduler weight (`priority`) of an org's plan.

use rusqlite::OptionalExtension;
use uuid::Uuid;

use super::ControlPlane;
use crate::error::Result;

impl ControlPlane {
    /// The priority of the plan of `org_id` (1 when unknown).
    pub fn org_priority(&self, org_id: Uuid) -> Result<f64> {
        let p: Option<i64> = self
            .conn()
            .query_row(
                "SELECT p.priority FROM orgs o JOIN plans p ON p.id = o.plan WHERE o.id = ?1",
                [org_id.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(p.unwrap_or(1).max(1) as f64)
    }
}
