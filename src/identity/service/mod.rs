//! The identity operations of [`App`]: authentication (the hot path), tenant access checks,
//! users and sessions, members and invitations, API keys and tenant tokens. HTTP handlers and
//! CLI commands call these; nothing here knows of HTTP.
//!
//! One file per concern: `access` (authentication, the hot path; the verified contexts
//! [`OrgAccess`] and [`WorkspaceAccess`], built by `workspace_access` and `org_access`),
//! `sessions` (users, login and sessions, `me`), `members` (members and invitations), `keys`
//! (API keys and tenant tokens), `audit` (the operator audit log).
//!
//! [`App`]: crate::app::App

mod access;
mod audit;
mod keys;
mod members;
mod sessions;

pub use access::{OrgAccess, WorkspaceAccess};
pub use keys::{MintedToken, NewApiKey, NewTenantToken};
pub use sessions::{LoginResult, OrgWithRole};

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
            .create_org(NewOrg {
                name: slug.into(),
                ..Default::default()
            })
            .expect("org");
        let ws = app
            .create_workspace(
                &org.slug,
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
            .workspace_access(&Principal::Operator, Some(ws), None)
            .expect("op");
        app.create_api_key(
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
