//! `enclave backup`, `enclave backup verify|list`, `enclave restore`
//! (`durability::backup`). Without a running server they open the data directory (taking its
//! lock); while a server holds it, `--server URL --token OPERATOR_TOKEN` sends the work to it.

use clap::{Args, Subcommand};

use super::archive::{client, refused, ServerArgs};
use crate::app::App;
use crate::config::Config;
use crate::durability::backup::{self, RestoreAs};
use crate::durability::objstore::Target;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub command: Option<BackupCommand>,
    /// Where to: a folder, or s3://bucket/prefix (AWS_* environment variables for credentials).
    #[arg(long)]
    pub to: Option<String>,
    /// Back up this workspace only.
    #[arg(long)]
    pub workspace: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Check every object of a backup (SHA-256) and open every database.
    Verify {
        /// The backup target: a folder, or s3://bucket/prefix.
        #[arg(long)]
        from: String,
        /// The backup's id (default: the newest).
        #[arg(long)]
        backup: Option<String>,
    },
    /// List the backups at a target, oldest first.
    List {
        /// The backup target: a folder, or s3://bucket/prefix.
        #[arg(long)]
        from: String,
    },
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A folder, or s3://bucket/prefix.
    #[arg(long)]
    pub from: String,
    /// The backup's id (default: the newest).
    #[arg(long)]
    pub backup: Option<String>,
    /// Restore this workspace only, into a data directory in use (a server's, with --server):
    /// over the live workspace of that id, or as a new workspace.
    #[arg(long)]
    pub workspace: Option<String>,
    /// With --workspace, when it is not live here: the org (id or slug) that gets it.
    #[arg(long, requires = "workspace")]
    pub org: Option<String>,
    /// With --workspace, when it is not live here: its slug.
    #[arg(long, requires = "workspace")]
    pub slug: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

fn open_locked(config: Config) -> anyhow::Result<std::sync::Arc<App>> {
    match App::open(config) {
        Ok((app, _)) => Ok(app),
        Err(crate::Error::Conflict(m)) => anyhow::bail!(
            "{m}\n(a server runs on this data directory: pass --server URL --token OPERATOR_TOKEN)"
        ),
        Err(e) => Err(e.into()),
    }
}

pub fn run_backup(config: Config, args: BackupArgs) -> anyhow::Result<()> {
    let rt = runtime()?;
    match args.command {
        Some(BackupCommand::Verify { from, backup }) => {
            let target = Target::open(&from, rt.handle().clone())?;
            let scratch = std::env::temp_dir()
                .join(format!("enclave-verify-{}", crate::ids::new_id().simple()));
            let r = backup::verify(&target, backup.as_deref(), &scratch);
            let _ = std::fs::remove_dir_all(&scratch);
            let r = r?;
            super::print_json(&r)?;
            if !r.problems.is_empty() {
                anyhow::bail!("backup {} has {} problem(s)", r.backup, r.problems.len());
            }
            return Ok(());
        }
        Some(BackupCommand::List { from }) => {
            let target = Target::open(&from, rt.handle().clone())?;
            for id in backup::list(&target)? {
                println!("{id}");
            }
            return Ok(());
        }
        None => {}
    }
    let to = args
        .to
        .ok_or_else(|| anyhow::anyhow!("give --to PATH|s3://bucket/prefix"))?;
    if let Some((server, token)) = args.server.remote()? {
        let r = client()?
            .post(format!("{server}/v1/admin/backups"))
            .bearer_auth(token)
            .json(&serde_json::json!({"to": to, "workspace": args.workspace}))
            .send()
            .map_err(|e| anyhow::anyhow!("cannot reach the server at {server}: {e}"))?;
        if !r.status().is_success() {
            return Err(refused(r));
        }
        let v: serde_json::Value = r.json()?;
        super::print_json(&v)?;
        if v["failed"].as_object().is_some_and(|f| !f.is_empty()) {
            anyhow::bail!("some workspaces were not backed up");
        }
        return Ok(());
    }
    let only = args
        .workspace
        .as_deref()
        .map(|w| crate::ids::parse_uuid(w, "workspace"))
        .transpose()?;
    let app = open_locked(config)?;
    // Tiered storage: offloaded workspaces are downloaded to be read or replaced.
    let _tier = crate::durability::tier::install(&app, rt.handle().clone())?;
    let target = Target::open(&to, rt.handle().clone())?;
    let report = backup::backup(&app, &target, only);
    if report.is_ok() {
        super::audit_cli(&app, "backup", None, only);
    }
    app.shutdown();
    let report = report?;
    super::print_json(&report)?;
    if !report.failed.is_empty() {
        anyhow::bail!("some workspaces were not backed up");
    }
    Ok(())
}

pub fn run_restore(config: Config, args: RestoreArgs) -> anyhow::Result<()> {
    let rt = runtime()?;
    let Some(ws) = args.workspace else {
        if args.server.server.is_some() {
            anyhow::bail!(
                "a whole backup is restored into an empty data directory (no server); \
                 give --workspace to restore one workspace through a server"
            );
        }
        let target = Target::open(&args.from, rt.handle().clone())?;
        // Nobody may run on the directory while it is filled.
        let lock_dir = config.data_dir.clone();
        crate::perms::create_dir_all(&lock_dir)?;
        let r = backup::restore_data_dir(&target, args.backup.as_deref(), &lock_dir)?;
        return super::print_json(&r);
    };
    if let Some((server, token)) = args.server.remote()? {
        let r = client()?
            .post(format!("{server}/v1/admin/restore"))
            .bearer_auth(token)
            .json(&serde_json::json!({
                "from": args.from, "backup": args.backup, "workspace": ws,
                "org": args.org, "slug": args.slug,
            }))
            .send()
            .map_err(|e| anyhow::anyhow!("cannot reach the server at {server}: {e}"))?;
        if !r.status().is_success() {
            return Err(refused(r));
        }
        let v: serde_json::Value = r.json()?;
        return super::print_json(&v);
    }
    let ws = crate::ids::parse_uuid(&ws, "workspace")?;
    let app = open_locked(config)?;
    // Tiered storage: offloaded workspaces are downloaded to be read or replaced.
    let _tier = crate::durability::tier::install(&app, rt.handle().clone())?;
    let target = Target::open(&args.from, rt.handle().clone())?;
    let rec = backup::restore_workspace(
        &app,
        &target,
        args.backup.as_deref(),
        ws,
        RestoreAs {
            org: args.org,
            slug: args.slug,
        },
    );
    if let Ok(rec) = &rec {
        super::audit_cli(&app, "restore", Some(rec.org_id), Some(rec.id));
    }
    app.shutdown();
    super::print_json(&rec?)
}
