//! `enclave workspace export|import`: directly on the data directory (taking its lock, so with
//! no server running), or through a running server's HTTP API (`--server URL --token T`).

use std::path::PathBuf;

use clap::Args;

use crate::app::App;
use crate::config::Config;
use crate::durability::archive::{self, ImportOptions};

/// Where a command goes when a server holds the data directory.
#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// A running server's base URL (e.g. `http://127.0.0.1:7700`): the command goes through its
    /// HTTP API instead of opening the data directory.
    #[arg(long, env = "ENCLAVE_SERVER")]
    pub server: Option<String>,
    /// Bearer credential for `--server` (the operator token, or an org admin's session).
    #[arg(long, env = "ENCLAVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ServerArgs {
    /// The server's base URL and the credential, when `--server` is given.
    pub fn remote(&self) -> anyhow::Result<Option<(String, String)>> {
        let Some(server) = &self.server else {
            return Ok(None);
        };
        let server = server.trim_end_matches('/').to_string();
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            anyhow::bail!("--server must be an http:// or https:// URL, not {server:?}");
        }
        let token = self
            .token
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--server needs --token (or ENCLAVE_TOKEN)"))?;
        Ok(Some((server, token)))
    }
}

/// A blocking client without a total timeout (archives and backups take their time).
pub fn client() -> anyhow::Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .timeout(None)
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()?)
}

/// The server's error message from an answer that is not a success.
pub fn refused(r: reqwest::blocking::Response) -> anyhow::Error {
    let status = r.status();
    let body = r.text().unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or(body);
    anyhow::anyhow!("the server answered {status}: {msg}")
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The workspace's id.
    pub workspace: String,
    /// The archive file to write (`-`: standard output).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The organization (id or slug) that gets the workspace.
    #[arg(long)]
    pub org: String,
    /// The archive file.
    pub archive: PathBuf,
    /// Name of the new workspace (default: the archived one's).
    #[arg(long)]
    pub name: Option<String>,
    /// Slug of the new workspace (default: the archived one's).
    #[arg(long)]
    pub slug: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

fn output(path: &PathBuf) -> anyhow::Result<Box<dyn std::io::Write>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdout().lock()));
    }
    Ok(Box::new(std::fs::File::create(path).map_err(|e| {
        anyhow::anyhow!("cannot write {}: {e}", path.display())
    })?))
}

pub fn export(config: Config, args: ExportArgs) -> anyhow::Result<()> {
    let id = crate::ids::parse_uuid(&args.workspace, "workspace")?;
    if let Some((server, token)) = args.server.remote()? {
        let mut r = client()?
            .get(format!("{server}/v1/workspaces/{id}/export"))
            .bearer_auth(token)
            .send()
            .map_err(|e| anyhow::anyhow!("cannot reach the server at {server}: {e}"))?;
        if !r.status().is_success() {
            return Err(refused(r));
        }
        let mut out = output(&args.out)?;
        let n = r.copy_to(&mut out)?;
        out.flush()?;
        eprintln!("exported workspace {id}: {n} bytes");
        return Ok(());
    }
    let (app, _) = App::open(config)?;
    // Tiered storage: an offloaded workspace is downloaded to be exported.
    let _tier = crate::durability::tier::for_command(&app)?;
    let ctx = app.identity().operator_workspace(id)?;
    let prepared = archive::export(&app, &ctx)?;
    let mut out = std::io::BufWriter::new(output(&args.out)?);
    prepared.write_tar(&mut out)?;
    std::io::Write::flush(&mut out)?;
    super::audit_cli(&app, "workspace export", None, Some(id));
    eprintln!(
        "exported workspace {id}: {} documents, {} chunks, {} vectors, {} blobs",
        prepared.manifest.counts.get("documents").unwrap_or(&0),
        prepared.manifest.counts.get("chunks").unwrap_or(&0),
        prepared.manifest.counts.get("vectors").unwrap_or(&0),
        prepared.manifest.blobs.count
    );
    app.shutdown();
    Ok(())
}

use std::io::Write as _;

pub fn import(config: Config, args: ImportArgs) -> anyhow::Result<()> {
    if let Some((server, token)) = args.server.remote()? {
        let file = std::fs::File::open(&args.archive)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.archive.display()))?;
        let mut query = vec![];
        if let Some(n) = &args.name {
            query.push(("name", n.clone()));
        }
        if let Some(s) = &args.slug {
            query.push(("slug", s.clone()));
        }
        let r = client()?
            .post(format!("{server}/v1/orgs/{}/workspaces/import", args.org))
            .query(&query)
            .bearer_auth(token)
            .header("content-type", "application/x-tar")
            .body(reqwest::blocking::Body::from(file))
            .send()
            .map_err(|e| anyhow::anyhow!("cannot reach the server at {server}: {e}"))?;
        if !r.status().is_success() {
            return Err(refused(r));
        }
        let v: serde_json::Value = r.json()?;
        return super::print_json(&v);
    }
    let (app, _) = App::open(config)?;
    let access = app.identity().operator_org(&args.org)?;
    let rec = archive::import(
        &app,
        &access,
        &args.archive,
        ImportOptions {
            name: args.name,
            slug: args.slug,
        },
    )?;
    super::audit_cli(&app, "workspace import", Some(rec.org_id), Some(rec.id));
    app.shutdown();
    super::print_json(&rec)
}
