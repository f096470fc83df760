//! The vector list of a search: the query vector (the request's, or the query text embedded)
//! and its nearest chunks, through the in-memory binary codes, sqlite-vec's KNN or an exact
//! scan of the allowed documents.

use super::{Allowed, Fusion, SearchRequest};
use crate::error::{Error, Result};
use crate::knowledge::embedders::Embedders;
use crate::knowledge::vectors::{self, Space};
use crate::workspace::Workspace;

fn query_vector(
    embedders: &Embedders,
    space: &Space,
    req: &SearchRequest,
    text: &str,
) -> Result<Option<Vec<f32>>> {
    if let Some(v) = &req.vector {
        if v.len() != space.dim {
            return Err(Error::invalid(format!(
                "vector has {} dimensions; this workspace's vectors have {}",
                v.len(),
                space.dim
            )));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(Error::invalid("vector must contain finite numbers"));
        }
        return Ok(Some(crate::knowledge::embedders::normalize(v.clone())));
    }
    if text.is_empty() {
        return Ok(None);
    }
    let Some(e) = embedders.get(&space.config)? else {
        // User-provided vectors and no query vector: no vector list.
        return Ok(None);
    };
    let v = e
        .embed(&[text])?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Provider("the embedder returned no vector".into()))?;
    if v.len() != space.dim || v.iter().all(|x| *x == 0.0) {
        return Ok(None);
    }
    Ok(Some(v))
}

pub(super) fn vector(
    ws: &Workspace,
    embedders: &Embedders,
    req: &SearchRequest,
    text: &str,
    allowed: Option<&Allowed>,
    k: usize,
    fusion: &Fusion,
) -> Result<Vec<(i64, f32)>> {
    let space = vectors::active(&ws.conn())?;
    let Some(q) = query_vector(embedders, &space, req, text)? else {
        return Ok(Vec::new());
    };
    let conn = ws.conn();
    let chunks = allowed.map(|a| a.chunks.as_ref());
    if let Some(hits) = ws.ann().search(&conn, &space, &q, k, &fusion.ann, chunks)? {
        return Ok(hits);
    }
    let Some(allowed) = allowed else {
        return vectors::knn(&conn, &space, &q, k);
    };
    if allowed.chunks.len() <= vectors::EXACT_SCAN_LIMIT {
        let json = serde_json::to_string(&allowed.documents)
            .map_err(|e| Error::internal(e.to_string()))?;
        return vectors::scan_documents(&conn, &space, &q, &json, k);
    }
    // A small space and many allowed chunks: a deep KNN, post-filtered.
    let hits = vectors::knn(&conn, &space, &q, vectors::MAX_K)?;
    Ok(hits
        .into_iter()
        .filter(|(id, _)| allowed.chunks.contains(&(*id as u64)))
        .take(k)
        .collect())
}
