//! The command line: `serve`, `org`, `workspace` and `bench`. Management commands work on the
//! data directory directly (no server needed).

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::app::App;
use crate::config::{Config, ConfigArgs, LogFormat};
use crate::control::{AdminTokenSource, NewOrg, NewWorkspace, Page};

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
    /// Ingest files and folders into a workspace (skips files already ingested unchanged).
    Ingest(crate::knowledge::ingest_cli::IngestArgs),
    /// Evaluate retrieval quality on a BEIR-format folder (nDCG@10, recall@100 per mode).
    Eval(crate::knowledge::eval::EvalArgs),
    /// Run a benchmark and print its report.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
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
        Command::Eval(args) => crate::knowledge::eval::run(args),
        Command::Ingest(args) => {
            let app = open_app(config)?;
            crate::knowledge::ingest_cli::run(&app, args)
        }
        Command::Org(cmd) => {
            let app = open_app(config)?;
            match cmd {
                OrgCommand::Create { name, slug, plan } => print_json(&app.create_org(NewOrg {
                    name,
                    slug,
                    plan,
                    settings: None,
                })?),
                OrgCommand::List => print_json(&app.list_orgs(Page {
                    limit: crate::control::MAX_PAGE,
                    offset: 0,
                })?),
            }
        }
        Command::Workspace(cmd) => {
            let app = open_app(config)?;
            match cmd {
                WorkspaceCommand::Create { org, name, slug } => print_json(&app.create_workspace(
                    &org,
                    NewWorkspace {
                        name,
                        slug,
                        settings: None,
                    },
                )?),
                WorkspaceCommand::List { org } => print_json(&app.list_workspaces(
                    &org,
                    Page {
                        limit: crate::control::MAX_PAGE,
                        offset: 0,
                    },
                )?),
                WorkspaceCommand::Delete { id } => {
                    let id = crate::ids::parse_uuid(&id, "workspace")?;
                    app.delete_workspace(id)?;
                    println!("deleted workspace {id}");
                    Ok(())
                }
            }
        }
    }
}

/// Opens the app for a management command; a generated operator token is shown once here too.
fn open_app(config: Config) -> anyhow::Result<Arc<App>> {
    let (app, source) = App::open(config)?;
    announce_token(&source);
    Ok(app)
}

fn announce_token(source: &AdminTokenSource) {
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
            max_open_workspaces = app.config.max_open_workspaces,
            "enclave is listening"
        );
        crate::server::serve(app, listener, crate::server::shutdown_signal()).await?;
        Ok(())
    })
}
