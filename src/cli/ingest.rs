//! `enclave ingest --workspace WS PATH…`: walks files and folders and adds every document (which
//! files are documents, the ignore files and the globs: [`super::documents`]; its absolute path
//! is its `external_id`, so a changed file replaces its previous version and an unchanged one is
//! skipped), follows the jobs through their phases (extracted, searchable by full text,
//! embedded) with rate and ETA, and prints a summary with what was skipped by kind and the
//! failures and their reasons. Two targets, one flow: the data directory itself (the same code
//! path as the API; the server must be stopped, the data directory's lock says so), or a running
//! server through its HTTP API (`--server URL --token CREDENTIAL`).

use crate::identity::WorkspaceAccess;
use crate::knowledge::IngestPermit;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::error::Error;
use crate::knowledge::bulk::{BatchItem, ItemStatus};
use crate::knowledge::extract::Format;
use crate::knowledge::service::DocumentInput;
use crate::knowledge::status::{JobPhase, JobStatus};

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Workspace id or `org/workspace` slugs (with `--server` and an API key: default, the
    /// key's workspace).
    #[arg(long)]
    pub workspace: Option<String>,
    /// Files or folders (walked recursively; hidden entries and what `.gitignore`, `.ignore`
    /// and `.enclaveignore` files name are left out; files that are not documents are skipped).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Only files matching this glob (repeatable): `*.md` matches a name at any depth,
    /// `guide/**/*.html` a path relative to the folder given.
    #[arg(long = "include", value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out files and folders matching this glob (repeatable; same syntax as --include).
    #[arg(long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Send the files to the running server at this base URL (e.g. `http://127.0.0.1:7700`)
    /// instead of opening the data directory.
    #[arg(long, env = "ENCLAVE_SERVER")]
    pub server: Option<String>,
    /// Bearer credential for `--server`: an API key with the `ingest` scope, a user's session
    /// token, or the operator token.
    #[arg(long, env = "ENCLAVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Whether a job with this status (as the API writes it) has yet to end.
fn pending_status(status: &str) -> bool {
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

/// Jobs asked for per page while following their phases.
const JOB_PAGE: u32 = 1000;

/// How far a run's jobs are: how many were extracted (chunks written), are searchable by full
/// text, have ended (embedded, or failed), and how many failed.
#[derive(Debug, Default, Clone, Copy)]
struct Phases {
    extracted: u64,
    searchable: u64,
    ended: u64,
    failed: u64,
}

impl Phases {
    fn count(&mut self, status: JobStatus, phase: JobPhase) {
        let unfinished = status.is_unfinished();
        if !unfinished {
            self.ended += 1;
        }
        if matches!(status, JobStatus::Failed | JobStatus::Cancelled) {
            self.failed += 1;
            return;
        }
        if !unfinished || phase != JobPhase::Queued {
            self.extracted += 1;
        }
        if !unfinished || matches!(phase, JobPhase::Embedding | JobPhase::Done) {
            self.searchable += 1;
        }
    }
}

/// Why a file was not added: its own fault, or one that every file would meet (a refused
/// credential, a workspace out of reach), which ends the run.
enum AddError {
    File(String),
    Fatal(String),
}

/// A text file sent in a batch: its path (its `external_id`), its text and its type.
struct TextFile {
    path: PathBuf,
    shown: PathBuf,
    text: String,
    format: Format,
}

/// What became of a batch's file: `Ok(Some(job))` added (its embedding job), `Ok(None)`
/// unchanged or added with nothing left to wait for.
type BatchResult = Result<Vec<Option<String>>, BatchError>;

/// Why a batch was refused (batches are atomic: nothing of it was stored).
enum BatchError {
    /// Because of the file at this index: the others are sent again without it.
    Item(usize, String),
    /// As a whole (a quota, the server's limits): every file of it failed so.
    Whole(String),
    /// As every request would be: the run ends.
    Fatal(String),
}

/// Text files up to this size go in batches (larger ones one request each, extracted by the
/// server's jobs).
const BATCH_FILE_MAX: usize = 256 << 10;
/// Most files in one batch.
const BATCH_FILES: usize = 200;
/// Most text in one batch (bytes; JSON escaping may double it, the server takes 32 MiB).
const BATCH_BYTES: usize = 4 << 20;

/// The file's text and type when it goes in a batch: plain text, Markdown or HTML (as the
/// server would detect them from its name and first bytes), valid UTF-8, not empty and at most
/// [`BATCH_FILE_MAX`] bytes.
fn batchable(path: &Path, bytes: Vec<u8>) -> Result<(String, Format), Vec<u8>> {
    let name = path.file_name().and_then(|n| n.to_str());
    let head = &bytes[..bytes.len().min(512)];
    match Format::detect(None, name, head) {
        Some(f @ (Format::Text | Format::Markdown | Format::Html))
            if bytes.len() <= BATCH_FILE_MAX && !bytes.iter().all(u8::is_ascii_whitespace) =>
        {
            String::from_utf8(bytes)
                .map(|t| (t, f))
                .map_err(|e| e.into_bytes())
        }
        _ => Err(bytes),
    }
}

/// Where the files go: the data directory, or a running server.
trait Target {
    /// Adds one file: `Ok(Some(job))` when it is new or changed, `Ok(None)` when unchanged.
    fn add(&mut self, path: &Path, bytes: Vec<u8>) -> Result<Option<String>, AddError>;
    /// Adds text files in one batch (atomic): each one's job, or `None` when unchanged.
    fn add_batch(&mut self, files: &[TextFile]) -> BatchResult;
    /// Until every job has ended; `progress` is told how far they are.
    fn wait(&mut self, jobs: &[(PathBuf, String)], progress: &mut dyn FnMut(Phases));
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

    fn add_batch(&mut self, files: &[TextFile]) -> BatchResult {
        let inputs = files.iter().map(|f| f.input()).collect();
        match self.app.knowledge().add_documents(&self.permit, inputs) {
            Ok(added) => Ok(added.items.into_iter().map(outcome).collect()),
            Err(Error::BatchItem { index, error }) => {
                Err(BatchError::Item(index, error.to_string()))
            }
            Err(e) => Err(BatchError::Whole(e.to_string())),
        }
    }

    fn wait(&mut self, jobs: &[(PathBuf, String)], progress: &mut dyn FnMut(Phases)) {
        let (app, ctx) = (self.app.clone(), self.ctx.clone());
        let ours: HashSet<&str> = jobs.iter().map(|(_, j)| j.as_str()).collect();
        let mut ticks = 0u32;
        self.app.knowledge().run_jobs_until_idle(|| {
            ticks += 1;
            if ticks.is_multiple_of(8) {
                // Newest first: this run's jobs are the first pages.
                let mut phases = Phases::default();
                let mut seen = 0;
                let mut offset = 0u32;
                while seen < ours.len() {
                    let Ok(page) = crate::control::Page::new(Some(JOB_PAGE), Some(offset)) else {
                        break;
                    };
                    let Ok(list) = app.knowledge().list_jobs(&ctx, page) else {
                        break;
                    };
                    for v in list.iter().filter(|v| ours.contains(v.id.as_str())) {
                        seen += 1;
                        phases.count(v.status, v.phase);
                    }
                    if list.len() < JOB_PAGE as usize {
                        break;
                    }
                    offset += JOB_PAGE;
                }
                progress(phases);
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
    ended: HashMap<String, (String, Option<String>)>,
}

/// How often `Remote::wait` asks for the jobs' status.
const POLL: Duration = Duration::from_millis(250);

/// Rounds without an answer (`POLL` apart, ~1 minute) before the jobs still pending are given up.
const SILENT_ROUNDS: u32 = 240;

impl Remote {
    fn new(server: &str, ws: Option<&str>, token: String) -> anyhow::Result<Remote> {
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
        let base = match ws {
            // Routes without `{ws}` take the workspace from the API key (or tenant token).
            None => format!("{server}/v1"),
            Some(w) => match w.split_once('/') {
                Some((org, slug)) => {
                    let r = client
                        .get(format!("{server}/v1/orgs/{org}/workspaces/{slug}"))
                        .bearer_auth(&token)
                        .send();
                    let (_, ws) = Self::answer(r)
                        .map_err(|(_, msg)| anyhow::anyhow!("workspace {w}: {msg}"))?;
                    let id = ws["id"].as_str().unwrap_or_default();
                    format!("{server}/v1/workspaces/{id}")
                }
                None => {
                    let id = crate::ids::parse_uuid(w, "workspace (give its id or org/workspace)")?;
                    format!("{server}/v1/workspaces/{id}")
                }
            },
        };
        let remote = Remote {
            client,
            base,
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
            Err((Some(400 | 401 | 403 | 404), msg)) => anyhow::bail!("the server refused: {msg}"),
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

impl TextFile {
    fn input(&self) -> DocumentInput {
        DocumentInput {
            bytes: self.text.clone().into_bytes(),
            content_type: Some(self.format.mime().to_string()),
            file_name: self.name(),
            external_id: Some(self.path.display().to_string()),
            is_text: true,
            ..Default::default()
        }
    }

    fn name(&self) -> Option<String> {
        self.path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
    }
}

/// A batch item's job to wait for: none when it was unchanged.
fn outcome(item: BatchItem) -> Option<String> {
    match item.status {
        ItemStatus::Unchanged => None,
        ItemStatus::Created | ItemStatus::Updated => item.job_id,
    }
}

/// A batch item as the server answers it (what the command reads of it).
#[derive(serde::Deserialize)]
struct RemoteItem {
    status: String,
    job_id: Option<String>,
}

impl Target for Remote {
    fn add_batch(&mut self, files: &[TextFile]) -> BatchResult {
        let body: Vec<serde_json::Value> = files
            .iter()
            .map(|f| {
                serde_json::json!({
                    "text": f.text,
                    "content_type": f.format.mime(),
                    "source_name": f.name(),
                    "external_id": f.path.display().to_string(),
                })
            })
            .collect();
        let r = self
            .client
            .post(format!("{}/documents/batch", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send();
        let r = r.map_err(|e| BatchError::Whole(format!("the server did not answer: {e}")))?;
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().unwrap_or(serde_json::Value::Null);
        if status >= 400 {
            let msg = body["error"]["message"].as_str().unwrap_or("no message");
            let msg = format!("{msg} (HTTP {status})");
            return Err(match (status, body["error"]["index"].as_u64()) {
                (401 | 403 | 404, _) => BatchError::Fatal(format!("the server refused: {msg}")),
                (_, Some(i)) => BatchError::Item(usize::try_from(i).unwrap_or(usize::MAX), msg),
                _ => BatchError::Whole(msg),
            });
        }
        let items: Vec<RemoteItem> =
            serde_json::from_value(body["items"].clone()).map_err(|e| {
                BatchError::Whole(format!("the server's answer is not a batch result: {e}"))
            })?;
        if items.len() != files.len() {
            return Err(BatchError::Whole(format!(
                "the server answered {} results for {} files",
                items.len(),
                files.len()
            )));
        }
        Ok(items
            .into_iter()
            .map(|i| i.job_id.filter(|_| i.status != "unchanged"))
            .collect())
    }

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

    fn wait(&mut self, jobs: &[(PathBuf, String)], progress: &mut dyn FnMut(Phases)) {
        // Rounds in a row in which the server did not answer (a restart is waited out).
        let mut silent = 0u32;
        loop {
            // The jobs' list, newest first (this run's jobs are its first pages): one request
            // per thousand jobs a round, not one per job; the phases of those still pending.
            let pending: HashSet<&str> = jobs
                .iter()
                .map(|(_, j)| j.as_str())
                .filter(|j| !self.ended.contains_key(*j))
                .collect();
            let mut phases: HashMap<String, (JobStatus, JobPhase)> = HashMap::new();
            let mut offset = 0usize;
            let mut answered = true;
            while phases.len() < pending.len() && offset <= jobs.len() + JOB_PAGE as usize {
                let r = self
                    .client
                    .get(format!(
                        "{}/jobs?limit={JOB_PAGE}&offset={offset}",
                        self.base
                    ))
                    .bearer_auth(&self.token)
                    .send();
                let list = match Self::answer(r) {
                    Ok((_, body)) => body["data"].as_array().cloned().unwrap_or_default(),
                    Err(_) => {
                        answered = false;
                        break;
                    }
                };
                for v in &list {
                    let Some(id) = v["id"].as_str().filter(|id| pending.contains(id)) else {
                        continue;
                    };
                    let status = v["status"].as_str().unwrap_or("unknown");
                    match JobStatus::parse(status) {
                        Some(s) if s.is_unfinished() => {
                            let phase = v["phase"]
                                .as_str()
                                .and_then(JobPhase::parse)
                                .unwrap_or(JobPhase::Queued);
                            phases.insert(id.to_string(), (s, phase));
                        }
                        _ => {
                            let error = v["error"].as_str().map(str::to_string);
                            self.ended
                                .insert(id.to_string(), (status.to_string(), error));
                        }
                    }
                }
                if list.len() < JOB_PAGE as usize {
                    break;
                }
                offset += JOB_PAGE as usize;
            }
            if answered {
                silent = 0;
                // A job the list did not show (more jobs were added meanwhile): asked alone.
                let unseen: Vec<String> = pending
                    .iter()
                    .filter(|j| !phases.contains_key(**j) && !self.ended.contains_key(**j))
                    .map(|j| j.to_string())
                    .collect();
                for j in &unseen {
                    match self.job(j) {
                        Ok((status, error)) if !pending_status(&status) => {
                            self.ended.insert(j.clone(), (status, error));
                        }
                        Ok(_) | Err((None, _)) => {}
                        Err((_, e)) => {
                            self.ended.insert(j.clone(), ("unknown".into(), Some(e)));
                        }
                    }
                }
            } else if silent < SILENT_ROUNDS {
                silent += 1;
            } else {
                for j in &pending {
                    self.ended.entry(j.to_string()).or_insert((
                        "unknown".into(),
                        Some("the server stopped answering".into()),
                    ));
                }
            }
            let mut counted = Phases::default();
            for (status, _) in self.ended.values() {
                let s = JobStatus::parse(status).unwrap_or(JobStatus::Failed);
                counted.count(s, JobPhase::Done);
            }
            for (s, p) in phases.values() {
                counted.count(*s, *p);
            }
            progress(counted);
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
    if let Some(server) = &args.server {
        let token = args.token.clone().ok_or_else(|| {
            anyhow::anyhow!("--server needs a credential: --token (or ENCLAVE_TOKEN)")
        })?;
        let mut remote = Remote::new(server, args.workspace.as_deref(), token)?;
        return ingest(&mut remote, &args);
    }
    let (app, source) = App::open(config).map_err(|e| match e {
        Error::Conflict(m) => anyhow::anyhow!(
            "{m}\n(to send the files to that server: enclave ingest --server URL --token CREDENTIAL ...)"
        ),
        e => e.into(),
    })?;
    super::announce_token(&source);
    // Tiered storage: an offloaded workspace is downloaded before it is written.
    let _tier = crate::durability::tier::for_command(&app)?;
    let ws = args
        .workspace
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("give --workspace (its id or org/workspace)"))?;
    let ctx = app
        .identity()
        .operator_workspace(super::resolve_workspace(&app, ws)?)?;
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
    let globs = super::documents::Globs::new(&args.include, &args.exclude)?;
    let selection = super::documents::select(&args.paths, &globs);
    let files = &selection.documents;
    let seen = files.len() + selection.skipped_count() + selection.unreadable.len();
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:10} [{bar:40}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("sending");
    let mut sent = Sent {
        failures: selection.unreadable.clone(),
        ..Default::default()
    };
    // Text files go in batches (one request, one transaction for many); others one by one.
    let mut batch: Vec<TextFile> = Vec::new();
    let mut batch_bytes = 0usize;
    for path in files {
        bar.inc(1);
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        let bytes = match std::fs::read(&abs) {
            Ok(b) => b,
            Err(e) => {
                sent.failures.push((path.clone(), e.to_string()));
                continue;
            }
        };
        let result = match batchable(&abs, bytes) {
            Ok((text, format)) => {
                batch_bytes += text.len();
                batch.push(TextFile {
                    path: abs,
                    shown: path.clone(),
                    text,
                    format,
                });
                if batch.len() >= BATCH_FILES || batch_bytes >= BATCH_BYTES {
                    batch_bytes = 0;
                    send_batch(target, std::mem::take(&mut batch), &mut sent)
                } else {
                    Ok(())
                }
            }
            Err(bytes) => sent.one(path, target.add(&abs, bytes)),
        };
        if let Err(e) = result {
            bar.finish_and_clear();
            anyhow::bail!("{e}");
        }
    }
    if let Err(e) = send_batch(target, batch, &mut sent) {
        bar.finish_and_clear();
        anyhow::bail!("{e}");
    }
    bar.finish_and_clear();
    let Sent {
        added,
        unchanged,
        mut failures,
        jobs,
    } = sent;
    let total = jobs.len() as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("[{bar:30}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let mut full_text_at: Option<Duration> = None;
    target.wait(&jobs, &mut |p| {
        let elapsed = started.elapsed();
        bar.set_position(p.ended);
        bar.set_message(progress_line(p, total, elapsed));
        if full_text_at.is_none() && total > 0 && p.searchable + p.failed >= total {
            full_text_at = Some(elapsed);
            if p.ended < total {
                bar.println(format!(
                    "{} searchable by full text after {}; embedding continues (vector and hybrid search find them when it ends)",
                    documents(p.searchable),
                    duration(elapsed)
                ));
            }
        }
    });
    let all_done = started.elapsed();
    bar.finish_and_clear();
    let mut failed_jobs = 0;
    for (path, j) in &jobs {
        if let Err(why) = target.outcome(j) {
            failed_jobs += 1;
            failures.push((path.clone(), why));
        }
    }
    println!(
        "{} {}: {} added or updated, {} unchanged, {} skipped, {} failed",
        seen,
        if seen == 1 { "file" } else { "files" },
        added - failed_jobs,
        unchanged,
        selection.skipped_count(),
        failures.len()
    );
    if total > 0 {
        println!(
            "  searchable by full text after {}, embedded after {}",
            duration(full_text_at.unwrap_or(all_done)),
            duration(all_done)
        );
    }
    if !selection.skipped.is_empty() {
        println!("  skipped (not documents): {}", selection.skipped_summary());
        for (kind, paths) in &selection.skipped {
            let shown: Vec<String> = paths
                .iter()
                .take(SKIPPED_SHOWN)
                .map(|p| {
                    p.file_name()
                        .map_or_else(|| display(p), |n| n.to_string_lossy().into_owned())
                })
                .collect();
            let more = paths.len().saturating_sub(SKIPPED_SHOWN);
            println!(
                "    {}: {}{}",
                kind.names().1,
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
        }
    }
    for (p, why) in &failures {
        println!("  failed: {}: {why}", display(p));
    }
    // Scripts see partial failure in the exit status (the summary above says which files);
    // skipped files are no failure.
    if !failures.is_empty() {
        anyhow::bail!("{} of {} files failed", failures.len(), seen);
    }
    Ok(())
}

/// What the sending phase did: files added (with the jobs to follow), unchanged, failed.
#[derive(Default)]
struct Sent {
    added: usize,
    unchanged: usize,
    failures: Vec<(PathBuf, String)>,
    jobs: Vec<(PathBuf, String)>,
}

impl Sent {
    /// Counts one file's result; `Err` ends the run.
    fn one(&mut self, path: &Path, r: Result<Option<String>, AddError>) -> Result<(), String> {
        match r {
            Ok(None) => self.unchanged += 1,
            Ok(Some(job)) => {
                self.added += 1;
                self.jobs.push((path.to_path_buf(), job));
            }
            Err(AddError::File(e)) => self.failures.push((path.to_path_buf(), e)),
            Err(AddError::Fatal(e)) => return Err(e),
        }
        Ok(())
    }
}

/// Sends a batch; a file the server refuses is counted as failed and the rest sent again
/// without it (at most once per file). `Err` ends the run.
fn send_batch(
    target: &mut dyn Target,
    mut batch: Vec<TextFile>,
    sent: &mut Sent,
) -> Result<(), String> {
    while !batch.is_empty() {
        match target.add_batch(&batch) {
            Ok(results) => {
                for (f, r) in batch.iter().zip(results) {
                    sent.one(&f.shown, Ok(r))?;
                }
                return Ok(());
            }
            Err(BatchError::Item(i, why)) if i < batch.len() => {
                let f = batch.remove(i);
                sent.failures.push((f.shown, why));
            }
            Err(BatchError::Item(_, why) | BatchError::Whole(why)) => {
                for f in batch {
                    sent.failures.push((f.shown, why.clone()));
                }
                return Ok(());
            }
            Err(BatchError::Fatal(e)) => return Err(e),
        }
    }
    Ok(())
}

/// Skipped files named per kind in the summary.
const SKIPPED_SHOWN: usize = 3;

/// `"3 documents"` / `"1 document"`.
fn documents(n: u64) -> String {
    format!("{n} document{}", if n == 1 { "" } else { "s" })
}

/// `"850 ms"`, `"12.3 s"`, `"4m05s"`.
fn duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{} ms", d.as_millis())
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// The phase line under the bar: each phase's count, and for the phases under way their rate
/// (documents per second since the wait began) and the time left at that rate.
fn progress_line(p: Phases, total: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let phase = |name: &str, done: u64| {
        if done >= total {
            return format!("{name} {done}/{total}");
        }
        let rate = done as f64 / secs;
        let eta = if rate > 0.0 {
            duration(Duration::from_secs_f64((total - done) as f64 / rate))
        } else {
            "?".into()
        };
        format!("{name} {done}/{total} ({rate:.1}/s, ETA {eta})")
    };
    format!(
        "{} · {} · {}{}",
        phase("extracted", p.extracted + p.failed),
        phase("full text", p.searchable + p.failed),
        phase("embedded", p.ended),
        if p.failed > 0 {
            format!(" · {} failed", p.failed)
        } else {
            String::new()
        }
    )
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
