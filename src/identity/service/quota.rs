//! What identity asks of an org's plan before it adds a seat or an API key: the narrow trait
//! governance's quotas implement (`governance::Governance`), wired by `App` after both exist
//! (governance is built over identity, so identity holds it weakly and late). Without one (an
//! `Identity` built alone, in unit tests) nothing is limited.

use std::sync::{OnceLock, Weak};

use uuid::Uuid;

use crate::error::Result;

/// A resource of identity's that an org's plan limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seat {
    /// A member, or an open invitation (it holds a seat).
    Member,
    /// An API key of one of the org's workspaces.
    ApiKey,
}

/// Room for one more seat or key, held until `commit` (the row exists) or given back when
/// dropped (the operation failed).
pub trait SeatHold: Send {
    fn commit(self: Box<Self>);
}

/// The check-and-hold of identity's counted resources (`429 quota_exceeded` when full; the
/// refusal is counted by the implementation).
pub trait SeatQuota: Send + Sync {
    fn hold(&self, org: Uuid, workspace: Option<Uuid>, what: Seat) -> Result<Box<dyn SeatHold>>;
}

/// Identity's slot for the quota (set once by `App`).
#[derive(Default)]
pub(super) struct QuotaSlot(OnceLock<Weak<dyn SeatQuota>>);

impl QuotaSlot {
    pub(super) fn set(&self, quota: Weak<dyn SeatQuota>) {
        let _ = self.0.set(quota);
    }

    /// Holds room for one `what`; `None` when no quota is wired (or it is gone).
    pub(super) fn hold(
        &self,
        org: Uuid,
        workspace: Option<Uuid>,
        what: Seat,
    ) -> Result<Option<Box<dyn SeatHold>>> {
        match self.0.get().and_then(Weak::upgrade) {
            Some(q) => q.hold(org, workspace, what).map(Some),
            None => Ok(None),
        }
    }
}
