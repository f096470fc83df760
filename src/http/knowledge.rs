//! `/v1/workspaces/{ws}/documents`, `/jobs`, `/search` and `/embedder`, and the same routes
//! without `{ws}` (`/v1/documents`, ...) for API keys and tenant tokens, which bring their
//! workspace.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::WorkspaceContext;
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::{Json, Path, Query};
use super::middleware::record_tenant;
use super::params::{blocking, param, PageQuery};
use crate::app::App;
use crate::control::Page;
use crate::knowledge::{DocumentInput, JobWait};
use crate::knowledge::{EmbedderConfig, SearchRequest};

/// The JSON body of `POST /documents`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDocumentBody {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub external_id: Option<String>,
    /// `text/plain` (default), `text/markdown` or `text/html`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// The document's vector (workspaces with a `user-provided` embedder).
    #[serde(default)]
    pub embedding: Option<Vec<f32>>,
    /// Where the text came from (a file name): shown as `source_name`, and the title of last
    /// resort.
    #[serde(default)]
    pub source_name: Option<String>,
}

impl NewDocumentBody {
    fn into_input(self) -> DocumentInput {
        DocumentInput {
            bytes: self.text.into_bytes(),
            content_type: self.content_type,
            file_name: self.source_name,
            title: self.title,
            metadata: self.metadata,
            external_id: self.external_id,
            embedding: self.embedding,
            is_text: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddQuery {
    #[serde(default)]
    pub wait: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<u32>,
    pub offset: Option<u32>,
    pub status: Option<String>,
}

/// How long `?wait=true` waits before answering 202 anyway (a shutdown ends the wait at once
/// with `503 unavailable` and `Retry-After`).
const WAIT_LIMIT: Duration = Duration::from_secs(600);

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            "the upload is over the limit",
        )
    } else {
        ApiError::invalid(
            StatusCode::BAD_REQUEST,
            format!("bad multipart body: {}", e.body_text()),
        )
    }
}

async fn read_multipart(mut mp: Multipart) -> ApiResult<DocumentInput> {
    let mut input = DocumentInput::default();
    let mut got_file = false;
    while let Some(field) = mp.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "file" => {
                input.file_name = field.file_name().map(str::to_string);
                input.content_type = field.content_type().map(str::to_string);
                input.bytes = field.bytes().await.map_err(multipart_error)?.to_vec();
                got_file = true;
            }
            "metadata" => {
                let text = field.text().await.map_err(multipart_error)?;
                let v: Value = serde_json::from_str(&text).map_err(|e| {
                    ApiError::invalid(StatusCode::BAD_REQUEST, format!("metadata is not valid JSON: {e}"))
                })?;
                input.metadata = Some(v);
            }
            "title" => input.title = Some(field.text().await.map_err(multipart_error)?),
            "external_id" => input.external_id = Some(field.text().await.map_err(multipart_error)?),
            other => {
                return Err(ApiError::invalid(
                    StatusCode::BAD_REQUEST,
                    format!("unknown multipart field {other:?} (expected file, metadata, title, external_id)"),
                ))
            }
        }
    }
    if !got_file {
        return Err(ApiError::invalid(
            StatusCode::BAD_REQUEST,
            "the multipart body has no \"file\" part",
        ));
    }
    Ok(input)
}

pub async fn add(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Query(q): Query<AddQuery>,
    req: Request,
) -> ApiResult<Response> {
    // The permission first: a refused principal's upload is never read.
    let permit = app.knowledge().ingest_permit(&ctx)?;
    record_tenant(Some(ctx.org_id()), Some(ctx.workspace_id()));
    let ct = content_type(&req);
    let input = if ct.starts_with("multipart/form-data") {
        let mp = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::invalid(StatusCode::BAD_REQUEST, e.body_text()))?;
        read_multipart(mp).await?
    } else {
        let Json(body) = Json::<NewDocumentBody>::from_request(req, &()).await?;
        body.into_input()
    };
    let added = blocking({
        let app = app.clone();
        move || app.knowledge().add_document(&permit, input)
    })
    .await?;
    super::middleware::record_target("document", &added.id);
    if !q.wait.unwrap_or(false) {
        let status = if added.duplicate {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        return Ok((status, axum::Json(added)).into_response());
    }
    let Some(job_id) = added.job_id.clone() else {
        return Ok((StatusCode::OK, axum::Json(added)).into_response());
    };
    let deadline = Instant::now() + WAIT_LIMIT;
    match app
        .knowledge()
        .wait_for_job(&ctx, &job_id, deadline)
        .await?
    {
        JobWait::Succeeded(_) => {
            let doc_id = added.id.clone();
            let doc = blocking({
                let app = app.clone();
                move || app.knowledge().get_document(&ctx, &doc_id)
            })
            .await?;
            let mut body = serde_json::to_value(&doc).unwrap_or(Value::Null);
            body["job_id"] = json!(job_id);
            body["duplicate"] = json!(added.duplicate);
            Ok((StatusCode::CREATED, axum::Json(body)).into_response())
        }
        JobWait::Failed(job) => Err(ApiError::invalid(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the document could not be ingested: {}",
                job.error.unwrap_or_else(|| "unknown error".into())
            ),
        )),
        JobWait::Cancelled(_) => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            "the ingestion job was cancelled",
        )),
        JobWait::TimedOut(_) => Ok((StatusCode::ACCEPTED, axum::Json(added)).into_response()),
        // A waiter never holds a shutdown: the job stays queued (it runs after the restart).
        JobWait::Draining(_) => Err(ApiError {
            message: format!(
                "the server is shutting down: document {} is queued (job {job_id}) and \
                 is ingested after the restart; poll the job, or retry",
                added.id
            ),
            ..ApiError::from(crate::Error::ShuttingDown)
        }),
    }
}

/// `POST /documents/batch`: a JSON array (`application/json`) or NDJSON
/// (`application/x-ndjson`, one object a line) of the bodies `POST /documents` takes, written
/// together ([`crate::knowledge::Knowledge::add_documents`]: atomic, indexed when it answers).
pub async fn add_batch(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    req: Request,
) -> ApiResult<impl IntoResponse> {
    // The permission first: a refused principal's body is never read.
    let permit = app.knowledge().ingest_permit(&ctx)?;
    record_tenant(Some(ctx.org_id()), Some(ctx.workspace_id()));
    let ct = content_type(&req);
    let ndjson = if ct.starts_with("application/x-ndjson") || ct.starts_with("application/jsonl") {
        true
    } else if ct.starts_with("application/json") {
        false
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "send the batch as application/json (an array of documents) or \
             application/x-ndjson (one document a line)",
        ));
    };
    let max_bytes = app.config().max_batch_bytes;
    let body = axum::body::Bytes::from_request(req, &())
        .await
        .map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::PayloadTooLarge,
                    format!(
                        "the batch is over the limit of {max_bytes} bytes (max_batch_bytes): \
                         split it"
                    ),
                )
            } else {
                ApiError::invalid(StatusCode::BAD_REQUEST, rej.body_text())
            }
        })?;
    let max_items = app.config().max_batch_documents;
    let added = blocking({
        let app = app.clone();
        // Parsed off the async threads too: a batch body is megabytes of JSON.
        move || {
            Ok(batch::parse(&body, ndjson, max_items).and_then(|items| {
                let inputs = items.into_iter().map(NewDocumentBody::into_input).collect();
                Ok(app.knowledge().add_documents(&permit, inputs)?)
            }))
        }
    })
    .await??;
    super::middleware::record_target(
        "batch",
        format!(
            "{} created, {} updated, {} unchanged",
            added.created, added.updated, added.unchanged
        ),
    );
    Ok(axum::Json(added))
}

/// Reading a batch body, bounded in items while it is parsed.
mod batch {
    use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};

    use super::NewDocumentBody;
    use crate::error::Error;

    /// The items of a JSON array or NDJSON body. A malformed item is refused naming its index
    /// (a syntax error `400`, a wrong field or type `422`); more than `max` items `413`.
    pub fn parse(
        body: &[u8],
        ndjson: bool,
        max: usize,
    ) -> Result<Vec<NewDocumentBody>, super::ApiError> {
        let too_many = || {
            super::ApiError::from(Error::PayloadTooLarge(format!(
                "the batch holds more than {max} documents (max_batch_documents): split it"
            )))
        };
        let bad = |index: Option<usize>, e: serde_json::Error| {
            let status = if e.is_data() {
                super::StatusCode::UNPROCESSABLE_ENTITY
            } else {
                super::StatusCode::BAD_REQUEST
            };
            let what = match (e.is_data(), index) {
                (true, Some(_)) => "invalid document",
                (true, None) => "invalid body (a JSON array of documents)",
                (false, _) => "malformed JSON",
            };
            let mut api = super::ApiError::invalid(status, format!("{what}: {e}"));
            if let Some(i) = index {
                api.message = format!("item {i}: {}", api.message);
                api.details
                    .get_or_insert_with(Default::default)
                    .insert("index".into(), i.into());
            }
            api
        };
        if ndjson {
            let mut items = Vec::new();
            for line in body.split(|b| *b == b'\n') {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if items.len() == max {
                    return Err(too_many());
                }
                let item = serde_json::from_slice::<NewDocumentBody>(line)
                    .map_err(|e| bad(Some(items.len()), e))?;
                items.push(item);
            }
            return Ok(items);
        }
        let mut state = State::default();
        let mut de = serde_json::Deserializer::from_slice(body);
        let parsed = Items {
            max,
            state: &mut state,
        }
        .deserialize(&mut de)
        .and_then(|items| de.end().map(|()| items));
        match parsed {
            Ok(items) => Ok(items),
            Err(_) if state.too_many => Err(too_many()),
            Err(e) => Err(bad(state.failed_at, e)),
        }
    }

    #[derive(Default)]
    struct State {
        /// The index of the item being read when reading failed.
        failed_at: Option<usize>,
        too_many: bool,
    }

    /// A JSON array of at most `max` documents.
    struct Items<'a> {
        max: usize,
        state: &'a mut State,
    }

    impl<'de> DeserializeSeed<'de> for Items<'_> {
        type Value = Vec<NewDocumentBody>;

        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for Items<'_> {
        type Value = Vec<NewDocumentBody>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array of documents")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
            loop {
                self.state.failed_at = Some(items.len());
                match seq.next_element::<NewDocumentBody>()? {
                    Some(_) if items.len() == self.max => {
                        self.state.too_many = true;
                        return Err(A::Error::custom("too many documents"));
                    }
                    Some(item) => items.push(item),
                    None => break,
                }
            }
            self.state.failed_at = None;
            Ok(items)
        }
    }
}

pub async fn list(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Query(q): Query<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    record_tenant(Some(ctx.org_id()), Some(ctx.workspace_id()));
    let docs = blocking(move || {
        app.knowledge()
            .list_documents(&ctx, Page::new(q.limit, q.offset)?, q.status.as_deref())
    })
    .await?;
    Ok(axum::Json(json!({ "data": docs })))
}

pub async fn get(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Path(p): Path<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    record_tenant(Some(ctx.org_id()), Some(ctx.workspace_id()));
    let doc = param(&p, "id")?.to_string();
    let view = blocking(move || app.knowledge().get_document(&ctx, &doc)).await?;
    Ok(axum::Json(view))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Path(p): Path<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    record_tenant(Some(ctx.org_id()), Some(ctx.workspace_id()));
    let doc = param(&p, "id")?.to_string();
    blocking(move || app.knowledge().delete_document(&ctx, &doc)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_jobs(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Query(q): Query<PageQuery>,
) -> ApiResult<impl IntoResponse> {
    record_tenant(Some(ctx.org_id()), Some(ctx.workspace_id()));
    let jobs = blocking(move || app.knowledge().list_jobs(&ctx, q.page()?)).await?;
    Ok(axum::Json(json!({ "data": jobs })))
}

pub async fn get_job(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Path(p): Path<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    record_tenant(Some(ctx.org_id()), Some(ctx.workspace_id()));
    let job = param(&p, "id")?.to_string();
    let view = blocking(move || app.knowledge().get_job(&ctx, &job)).await?;
    Ok(axum::Json(view))
}

pub async fn cancel_job(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Path(p): Path<HashMap<String, String>>,
) -> ApiResult<impl IntoResponse> {
    record_tenant(Some(ctx.org_id()), Some(ctx.workspace_id()));
    let job = param(&p, "id")?.to_string();
    let view = blocking(move || app.knowledge().cancel_job(&ctx, &job)).await?;
    Ok(axum::Json(view))
}

pub async fn search(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Json(req): Json<SearchRequest>,
) -> ApiResult<impl IntoResponse> {
    record_tenant(Some(ctx.org_id()), Some(ctx.workspace_id()));
    // Knowledge ANDs the tenant token's filter with the request's.
    let resp = blocking(move || app.knowledge().search(&ctx, &req)).await?;
    Ok(axum::Json(resp))
}

pub async fn get_embedder(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
) -> ApiResult<impl IntoResponse> {
    record_tenant(Some(ctx.org_id()), Some(ctx.workspace_id()));
    let view = blocking(move || app.knowledge().get_embedder(&ctx)).await?;
    Ok(axum::Json(view))
}

pub async fn set_embedder(
    State(app): State<Arc<App>>,
    ctx: WorkspaceContext,
    Json(cfg): Json<EmbedderConfig>,
) -> ApiResult<impl IntoResponse> {
    record_tenant(Some(ctx.org_id()), Some(ctx.workspace_id()));
    let view = blocking(move || app.knowledge().set_embedder(&ctx, cfg)).await?;
    Ok(axum::Json(view))
}

/// The request's `Content-Type`, lowercased (empty when absent or not text).
fn content_type(req: &Request) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}
