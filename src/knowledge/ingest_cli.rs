//! `enclave ingest --workspace WS PATH…`: walks files and folders, adds every file through the
//! same code path as the API (each file's path is its `external_id`, so a changed file replaces
//! its previous version and an unchanged one is skipped), runs the jobs with a progress bar and
//! prints a summary with the failures and their reasons.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::service::DocumentInput;
use crate::app::App;
use crate::error::Error;

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Workspace id.
    #[arg(long)]
    pub workspace: String,
    /// Files or folders (walked recursively; hidden entries are skipped).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
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

pub fn run(app: &Arc<App>, args: IngestArgs) -> anyhow::Result<()> {
    let ws = crate::ids::parse_uuid(&args.workspace, "workspace")?;
    app.get_workspace(ws)?;
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
        let result = std::fs::read(&abs).map_err(Error::from).and_then(|bytes| {
            app.add_document(
                ws,
                DocumentInput {
                    bytes,
                    file_name: abs.file_name().and_then(|n| n.to_str()).map(str::to_string),
                    external_id: Some(abs.display().to_string()),
                    ..Default::default()
                },
            )
        });
        match result {
            Ok(a) if a.duplicate => unchanged += 1,
            Ok(a) => {
                added += 1;
                if let Some(j) = a.job_id {
                    jobs.push((path.clone(), j));
                }
            }
            Err(e) => failures.push((path.clone(), e.to_string())),
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
    let mut ticks = 0u32;
    app.run_jobs_until_idle(|| {
        ticks += 1;
        if ticks.is_multiple_of(8) {
            let done = jobs
                .iter()
                .filter(|(_, j)| {
                    app.get_job(ws, j)
                        .is_ok_and(|v| !matches!(v.status.as_str(), "queued" | "running"))
                })
                .count();
            bar.set_position(done as u64);
        }
    });
    bar.set_position(total);
    bar.finish_and_clear();
    for (path, j) in &jobs {
        if let Ok(v) = app.get_job(ws, j) {
            if v.status != "succeeded" {
                failures.push((
                    path.clone(),
                    v.error.unwrap_or_else(|| format!("job {}", v.status)),
                ));
            }
        }
    }
    println!(
        "{} {}: {} added or updated, {} unchanged, {} failed",
        files.len(),
        if files.len() == 1 { "file" } else { "files" },
        added
            - failures
                .iter()
                .filter(|(p, _)| jobs.iter().any(|(q, _)| q == p))
                .count(),
        unchanged,
        failures.len()
    );
    for (p, why) in &failures {
        println!("  failed: {}: {why}", display(p));
    }
    app.shutdown();
    // Scripts see partial failure in the exit status (the summary above says which files).
    if !failures.is_empty() {
        anyhow::bail!("{} of {} files failed", failures.len(), files.len());
    }
    Ok(())
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
