//! The command line: `serve`, `org`, `workspace`, `user`, `key` and `bench`. Management commands work on the
//! data directory directly (no server needed).

pub mod archive;
pub mod backup;
pub mod eval;
pub mod governance;
pub mod ingest;
mod plans;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::app::App;
use crate::config::{Config, ConfigArgs, LogFormat};
use crate::control::{AdminTokenSource, NewOrg, NewWorkspace, Page};
use crate::identity::{NewApiKey, Role, WorkspaceAccess};

#[derive(Debug, Parser)]
#[command(
    name = "enclave",
    version,
    about = "Self-hosted multi-tenant knowledge base and agent platform"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the server.
    Serve,
    /// Manage organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Manage workspaces.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage workspace API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage plans and their limits.
    #[command(subcommand)]
    Plan(plans::PlanCommand),
    /// Ingest files and folders into a workspace (skips files already ingested unchanged).
    Ingest(ingest::IngestArgs),
    /// Evaluate retrieval quality on a BEIR-format folder (nDCG@10, recall@100 per mode).
    Eval(crate::cli::eval::EvalArgs),
    /// Back up the data directory (or one workspace) to a folder or S3; `backup verify`,
    /// `backup list`.
    Backup(backup::BackupArgs),
    /// Restore a backup into an empty data directory, or one workspace into a running server.
    Restore(backup::RestoreArgs),
    /// Run a benchmark and print its report.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// Audit trails: verify their hash chains.
    #[command(subcommand)]
    Audit(crate::cli::governance::AuditCommand),
    /// Metered usage: export it as CSV or JSON.
    #[command(subcommand)]
    Usage(crate::cli::governance::UsageCommand),
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        slug: Option<String>,
        #[arg(long)]
        plan: Option<String>,
    },
    /// List organizations.
    List,
    /// Suspend an organization: its credentials get 403 tenant_suspended, its jobs pause.
    Suspend {
        org: String,
        #[command(flatten)]
        remote: plans::Remote,
    },
    /// Reactivate a suspended organization; its paused jobs resume.
    Reactivate {
        org: String,
        #[command(flatten)]
        remote: plans::Remote,
    },
    /// Delete an organization (kept for the grace period, restorable; --purge: at once).
    Delete {
        org: String,
        #[arg(long)]
        purge: bool,
        #[command(flatten)]
        remote: plans::Remote,
    },
    /// Restore a deleted organization (by id) and the workspaces deleted with it.
    Restore {
        org: String,
        #[command(flatten)]
        remote: plans::Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace in an organization (id or slug).
    Create {
        #[arg(long)]
        org: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        slug: Option<String>,
    },
    /// List the workspaces of an organization.
    List {
        #[arg(long)]
        org: String,
    },
    /// Delete a workspace and its folder.
    Delete { id: String },
    /// Write a workspace's archive (documents, chunks, vectors, agents, chats, audit, blobs).
    Export(archive::ExportArgs),
    /// Create a workspace from an archive.
    Import(archive::ImportArgs),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user, optionally as a member of an organization.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "")]
        name: String,
        /// The password (prefer --password-stdin: arguments show in process lists).
        #[arg(long, conflicts_with = "password_stdin")]
        password: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Organization (id or slug) to add the user to.
        #[arg(long, requires = "role")]
        org: Option<String>,
        /// Role in that organization: owner, admin, member or viewer.
        #[arg(long, requires = "org")]
        role: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key for a workspace; prints the key once.
    Create {
        #[arg(long)]
        workspace: String,
        /// Comma-separated: search, chat, ingest, manage.
        #[arg(long)]
        scopes: String,
        #[arg(long, default_value = "cli")]
        name: String,
        /// RFC 3339 expiry time.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List the API keys of a workspace (never their secrets).
    List {
        #[arg(long)]
        workspace: String,
    },
    /// Revoke an API key, effective at once.
    Revoke { id: String },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ENCLAVE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::resolve(&cli.config)?;
    match cli.command {
        Command::Serve => serve(config),
        Command::Bench(cmd) => crate::bench::run(cmd, &cli.config),
        Command::Eval(args) => crate::cli::eval::run(args),
        Command::Ingest(args) => ingest::run(config, args),
        Command::Backup(args) => backup::run_backup(config, args),
        Command::Restore(args) => backup::run_restore(config, args),
        Command::Audit(cmd) => governance::audit(open_app(config)?, cmd),
        Command::Usage(cmd) => governance::usage(open_app(config)?, cmd),
        Command::Plan(cmd) => {
            let app = open_app(config)?;
            let out = plans::run_plan(&app, cmd)?;
            audit_cli(&app, "plan", None, None);
            print_json(&out)
        }
        Command::Org(
            cmd @ (OrgCommand::Suspend { .. }
            | OrgCommand::Reactivate { .. }
            | OrgCommand::Delete { .. }
            | OrgCommand::Restore { .. }),
        ) => {
            use plans::Lifecycle;
            let (org, what, remote) = match cmd {
                OrgCommand::Suspend { org, remote } => (org, Lifecycle::Suspend, remote),
                OrgCommand::Reactivate { org, remote } => (org, Lifecycle::Reactivate, remote),
                OrgCommand::Delete { org, purge, remote } => {
                    (org, Lifecycle::Delete { purge }, remote)
                }
                OrgCommand::Restore { org, remote } => (org, Lifecycle::Restore, remote),
                _ => anyhow::bail!("not a lifecycle command"),
            };
            let out = plans::run_lifecycle(config, &org, what, remote)?;
            print_json(&out)
        }
        Command::Org(cmd) => {
            let app = open_app(config)?;
            match cmd {
                OrgCommand::Create { name, slug, plan } => {
                    let org = app.tenancy().create_org(NewOrg {
                        name,
                        slug,
                        plan,
                        settings: None,
                        owner_email: None,
                    })?;
                    audit_cli(&app, "org create", Some(org.id), None);
                    print_json(&org)
                }
                OrgCommand::List => print_json(&app.tenancy().list_orgs(Page {
                    limit: crate::control::MAX_PAGE,
                    offset: 0,
                })?),
                _ => anyhow::bail!("handled above"),
            }
        }
        Command::User(UserCommand::Create {
            email,
            name,
            password,
            password_stdin,
            org,
            role,
        }) => {
            let password = match (password, password_stdin) {
                (Some(p), _) => p,
                (None, true) => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
                (None, false) => anyhow::bail!("give --password-stdin (or --password)"),
            };
            let role = role.map(|r| Role::parse(&r)).transpose()?;
            let app = open_app(config)?;
            let membership = org.as_deref().zip(role);
            let user = app
                .identity()
                .create_user(&email, &name, &password, membership)?;
            audit_cli(
                &app,
                "user create",
                membership
                    .and_then(|(o, _)| app.identity().operator_org(o).ok())
                    .map(|o| o.org_id()),
                None,
            );
            print_json(&user)
        }
        Command::Key(cmd) => {
            let app = open_app(config)?;
            match cmd {
                KeyCommand::Create {
                    workspace,
                    scopes,
                    name,
                    expires_at,
                } => {
                    let access = operator_access(&app, &workspace)?;
                    let new = NewApiKey {
                        name,
                        scopes: scopes.split(',').map(|s| s.trim().to_string()).collect(),
                        expires_at,
                    };
                    let (key, secret) = app.identity().create_api_key(&access, new)?;
                    audit_cli(
                        &app,
                        "key create",
                        Some(access.org_id()),
                        Some(access.workspace_id()),
                    );
                    let mut v = serde_json::to_value(&key)?;
                    v["key"] = serde_json::json!(secret);
                    print_json(&v)
                }
                KeyCommand::List { workspace } => {
                    let access = operator_access(&app, &workspace)?;
                    print_json(&app.identity().list_api_keys(&access)?)
                }
                KeyCommand::Revoke { id } => {
                    let id = crate::ids::parse_uuid(&id, "API key")?;
                    let ws = app.control_plane().workspace_of_key(id)?;
                    let access = operator_access(&app, &ws.to_string())?;
                    app.identity().revoke_api_key(&access, id)?;
                    audit_cli(
                        &app,
                        "key revoke",
                        Some(access.org_id()),
                        Some(access.workspace_id()),
                    );
                    println!("revoked API key {id}");
                    Ok(())
                }
            }
        }
        Command::Workspace(WorkspaceCommand::Export(args)) => archive::export(config, args),
        Command::Workspace(WorkspaceCommand::Import(args)) => archive::import(config, args),
        Command::Workspace(cmd) => {
            let app = open_app(config)?;
            match cmd {
                WorkspaceCommand::Create { org, name, slug } => {
                    let org = app.identity().operator_org(&org)?;
                    let ws = app.tenancy().create_workspace(
                        &org,
                        NewWorkspace {
                            name,
                            slug,
                            settings: None,
                        },
                    )?;
                    audit_cli(&app, "workspace create", Some(ws.org_id), Some(ws.id));
                    print_json(&ws)
                }
                WorkspaceCommand::List { org } => print_json(&app.tenancy().list_workspaces(
                    &app.identity().operator_org(&org)?,
                    Page {
                        limit: crate::control::MAX_PAGE,
                        offset: 0,
                    },
                )?),
                WorkspaceCommand::Delete { id } => {
                    let access = operator_access(&app, &id)?;
                    let id = access.workspace_id();
                    app.tenancy().delete_workspace(&access, false)?;
                    audit_cli(&app, "workspace delete", None, Some(id));
                    println!("deleted workspace {id}");
                    Ok(())
                }
                WorkspaceCommand::Export(_) | WorkspaceCommand::Import(_) => {
                    anyhow::bail!("export and import are handled above")
                }
            }
        }
    }
}

/// The command line acts as the operator on a workspace.
fn operator_access(app: &App, workspace: &str) -> anyhow::Result<WorkspaceAccess> {
    let id = crate::ids::parse_uuid(workspace, "workspace")?;
    Ok(app.identity().operator_workspace(id)?)
}

/// Records a management command in the operator audit log.
fn audit_cli(
    app: &App,
    action: &str,
    org_id: Option<uuid::Uuid>,
    workspace_id: Option<uuid::Uuid>,
) {
    app.governance()
        .record_cli(crate::governance::audit::Entry {
            actor: "cli".into(),
            action: action.into(),
            org_id,
            workspace_id,
            ..Default::default()
        });
}

/// Opens the app for a management command (beside a server, if one runs on the data dir); a
/// generated operator token is shown once here too.
fn open_app(config: Config) -> anyhow::Result<Arc<App>> {
    let (app, source) = App::open_for_management(config)?;
    announce_token(&source);
    Ok(app)
}

pub(crate) fn announce_token(source: &AdminTokenSource) {
    if let AdminTokenSource::Generated(token) = source {
        println!(
            "Generated the operator token. It is shown only this once; keep it safe \
             (or set ENCLAVE_ADMIN_TOKEN):\n\n    {token}\n"
        );
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(config.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listen = config.listen;
        let (app, source) = tokio::task::spawn_blocking(move || App::open(config)).await??;
        announce_token(&source);
        let listener = crate::server::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        tracing::info!(
            address = %listener.local_addr()?,
            data_dir = %app.data_dir().display(),
            max_open_workspaces = app.config().max_open_workspaces,
            "enclave is listening"
        );
        crate::server::serve(app, listener, crate::server::shutdown_signal()).await?;
        Ok(())
    })
}
