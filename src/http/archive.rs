//! Workspace archives over HTTP: `GET /v1/workspaces/{ws}/export` streams one
//! (`durability::archive`), `POST /v1/orgs/{org}/workspaces/import` makes a workspace from one
//! sent as the raw request body.

use std::io::Read;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::auth::{Operator, OrgContext, WorkspaceContext};
use super::error::ApiResult;
use super::extract::{Json, Query};
use super::middleware::{record_target, record_tenant};
use super::params::blocking;
use crate::app::App;
use crate::durability::archive::{self, ImportOptions};
use crate::durability::backup::{self, RestoreAs};
use crate::durability::objstore::Target;

/// A `Write` that hands 64 KiB pieces to an async receiver (the response body).
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

const PIECE: usize = 64 << 10;

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE)));
        self.tx
            .blocking_send(Ok(piece))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(PIECE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= PIECE {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

pub async fn export(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
) -> ApiResult<impl IntoResponse> {
    let ws = ctx.workspace_id();
    // Everything that can be refused is refused before the first byte: the snapshot and the
    // entries are prepared, then only streamed.
    let prepared = blocking(move || archive::export(&app, &ctx)).await?;
    let name = prepared.file_name.clone();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(PIECE),
        };
        let result = prepared
            .write_tar(&mut w)
            .and_then(|w| std::io::Write::flush(w).map_err(Into::into));
        if let Err(e) = result {
            tracing::warn!(workspace_id = %ws, error = %e, "export stream ended early");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
        // `prepared` (its staging folder) is dropped here.
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(stream),
    ))
}

/// A `Read` over body pieces received from the async side.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

pub async fn import(
    State(app): State<Arc<App>>,
    ctx: OrgContext,
    Query(opts): Query<ImportOptions>,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let data_dir = app.data_dir().to_path_buf();
    let spooled = tokio::task::spawn_blocking(move || {
        archive::spool(
            &data_dir,
            ChannelReader {
                rx,
                cur: Bytes::new(),
            },
        )
    });
    let mut stream = body.into_data_stream();
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| std::io::Error::other(e.to_string()));
        let failed = piece.is_err();
        if tx.send(piece).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    let (staging, path) = spooled
        .await
        .map_err(|e| crate::Error::internal(format!("task failed: {e}")))??;
    let rec = blocking(move || {
        let rec = archive::import(&app, &ctx, &path, opts);
        drop(staging);
        rec
    })
    .await?;
    record_tenant(Some(rec.org_id), Some(rec.id));
    record_target("workspace", rec.id);
    Ok((StatusCode::CREATED, axum::Json(rec)))
}

/// `POST /v1/admin/backups`: a backup made by the server (operator only).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// A folder on the server's machine, or `s3://bucket/prefix`.
    pub to: String,
    pub workspace: Option<String>,
}

pub async fn backup(
    State(app): State<Arc<App>>,
    _: Operator,
    Json(req): Json<BackupRequest>,
) -> ApiResult<impl IntoResponse> {
    let only = req
        .workspace
        .as_deref()
        .map(|w| crate::ids::parse_uuid(w, "workspace"))
        .transpose()?;
    let rt = tokio::runtime::Handle::current();
    let report = blocking(move || {
        let target = Target::open(&req.to, rt)?;
        backup::backup(&app, &target, only)
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(report)))
}

/// `POST /v1/admin/restore`: one workspace of a backup into this server (operator only).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    pub from: String,
    pub backup: Option<String>,
    pub workspace: String,
    pub org: Option<String>,
    pub slug: Option<String>,
}

pub async fn restore(
    State(app): State<Arc<App>>,
    _: Operator,
    Json(req): Json<RestoreRequest>,
) -> ApiResult<impl IntoResponse> {
    let ws = crate::ids::parse_uuid(&req.workspace, "workspace")?;
    let rt = tokio::runtime::Handle::current();
    let rec = blocking(move || {
        let target = Target::open(&req.from, rt)?;
        backup::restore_workspace(
            &app,
            &target,
            req.backup.as_deref(),
            ws,
            RestoreAs {
                org: req.org,
                slug: req.slug,
            },
        )
    })
    .await?;
    record_tenant(Some(rec.org_id), Some(rec.id));
    record_target("workspace", rec.id);
    Ok(axum::Json(rec))
}
