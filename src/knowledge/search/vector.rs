//! The vector list of a search: the query vector (the request's, or the query text embedded)
//! and its nearest chunks, through the in-memory binary codes, a scan of an int8 space,
//! sqlite-vec's KNN, or an exact scan of the allowed documents.

use super::{Allowed, Fusion, SearchRequest};
use crate::error::{Error, Result};
use crate::knowledge::caches;
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
    allowed: Option<&Allowed>,
    k: usize,
    fusion: &Fusion,
    active: Option<&Space>,
) -> Result<Vec<(i64, f32)>> {
    let text = req.query.trim();
    // The caller's (cached per change of `vector_spaces`), else read here.
    let read;
    let space = match active {
        Some(s) => s,
        None => {
            read = vectors::active(&ws.read())?;
            &read
        }
    };
    let Some(q) = query_vector(embedders, space, req, text)? else {
        return Ok(Vec::new());
    };
    let caches = caches::of(ws);
    let chunks = allowed.map(|a| a.chunks.as_ref());
    {
        // The codes are checked against the store's write count: its own connection.
        let conn = ws.conn();
        if let Some(hits) = caches
            .ann
            .search(&conn, space, &q, k, &fusion.ann, chunks)?
        {
            return Ok(hits);
        }
    }
    // Exact search reads only committed rows: a read connection (concurrent in WAL).
    let conn = ws.read();
    let Some(allowed) = allowed else {
        return vectors::knn(&conn, space, &q, k);
    };
    if space.storage == vectors::Storage::Int8 && allowed.chunks.len() > vectors::EXACT_SCAN_LIMIT {
        // An int8 space is scanned whole anyway: filtered in the scan, exact at any depth.
        return vectors::nearest_int8(&conn, space, &q, k, Some(allowed.chunks.as_ref()));
    }
    if allowed.chunks.len() <= vectors::EXACT_SCAN_LIMIT {
        let json = serde_json::to_string(&allowed.documents)
            .map_err(|e| Error::internal(e.to_string()))?;
        return vectors::scan_documents(&conn, space, &q, &json, k);
    }
    // A small space and many allowed chunks: a deep KNN, post-filtered.
    let hits = vectors::knn(&conn, space, &q, vectors::MAX_K)?;
    Ok(hits
        .into_iter()
        .filter(|(id, _)| allowed.chunks.contains(&(*id as u64)))
        .take(k)
        .collect())
}

#[cfg(test)]
mod tests {
    use crate::knowledge::ann::AnnParams;
    use crate::knowledge::extract::{Format, Limits};
    use crate::knowledge::search::tests::{sorted_documents, workspace_with};
    use crate::knowledge::search::{Fusion, Mode, SearchRequest};
    use crate::knowledge::{ingest, store};
    use serde_json::json;

    #[test]
    fn the_codes_follow_the_workspaces_writes() {
        let (_t, ws, emb, ids) = workspace_with(&[
            ("apples in the orchard", json!({})),
            ("pears on the market", json!({})),
        ]);
        // Every space has codes: a search goes through them.
        let fusion = Fusion {
            ann: AnnParams {
                min_vectors: 0,
                ..AnnParams::default()
            },
            ..Fusion::default()
        };
        let run = || -> Vec<String> {
            let req = SearchRequest {
                query: "apples".into(),
                mode: Some(Mode::Vector),
                ..Default::default()
            };
            sorted_documents(&ws, &emb, &req, None, &fusion)
        };
        let ingest = || {
            while ingest::run_quantum(&ws, &emb, &Limits::default())
                .expect("quantum")
                .worked
            {}
        };
        let mut all = ids.clone();
        all.sort();
        assert_eq!(run(), all);
        let added = store::add(
            &ws,
            store::NewDocument {
                bytes: b"apples and cider".to_vec(),
                format: Format::Text,
                title: None,
                metadata: json!({}),
                external_id: None,
                source_name: None,
                embedding: None,
                is_text: false,
            },
        )
        .expect("add");
        ingest();
        all.push(added.id.clone());
        all.sort();
        assert_eq!(run(), all, "a new document's vector is searched");
        store::delete(&ws, &ids[0]).expect("delete");
        ingest();
        all.retain(|d| d != &ids[0]);
        assert_eq!(run(), all, "a deleted one's is not");
    }
}
