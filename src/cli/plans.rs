//! `enclave plan ...` (plans in the control plane) and `enclave org suspend|reactivate|delete|
//! restore`. Plans are written to `control.db` directly (a running server sees them within
//! `governance::plans::LIMITS_TTL`). Lifecycle commands change what a running server's scheduler and
//! caches hold, so with `--server URL` (or when a server holds the data directory) they go
//! through its HTTP API with the operator token; otherwise they open the data directory.

use std::sync::Arc;

use clap::Subcommand;
use serde_json::Value;

use crate::app::App;
use crate::config::Config;
use crate::control::limits::{NewPlan, PlanPatch};
use crate::control::OrgStatus;

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// List the plans and their limits.
    List,
    /// Create a custom plan. Limits not given are unlimited.
    Create {
        /// The plan's id (a slug), what orgs name in `plan`.
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// Limits as a JSON object, e.g. '{"workspaces": 10, "documents": null}'.
        #[arg(long)]
        limits: Option<String>,
    },
    /// Change a plan's name or some of its limits (JSON object; null = unlimited).
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        limits: Option<String>,
    },
    /// Delete a custom plan that no org uses.
    Delete { id: String },
}

/// Where a lifecycle command is carried out.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// A running server's base URL: the command goes through its API (needed while a server
    /// holds the data directory, so its scheduler and caches see the change).
    #[arg(long, env = "ENCLAVE_SERVER")]
    pub server: Option<String>,
    /// The operator token for `--server` (default: ENCLAVE_ADMIN_TOKEN).
    #[arg(long, env = "ENCLAVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Suspend,
    Reactivate,
    Delete { purge: bool },
    Restore,
}

fn parse_json(text: Option<String>, what: &str) -> anyhow::Result<Option<Value>> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| anyhow::anyhow!("{what} is not valid JSON: {e}"))
    })
    .transpose()
}

pub fn run_plan(app: &Arc<App>, cmd: PlanCommand) -> anyhow::Result<Value> {
    Ok(match cmd {
        PlanCommand::List => serde_json::to_value(app.governance().list_plans()?)?,
        PlanCommand::Create { id, name, limits } => {
            let plan = app.governance().create_plan(NewPlan {
                id,
                name,
                limits: parse_json(limits, "--limits")?,
            })?;
            serde_json::to_value(plan)?
        }
        PlanCommand::Update { id, name, limits } => {
            let plan = app.governance().update_plan(
                &id,
                PlanPatch {
                    name,
                    limits: parse_json(limits, "--limits")?,
                },
            )?;
            serde_json::to_value(plan)?
        }
        PlanCommand::Delete { id } => {
            app.governance().delete_plan(&id)?;
            serde_json::json!({"deleted": id})
        }
    })
}

/// Whether a server (or another job-running process) holds the data directory.
fn data_dir_is_held(config: &Config) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(config.data_dir.join(crate::app::LOCK_FILE))
    {
        Ok(f) => match f.try_lock() {
            Ok(()) => false,
            Err(std::fs::TryLockError::WouldBlock) => true,
            Err(std::fs::TryLockError::Error(_)) => false,
        },
        Err(_) => false,
    }
}

/// Runs a lifecycle command on `org` (id or slug; an id for `restore`).
pub fn run_lifecycle(
    config: Config,
    org: &str,
    what: Lifecycle,
    remote: Remote,
) -> anyhow::Result<Value> {
    let server = match remote.server {
        Some(s) => Some(s),
        None if data_dir_is_held(&config) => Some(format!("http://{}", config.listen)),
        None => None,
    };
    if let Some(server) = server {
        let token = remote
            .token
            .or_else(|| config.admin_token.clone())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "a server holds the data directory: this goes through its API ({server}) \
                     and needs the operator token: set ENCLAVE_ADMIN_TOKEN or --token"
                )
            })?;
        let base = server.trim_end_matches('/');
        let (method, path) = match what {
            Lifecycle::Suspend => (reqwest::Method::POST, format!("/v1/orgs/{org}/suspend")),
            Lifecycle::Reactivate => (reqwest::Method::POST, format!("/v1/orgs/{org}/reactivate")),
            Lifecycle::Delete { purge } => (
                reqwest::Method::DELETE,
                format!("/v1/orgs/{org}{}", if purge { "?purge=true" } else { "" }),
            ),
            Lifecycle::Restore => (reqwest::Method::POST, format!("/v1/orgs/{org}/restore")),
        };
        let client = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        let mut req = client
            .request(method.clone(), format!("{base}{path}"))
            .bearer_auth(token);
        if method == reqwest::Method::POST {
            req = req.json(&serde_json::json!({}));
        }
        let resp = req.send()?;
        let status = resp.status();
        let text = resp.text()?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = body["error"]["message"]
                .as_str()
                .unwrap_or(&text)
                .to_string();
            anyhow::bail!("{server} answered {status}: {msg}");
        }
        return Ok(if body.is_null() {
            serde_json::json!({"org": org, "done": format!("{what:?}")})
        } else {
            body
        });
    }
    // No server: the data directory itself (taking its lock, as a job-running process would:
    // a reactivated org's jobs run at the next server start, which finds their markers).
    let (app, _) = App::open(config)?;
    let org_id;
    let out = match what {
        Lifecycle::Suspend | Lifecycle::Reactivate => {
            let access = app.identity().operator_org(org)?;
            org_id = Some(access.org_id());
            let status = if what == Lifecycle::Suspend {
                OrgStatus::Suspended
            } else {
                OrgStatus::Active
            };
            serde_json::to_value(app.tenancy().set_org_status(&access, status)?)?
        }
        Lifecycle::Delete { purge } => {
            let access = app.identity().operator_org(org)?;
            org_id = Some(access.org_id());
            app.tenancy().delete_org(&access, purge)?;
            serde_json::json!({"deleted": org, "purged": purge})
        }
        Lifecycle::Restore => {
            let id = crate::ids::parse_uuid(org, "organization")?;
            org_id = Some(id);
            let (_, ws) = app.tenancy().restore_org(id)?;
            serde_json::json!({"restored": id, "restored_workspaces": ws})
        }
    };
    super::audit_cli(&app, &format!("org {what:?}").to_lowercase(), org_id, None);
    app.shutdown();
    Ok(out)
}
