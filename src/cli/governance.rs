//! `enclave audit verify` and `enclave usage export`: on the data directory, beside a running
//! server or not (a server's usage reaches `control.db` within `USAGE_FLUSH`, 5 s).

use std::sync::Arc;

use clap::Subcommand;

use crate::app::App;
use crate::control::Page;
use crate::governance::{audit::Verification, usage};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the control plane's audit chain, one workspace's (`--workspace`), or every
    /// workspace's too (`--all`). Exits 1 at the first break, naming the entry.
    Verify {
        #[arg(long, conflicts_with = "all")]
        workspace: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Print metered usage (what the server has flushed) as CSV or JSON.
    Export {
        /// An organization (id or slug); every org without it.
        #[arg(long)]
        org: Option<String>,
        /// First day (YYYY-MM-DD) or month (YYYY-MM); default: the first of `to`'s month.
        #[arg(long)]
        from: Option<String>,
        /// Last day (YYYY-MM-DD) or month (YYYY-MM), included; default: today.
        #[arg(long)]
        to: Option<String>,
        /// day or month.
        #[arg(long, default_value = "day")]
        granularity: String,
        /// One workspace (id).
        #[arg(long)]
        workspace: Option<String>,
        /// One row per workspace instead of per org.
        #[arg(long)]
        by_workspace: bool,
        /// csv or json.
        #[arg(long, default_value = "csv")]
        format: String,
    },
}

fn report_line(what: &str, v: &Verification) -> String {
    let head = v
        .head
        .as_ref()
        .map(|(id, h)| format!(", head entry {id} {h}"))
        .unwrap_or_default();
    let unchained = if v.unchained > 0 {
        format!(", {} older entries without a hash", v.unchained)
    } else {
        String::new()
    };
    match &v.problem {
        None => format!("{what}: ok, {} entries{unchained}{head}", v.entries),
        Some(p) => format!("{what}: BROKEN at entry {}: {}", p.entry_id, p.message),
    }
}

pub fn audit(app: Arc<App>, cmd: AuditCommand) -> anyhow::Result<()> {
    let AuditCommand::Verify { workspace, all } = cmd;
    let mut targets: Vec<Option<uuid::Uuid>> = Vec::new();
    match workspace {
        Some(w) => targets.push(Some(crate::ids::parse_uuid(&w, "workspace")?)),
        None => {
            targets.push(None);
            if all {
                let mut offset = 0;
                loop {
                    let control = app.control_plane();
                    let orgs = control.list_orgs(Page {
                        limit: crate::control::MAX_PAGE,
                        offset,
                    })?;
                    for org in &orgs {
                        let mut ws_offset = 0;
                        loop {
                            let list = control.list_workspaces(
                                org.id,
                                Page {
                                    limit: crate::control::MAX_PAGE,
                                    offset: ws_offset,
                                },
                            )?;
                            targets.extend(list.iter().map(|w| Some(w.id)));
                            if list.len() < crate::control::MAX_PAGE as usize {
                                break;
                            }
                            ws_offset += crate::control::MAX_PAGE;
                        }
                    }
                    if orgs.len() < crate::control::MAX_PAGE as usize {
                        break;
                    }
                    offset += crate::control::MAX_PAGE;
                }
            }
        }
    }
    let mut broken = 0;
    for t in targets {
        let what = match t {
            None => "control plane".to_string(),
            Some(w) => format!("workspace {w}"),
        };
        let v = app.governance().verify(t)?;
        println!("{}", report_line(&what, &v));
        if !v.ok() {
            broken += 1;
        }
    }
    if broken > 0 {
        anyhow::bail!("{broken} audit chain(s) failed verification");
    }
    Ok(())
}

pub fn usage(app: Arc<App>, cmd: UsageCommand) -> anyhow::Result<()> {
    let UsageCommand::Export {
        org,
        from,
        to,
        granularity,
        workspace,
        by_workspace,
        format,
    } = cmd;
    let mut q = usage::Query::parse(
        from.as_deref(),
        to.as_deref(),
        Some(&granularity),
        app.governance().today(),
    )?;
    q.workspace = workspace
        .map(|w| crate::ids::parse_uuid(&w, "workspace"))
        .transpose()?;
    q.by_workspace = by_workspace;
    let rows = app.governance().operator_usage(org.as_deref(), q.clone())?;
    match format.as_str() {
        "csv" => print!("{}", usage::to_csv(&rows)),
        "json" => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "from": q.from, "to": q.to, "granularity": q.granularity, "data": rows
            }))?
        ),
        other => anyhow::bail!("--format must be csv or json, not {other:?}"),
    }
    Ok(())
}
