//! `enclave ingest --workspace WS PATH…`: walks files and folders and adds every file (its
//! absolute path is its `external_id`, so a changed file replaces its previous version and an
//! unchanged one is skipped), follows the jobs with a progress bar and prints a summary with the
//! failures and their reasons. Two targets, one flow: the data directory itself (the same code
//! path as the API; the server must be stopped, the data directory's lock says so), or a running
//! server through its HTTP API (`--server URL --token CREDENTIAL`).

use crate::identity::WorkspaceAccess;
use crate::knowledge::IngestPermit;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::error::Error;
use crate::knowledge::service::DocumentInput;
use crate::knowledge::status::JobStatus;

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Workspace id.
    #[arg(long)]
    pub workspace: String,
    /// Files or folders (walked recursively; hidden entries are skipped).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Send the files to the running server at this base URL (e.g. `http://127.0.0.1:7700`)
    /// instead of opening the data directory.
    #[arg(long, env = "ENCLAVE_SERVER")]
    pub server: Option<String>,
    /// Bearer credential for `--server`: an API key with the `ingest` scope, a user's session
    /// token, or the operator token.
    #[arg(long, env = "ENCLAVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

fn walk(roots: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = roots.iter().rev().cloned().collect();
    while let Some(p) = stack.pop() {
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.') && n != "." && n != "..");
        if hidden && !roots.contains(&p) {
            continue;
        }
        if p.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                let mut children: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
                children.sort();
                stack.extend(children.into_iter().rev());
            }
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

/// Whether a job with this status (as the API writes it) has yet to end.
fn pending(status: &str) -> bool {
    JobStatus::parse(status).is_some_and(JobStatus::is_unfinished)
}

/// How a job that ended did: `Err(reason)` unless it succeeded.
fn ended(status: &str, error: Option<&str>) -> Result<(), String> {
    match (JobStatus::parse(status), error) {
        (Some(JobStatus::Succeeded), _) => Ok(()),
        (_, Some(e)) => Err(e.to_string()),
        (_, None) => Err(format!("job {status}")),
    }
}

/// Why a file was not added: its own fault, or one that every file would meet (a refused
/// credential, a workspace out of reach), which ends the run.
enum AddError {
    File(String),
    Fatal(String),
}

/// Where the files go: the data directory, or a running server.
trait Target {
    /// Adds one file: `Ok(Some(job))` when it is new or changed, `Ok(None)` when unchanged.
    fn add(&mut self, path: &Path, bytes: Vec<u8>) -> Result<Option<String>, AddError>;
    /// Until every job has ended; `progress` is told how many have.
    fn wait(&mut self, jobs: &[(PathBuf, String)], progress: &mut dyn FnMut(u64));
    /// How a job ended: `Err(reason)` unless it succeeded.
    fn outcome(&mut self, job: &str) -> Result<(), String>;
}

/// The data directory, through the same code path as the API; this process runs the jobs.
struct Local {
    app: Arc<App>,
    /// The operator's context of the workspace (the command line acts as the operator).
    ctx: WorkspaceAccess,
    permit: IngestPermit,
}

impl Target for Local {
    fn add(&mut self, path: &Path, bytes: Vec<u8>) -> Result<Option<String>, AddError> {
        let added = self
            .app
            .knowledge()
            .add_document(
                &self.permit,
                DocumentInput {
                    bytes,
                    file_name: path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .map(str::to_string),
                    external_id: Some(path.display().to_string()),
                    ..Default::default()
                },
            )
            .map_err(|e| AddError::File(e.to_string()))?;
        Ok(if added.duplicate { None } else { added.job_id })
    }

    fn wait(&mut self, jobs: &[(PathBuf, String)], progress: &mut dyn FnMut(u64)) {
        let (app, ctx) = (self.app.clone(), self.ctx.clone());
        let mut ticks = 0u32;
        self.app.knowledge().run_jobs_until_idle(|| {
            ticks += 1;
            if ticks.is_multiple_of(8) {
                let done = jobs
                    .iter()
                    .filter(|(_, j)| {
                        app.knowledge()
                            .get_job(&ctx, j)
                            .is_ok_and(|v| !v.status.is_unfinished())
                    })
                    .count();
                progress(done as u64);
            }
        });
    }

    fn outcome(&mut self, job: &str) -> Result<(), String> {
        let v = self
            .app
            .knowledge()
            .get_job(&self.ctx, job)
            .map_err(|e| e.to_string())?;
        ended(v.status.as_str(), v.error.as_deref())
    }
}

/// A running server, through its HTTP API.
struct Remote {
    client: reqwest::blocking::Client,
    /// `{server}/v1/workspaces/{ws}`.
    base: String,
    token: String,
    /// Jobs that ended: their status and error.
    ended: std::collections::HashMap<String, (String, Option<String>)>,
}

/// How often `Remote::wait` asks for the jobs' status.
const POLL: Duration = Duration::from_millis(250);

/// Rounds without an answer (`POLL` apart, ~1 minute) before the jobs still pending are given up.
const SILENT_ROUNDS: u32 = 240;

impl Remote {
    fn new(server: &str, ws: uuid::Uuid, token: String) -> anyhow::Result<Remote> {
        let server = server.trim_end_matches('/');
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            anyhow::bail!("--server must be an http:// or https:// URL, not {server:?}");
        }
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()?;
        let health = client
            .get(format!("{server}/healthz"))
            .send()
            .map_err(|e| anyhow::anyhow!("cannot reach the server at {server}: {e}"))?;
        if !health.status().is_success() {
            anyhow::bail!(
                "no Enclave server answers at {server} (GET /healthz: HTTP {}); give its base URL, e.g. http://127.0.0.1:7700",
                health.status().as_u16()
            );
        }
        let remote = Remote {
            client,
            base: format!("{server}/v1/workspaces/{ws}"),
            token,
            ended: Default::default(),
        };
        // A refusal every file would meet (the credential, the workspace) is asked once, before
        // any upload: an upload refused before its body was sent may reach the client as a
        // broken connection rather than as the server's answer.
        let r = remote
            .client
            .get(format!("{}/documents?limit=1", remote.base))
            .bearer_auth(&remote.token)
            .send();
        match Self::answer(r) {
            Err((Some(401 | 403 | 404), msg)) => anyhow::bail!("the server refused: {msg}"),
            Err((None, msg)) => anyhow::bail!("{msg}"),
            _ => {}
        }
        Ok(remote)
    }

    /// The body of a successful answer, or the server's error message and status.
    fn answer(
        r: reqwest::Result<reqwest::blocking::Response>,
    ) -> Result<(u16, serde_json::Value), (Option<u16>, String)> {
        let r = r.map_err(|e| (None, format!("the server did not answer: {e}")))?;
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().unwrap_or(serde_json::Value::Null);
        if status >= 400 {
            let msg = body["error"]["message"].as_str().unwrap_or("no message");
            return Err((Some(status), format!("{msg} (HTTP {status})")));
        }
        Ok((status, body))
    }

    /// A job's status and error; `Err((None, _))` when the server did not answer.
    fn job(&self, job: &str) -> Result<(String, Option<String>), (Option<u16>, String)> {
        let r = self
            .client
            .get(format!("{}/jobs/{job}", self.base))
            .bearer_auth(&self.token)
            .send();
        let (_, body) = Self::answer(r)?;
        let status = body["status"].as_str().unwrap_or("unknown").to_string();
        Ok((status, body["error"].as_str().map(str::to_string)))
    }
}

impl Target for Remote {
    fn add(&mut self, path: &Path, bytes: Vec<u8>) -> Result<Option<String>, AddError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("file")
            .to_string();
        let form = reqwest::blocking::multipart::Form::new()
            .part(
                "file",
                reqwest::blocking::multipart::Part::bytes(bytes).file_name(name),
            )
            .text("external_id", path.display().to_string());
        let r = self
            .client
            .post(format!("{}/documents", self.base))
            .bearer_auth(&self.token)
            .multipart(form)
            .send();
        let (status, body) = Self::answer(r).map_err(|(status, msg)| match status {
            Some(401 | 403 | 404) => AddError::Fatal(format!("the server refused: {msg}")),
            _ => AddError::File(msg),
        })?;
        if status == 200 || body["duplicate"] == serde_json::Value::Bool(true) {
            return Ok(None);
        }
        match body["job_id"].as_str() {
            Some(j) => Ok(Some(j.to_string())),
            None => Err(AddError::File(format!(
                "the server answered {status} without a job: {body}"
            ))),
        }
    }

    fn wait(&mut self, jobs: &[(PathBuf, String)], progress: &mut dyn FnMut(u64)) {
        // Rounds in a row in which the server did not answer (a restart is waited out).
        let mut silent = 0u32;
        loop {
            // A workspace's jobs run about in order: each round asks from the first job not seen
            // to end up to the first still pending, so a round costs a request per job that
            // ended since, plus one (not one per pending job).
            for (_, j) in jobs {
                if self.ended.contains_key(j) {
                    continue;
                }
                match self.job(j) {
                    Ok((status, _)) if pending(&status) => {
                        silent = 0;
                        break;
                    }
                    Ok(ended) => {
                        silent = 0;
                        self.ended.insert(j.clone(), ended);
                    }
                    Err((None, _)) if silent < SILENT_ROUNDS => {
                        silent += 1;
                        break;
                    }
                    Err((_, e)) => {
                        self.ended.insert(j.clone(), ("unknown".into(), Some(e)));
                    }
                }
            }
            progress(self.ended.len() as u64);
            if jobs.iter().all(|(_, j)| self.ended.contains_key(j)) {
                return;
            }
            std::thread::sleep(POLL);
        }
    }

    fn outcome(&mut self, job: &str) -> Result<(), String> {
        match self.ended.get(job) {
            Some((status, error)) => ended(status, error.as_deref()),
            None => Err("the job's end was not seen".into()),
        }
    }
}

/// Runs `enclave ingest`: into the data directory (`config`), or to `--server`.
pub fn run(config: crate::config::Config, args: IngestArgs) -> anyhow::Result<()> {
    let ws = crate::ids::parse_uuid(&args.workspace, "workspace")?;
    if let Some(server) = &args.server {
        let token = args.token.clone().ok_or_else(|| {
            anyhow::anyhow!("--server needs a credential: --token (or ENCLAVE_TOKEN)")
        })?;
        let mut remote = Remote::new(server, ws, token)?;
        return ingest(&mut remote, &args);
    }
    let (app, source) = App::open(config).map_err(|e| match e {
        Error::Conflict(m) => anyhow::anyhow!(
            "{m}\n(to send the files to that server: enclave ingest --server URL --token CREDENTIAL ...)"
        ),
        e => e.into(),
    })?;
    super::announce_token(&source);
    let ctx = app.identity().operator_workspace(ws)?;
    app.tenancy().get_workspace(&ctx)?;
    let permit = app.knowledge().ingest_permit(&ctx)?;
    let mut local = Local {
        app: app.clone(),
        ctx,
        permit,
    };
    let result = ingest(&mut local, &args);
    app.shutdown();
    result
}

fn ingest(target: &mut dyn Target, args: &IngestArgs) -> anyhow::Result<()> {
    let files = walk(&args.paths);
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:10} [{bar:40}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("queueing");
    let (mut added, mut unchanged) = (0usize, 0usize);
    let mut failures: Vec<(PathBuf, String)> = Vec::new();
    let mut jobs: Vec<(PathBuf, String)> = Vec::new();
    for path in &files {
        bar.inc(1);
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        let result = std::fs::read(&abs)
            .map_err(|e| AddError::File(e.to_string()))
            .and_then(|bytes| target.add(&abs, bytes));
        match result {
            Ok(None) => unchanged += 1,
            Ok(Some(job)) => {
                added += 1;
                jobs.push((path.clone(), job));
            }
            Err(AddError::File(e)) => failures.push((path.clone(), e)),
            Err(AddError::Fatal(e)) => {
                bar.finish_and_clear();
                anyhow::bail!("{e}");
            }
        }
    }
    bar.finish_and_clear();
    let total = jobs.len() as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:10} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("indexing");
    target.wait(&jobs, &mut |done| bar.set_position(done));
    bar.set_position(total);
    bar.finish_and_clear();
    let mut failed_jobs = 0;
    for (path, j) in &jobs {
        if let Err(why) = target.outcome(j) {
            failed_jobs += 1;
            failures.push((path.clone(), why));
        }
    }
    println!(
        "{} {}: {} added or updated, {} unchanged, {} failed",
        files.len(),
        if files.len() == 1 { "file" } else { "files" },
        added - failed_jobs,
        unchanged,
        failures.len()
    );
    for (p, why) in &failures {
        println!("  failed: {}: {why}", display(p));
    }
    // Scripts see partial failure in the exit status (the summary above says which files).
    if !failures.is_empty() {
        anyhow::bail!("{} of {} files failed", failures.len(), files.len());
    }
    Ok(())
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
