//! [`Identity`], the identity service: authentication (the hot path), the verified tenant
//! contexts, users and sessions, members and invitations, API keys and tenant tokens (the
//! audit trail is `crate::governance`'s). It owns the control plane's identity tables (through the shared
//! [`ControlPlane`]) and identity's in-memory state (status cache, key usage, login throttle,
//! signing keys, clock). HTTP handlers and CLI commands call these; nothing here knows of HTTP.
//!
//! One file per concern: `access` (authentication, the hot path; the verified contexts
//! [`OrgAccess`] and [`WorkspaceAccess`], built by `workspace_access` and `org_access`),
//! `sessions` (users, login and sessions, `me`), `members` (members and invitations), `keys`
//! (API keys and tenant tokens).
//!

mod access;
mod keys;
mod members;
mod quota;
mod sessions;

use std::sync::Arc;

use crate::clock::Clock;
use crate::control::ControlPlane;
use crate::error::Result;
use crate::identity::IdentityState;

pub use access::{OrgAccess, WorkspaceAccess};
pub use keys::{MintedToken, NewApiKey, NewTenantToken};
pub use quota::{Seat, SeatHold, SeatQuota};
pub use sessions::{LoginResult, OrgWithRole};

/// The identity service. Private fields: reach it through `App::identity`.
pub struct Identity {
    control: Arc<ControlPlane>,
    state: IdentityState,
    /// SHA-256 of the operator token (none when no token is set).
    operator_digest: Option<[u8; 32]>,
    /// The org plans' quota of members and API keys (governance's, set by `App`).
    quota: quota::QuotaSlot,
}

impl Identity {
    /// Loads the operator token's digest and the tenant-token signing keys.
    pub fn new(control: Arc<ControlPlane>) -> Result<Identity> {
        let operator_digest = control.operator_token_digest()?;
        let state = IdentityState::default();
        state.set_signing_keys(control.signing_keys()?);
        Ok(Identity {
            control,
            state,
            operator_digest,
            quota: Default::default(),
        })
    }

    /// Wires the quota that members and API keys are checked against (once; `App` does it
    /// after building governance over this identity, hence weak).
    pub fn set_quota(&self, quota: std::sync::Weak<dyn SeatQuota>) {
        self.quota.set(quota);
    }

    /// Identity's in-memory state (status cache, key usage, throttle, signing keys).
    pub fn state(&self) -> &IdentityState {
        &self.state
    }

    /// "Now" for every expiry of a credential.
    pub fn clock(&self) -> &Clock {
        self.state.clock()
    }

    /// Forgets every cached workspace/org status: called on any status change.
    pub fn invalidate_status(&self) {
        self.state.invalidate_status()
    }

    /// Whether `presented` is the operator token (constant-time comparison).
    pub fn is_operator_token(&self, presented: &str) -> bool {
        self.operator_digest
            .as_ref()
            .is_some_and(|d| crate::control::operator_token_matches(d, presented))
    }
}

/// The `App`s, workspaces and keys the unit tests of these files start from.
#[cfg(test)]
mod fixtures {
    use std::sync::Arc;

    use uuid::Uuid;

    use super::NewApiKey;
    use crate::app::App;
    use crate::config::Config;
    use crate::control::{NewOrg, NewWorkspace};
    use crate::identity::Principal;

    pub(super) fn app() -> (tempfile::TempDir, Arc<App>) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut config = Config::for_data_dir(tmp.path());
        config.admin_token = Some("operator-token-for-unit-tests".into());
        let (app, _) = App::open(config).expect("open");
        (tmp, app)
    }

    pub(super) fn workspace(app: &App, slug: &str) -> (Uuid, Uuid) {
        let org = app
            .tenancy()
            .create_org(NewOrg {
                name: slug.into(),
                ..Default::default()
            })
            .expect("org");
        let ws = app
            .tenancy()
            .create_workspace(
                &app.identity().operator_org(&org.slug).expect("op"),
                NewWorkspace {
                    name: "w".into(),
                    ..Default::default()
                },
            )
            .expect("ws");
        (org.id, ws.id)
    }

    pub(super) fn key(app: &App, ws: Uuid, scopes: &[&str]) -> String {
        let op = app
            .identity()
            .workspace_access(&Principal::Operator, Some(ws), None)
            .expect("op");
        app.identity()
            .create_api_key(
                &op,
                NewApiKey {
                    name: "k".into(),
                    scopes: scopes.iter().map(|s| s.to_string()).collect(),
                    expires_at: None,
                },
            )
            .expect("key")
            .1
    }
}
