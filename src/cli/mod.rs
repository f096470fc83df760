//! The command line: `serve`, `org`, `workspace`, `user`, `key` and `bench`. Management commands work on the
//! data directory directly (no server needed).

pub mod archive;
pub mod backup;
mod documents;
pub mod eval;
pub mod governance;
pub mod ingest;
mod plans;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::app::App;
use crate::config::{Config, ConfigArgs, GlobalArgs, LogFormat};
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
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the server (its options: flags, ENCLAVE_* variables or the configuration file).
    Serve(Box<ConfigArgs>),
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
        /// Display name.
        #[arg(long)]
        name: String,
        /// URL-safe short name (lowercase letters, digits, dashes) [default: from the name].
        #[arg(long)]
        slug: Option<String>,
        /// Plan id (`enclave plan list`) [default: free].
        #[arg(long)]
        plan: Option<String>,
    },
    /// List organizations.
    List,
    /// Suspend an organization: its credentials get 403 tenant_suspended, its jobs pause.
    Suspend {
        /// Organization id or slug.
        org: String,
        #[command(flatten)]
        remote: plans::Remote,
    },
    /// Reactivate a suspended organization; its paused jobs resume.
    Reactivate {
        /// Organization id or slug.
        org: String,
        #[command(flatten)]
        remote: plans::Remote,
    },
    /// Delete an organization (kept for the grace period, restorable; --purge: at once).
    Delete {
        /// Organization id or slug.
        org: String,
        /// Delete its data at once instead of keeping it restorable for the grace period.
        #[arg(long)]
        purge: bool,
        #[command(flatten)]
        remote: plans::Remote,
    },
    /// Restore a deleted organization (by id) and the workspaces deleted with it.
    Restore {
        /// Organization id (deleted orgs give up their slug).
        org: String,
        #[command(flatten)]
        remote: plans::Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace in an organization (id or slug).
    Create {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// URL-safe short name, unique in the org [default: from the name].
        #[arg(long)]
        slug: Option<String>,
    },
    /// List the workspaces of an organization.
    List {
        /// Organization id or slug.
        #[arg(long)]
        org: String,
    },
    /// Delete a workspace and its folder.
    Delete {
        /// Workspace id or `org/workspace` slugs.
        #[arg(value_name = "WORKSPACE")]
        id: String,
    },
    /// Write a workspace's archive (documents, chunks, vectors, agents, chats, audit, blobs).
    Export(archive::ExportArgs),
    /// Create a workspace from an archive.
    Import(archive::ImportArgs),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user, optionally as a member of an organization.
    Create {
        /// Login email address.
        #[arg(long)]
        email: String,
        /// Display name.
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
        /// Workspace id or `org/workspace` slugs.
        #[arg(long)]
        workspace: String,
        /// Comma-separated: search, chat, ingest, manage.
        #[arg(long)]
        scopes: String,
        /// A name to recognize the key by in listings.
        #[arg(long, default_value = "cli")]
        name: String,
        /// RFC 3339 expiry time.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List the API keys of a workspace (never their secrets).
    List {
        /// Workspace id or `org/workspace` slugs.
        #[arg(long)]
        workspace: String,
    },
    /// Revoke an API key: effective at once (a running server drops its cached key within 5 s).
    Revoke {
        /// The key's id (from `key list`).
        id: String,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_) | Command::Bench(_)) {
        quiet_on_broken_pipe();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `enclave key list | head`: when the reader of standard output goes away, end quietly as
/// command-line tools do (the default action of SIGPIPE), instead of failing a print. Not for
/// `serve` and `bench`, whose sockets must see EPIPE as an error (Rust ignores SIGPIPE).
fn quiet_on_broken_pipe() {
    // SAFETY: restores the default disposition of one signal before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
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
        // Colour only for a terminal: a file or a log collector gets plain text.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let args = ConfigArgs::for_command(
        &cli.global,
        match &cli.command {
            Command::Serve(a) => Some(a.as_ref()),
            _ => None,
        },
    )?;
    let config = Config::resolve(&args)?;
    match cli.command {
        Command::Serve(_) => serve(config),
        Command::Bench(cmd) => crate::bench::run(cmd, &args),
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

/// The command line acts as the operator on a workspace (its id or `org/workspace` slugs).
fn operator_access(app: &App, workspace: &str) -> anyhow::Result<WorkspaceAccess> {
    let id = resolve_workspace(app, workspace)?;
    Ok(app.identity().operator_workspace(id)?)
}

/// A workspace named on the command line: its id, or `org/workspace` (the org's id or slug,
/// then the workspace's slug).
pub(crate) fn resolve_workspace(app: &App, workspace: &str) -> anyhow::Result<uuid::Uuid> {
    match workspace.split_once('/') {
        Some((org, slug)) => {
            let found = app
                .identity()
                .operator_org(org.trim())
                .and_then(|org| app.tenancy().workspace_by_slug(&org, slug.trim()));
            found.map(|ws| ws.id).map_err(|e| {
                anyhow::anyhow!("workspace {workspace:?} (as org/workspace slugs): {e}")
            })
        }
        None => crate::ids::parse_uuid(workspace, "workspace (give its id or org/workspace)")
            .map_err(Into::into),
    }
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

/// The generated operator token, once: a framed block on standard error (where the logs go,
/// so it is seen in order with them, but never mistaken for a log line), not a log event.
pub(crate) fn announce_token(source: &AdminTokenSource) {
    if let AdminTokenSource::Generated(token) = source {
        eprint!("{}", token_block(token));
    }
}

fn token_block(token: &str) -> String {
    let lines = [
        "Generated the operator token. It is shown only this once:".to_string(),
        "keep it safe, or set ENCLAVE_ADMIN_TOKEN to choose your own.".to_string(),
        String::new(),
        format!("    {token}"),
    ];
    let width = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let rule = format!("+{}+", "-".repeat(width + 2));
    let mut out = format!("\n{rule}\n");
    for l in &lines {
        out.push_str(&format!("| {l:<width$} |\n"));
    }
    out.push_str(&rule);
    out.push_str("\n\n");
    out
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
            https = app.config().tls.is_some(),
            data_dir = %app.data_dir().display(),
            max_open_workspaces = app.config().max_open_workspaces,
            "enclave is listening"
        );
        crate::server::serve(app, listener, crate::server::shutdown_signal()).await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every flag and argument of every subcommand, with the path of commands leading to it.
    fn all_args(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for a in cmd.get_arguments() {
            out.push((path.to_string(), a.clone()));
        }
        for sub in cmd.get_subcommands() {
            all_args(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn the_command_line_is_well_formed_and_every_flag_is_described() {
        let mut cmd = Cli::command();
        cmd.build();
        cmd.clone().debug_assert();
        let mut args = Vec::new();
        all_args(&cmd, "enclave", &mut args);
        let undescribed: Vec<String> = args
            .iter()
            .filter(|(_, a)| !matches!(a.get_id().as_str(), "help" | "version"))
            .filter(|(_, a)| a.get_help().is_none_or(|h| h.to_string().trim().is_empty()))
            .map(|(p, a)| format!("{p} --{}", a.get_id()))
            .collect();
        assert!(
            undescribed.is_empty(),
            "flags without a description: {undescribed:#?}"
        );
    }

    #[test]
    fn only_serve_shows_the_server_flags() {
        let cmd = Cli::command();
        let help = |name: &str| {
            let mut sub = cmd
                .find_subcommand(name)
                .unwrap_or_else(|| panic!("no {name} command"))
                .clone();
            sub.render_long_help().to_string()
        };
        assert!(help("serve").contains("--listen"));
        assert!(help("serve").contains("--tls-cert"));
        for name in ["org", "workspace", "key", "user", "ingest"] {
            let h = help(name);
            assert!(
                !h.contains("--listen"),
                "{name} --help shows --listen:\n{h}"
            );
            assert!(!h.contains("--max-connections"), "{name}: {h}");
        }
    }
}
