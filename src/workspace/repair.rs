//! SQLite is the source of truth; the Tantivy index is derived from it. Every transaction that
//! changes the chunks bumps `fts_generation` in `workspace_meta`, and the Tantivy commit that
//! follows records that generation as its payload. When a store is opened and the two differ
//! (a crash between the SQLite commit and the Tantivy commit, or an index of an older schema),
//! the index is reconciled with SQLite: stale chunks are deleted, missing ones added.
//!
//! The vector tables live in the same SQLite database and change in the same transactions as
//! the chunks, so they cannot disagree with it.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rusqlite::{Connection, OptionalExtension};
use tantivy::schema::Schema;
use tantivy::{Index, IndexWriter, TantivyDocument, Term};

use super::{index_schema, IndexFields, Workspace, TEXT_TOKENIZER};
use crate::error::Result;

/// The generation of the chunks in SQLite.
pub fn generation(conn: &Connection) -> Result<i64> {
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM workspace_meta WHERE key = 'fts_generation'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Bumps the generation inside the caller's transaction and returns the new value.
pub fn bump_generation(conn: &Connection) -> Result<i64> {
    let next = generation(conn)? + 1;
    conn.execute(
        "INSERT INTO workspace_meta (key, value) VALUES ('fts_generation', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [next.to_string()],
    )?;
    Ok(next)
}

/// Whether an index was built with the current schema (field names and tokenizers).
pub fn schema_is_current(schema: &Schema) -> bool {
    let (current, _) = index_schema();
    ["title", "headings", "text"].iter().all(|name| {
        schema
            .get_field(name)
            .ok()
            .is_some_and(|f| match schema.get_field_entry(f).field_type() {
                tantivy::schema::FieldType::Str(opts) => opts
                    .get_indexing_options()
                    .is_some_and(|i| i.tokenizer() == TEXT_TOKENIZER),
                _ => false,
            })
    }) && current
        .fields()
        .all(|(_, e)| schema.get_field(e.name()).is_ok())
}

/// Replaces the index folder with a new, empty index of the current schema.
pub fn recreate_index(dir: &Path) -> Result<Index> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    crate::perms::create_dir_all(dir)?;
    let (schema, _) = index_schema();
    Ok(Index::create_in_dir(dir, schema)?)
}

/// The Tantivy document of one chunk.
pub fn chunk_document(
    f: &IndexFields,
    chunk_id: u64,
    document_id: &str,
    title: &str,
    headings: &str,
    text: &str,
) -> TantivyDocument {
    let mut doc = TantivyDocument::default();
    doc.add_u64(f.chunk_id, chunk_id);
    doc.add_text(f.document_id, document_id);
    doc.add_text(f.title, title);
    doc.add_text(f.headings, headings);
    doc.add_text(f.text, text);
    doc
}

/// What a repair did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Repair {
    pub removed: usize,
    pub added: usize,
}

/// Checks the index against SQLite and reconciles them when they disagree: the generation the
/// last successful commit recorded must be SQLite's, and the index must hold as many chunks as
/// SQLite (a commit that recorded the right generation but lost documents shows there).
pub fn repair_if_needed(ws: &Workspace) -> Result<Option<Repair>> {
    let (gen, chunks) = {
        let conn = ws.conn();
        let chunks: i64 = conn.query_row("SELECT count(*) FROM chunks", [], |r| r.get(0))?;
        (generation(&conn)?, chunks)
    };
    let payload = ws.index().load_metas()?.payload;
    let indexed = ws.reader().searcher().num_docs();
    let gen_matches = match payload.as_deref() {
        Some(p) => p == gen.to_string(),
        // A fresh store: nothing was ever indexed.
        None => gen == 0,
    };
    if gen_matches && u64::try_from(chunks).is_ok_and(|c| c == indexed) && !ws.needs_reconcile() {
        return Ok(None);
    }
    let report = reconcile(ws)?;
    tracing::warn!(
        workspace_id = %ws.id(),
        removed = report.removed,
        added = report.added,
        "full-text index disagreed with the database and was repaired"
    );
    Ok(Some(report))
}

/// Makes the index hold exactly the chunks in SQLite (every chunk belongs to an indexed
/// document), and records SQLite's generation. Clears the mark of [`Workspace::needs_reconcile`]
/// (set again if this fails, or if an index change fails meanwhile).
pub fn reconcile(ws: &Workspace) -> Result<Repair> {
    sync(ws, false)
}

/// Rebuilds the index from SQLite without reading it (it may be unreadable): every entry is
/// dropped and every chunk added again, in one commit recording SQLite's generation.
pub fn rebuild(ws: &Workspace) -> Result<Repair> {
    sync(ws, true)
}

/// Chunks read from SQLite at a time while they are added to the index (the connection is let
/// go between batches, so documents stay listable during a rebuild).
const SYNC_BATCH: usize = 1000;

fn sync(ws: &Workspace, from_scratch: bool) -> Result<Repair> {
    let f = ws.fields();
    ws.set_needs_reconcile(false);
    let result = ws.index_transaction_now(
        || {
            // Under the writer lock: nothing else changes the index meanwhile. A failed commit
            // may have left the reader behind what is on disk (a rebuild does not read it).
            if !from_scratch {
                ws.reader().reload()?;
            }
            let conn = ws.conn();
            let mut stmt = conn.prepare("SELECT id FROM chunks")?;
            let ids = stmt
                .query_map([], |r| r.get::<_, i64>(0))?
                .collect::<rusqlite::Result<HashSet<i64>>>()?;
            Ok((ids, generation(&conn)?))
        },
        |w: &mut IndexWriter, wanted: &HashSet<i64>| {
            let mut present: HashMap<u64, usize> = HashMap::new();
            let searcher = ws.reader().searcher();
            if from_scratch {
                w.delete_all_documents()?;
            }
            let segments = if from_scratch {
                &[][..]
            } else {
                searcher.segment_readers()
            };
            for seg in segments {
                let col = seg.fast_fields().u64("chunk_id")?;
                let alive = seg.alive_bitset();
                for doc in 0..seg.max_doc() {
                    if alive.is_some_and(|a| !a.is_alive(doc)) {
                        continue;
                    }
                    if let Some(id) = col.first(doc) {
                        *present.entry(id).or_default() += 1;
                    }
                }
            }
            let mut report = Repair::default();
            let mut to_add: Vec<i64> = Vec::new();
            for (&id, &count) in &present {
                let keep = i64::try_from(id).is_ok_and(|i| wanted.contains(&i));
                if !keep || count > 1 {
                    w.delete_term(Term::from_field_u64(f.chunk_id, id));
                    report.removed += count;
                    if keep {
                        to_add.push(id as i64);
                    }
                }
            }
            to_add.extend(
                wanted
                    .iter()
                    .filter(|id| !present.contains_key(&(**id as u64))),
            );
            for batch in to_add.chunks(SYNC_BATCH) {
                let conn = ws.conn();
                let mut stmt = conn.prepare_cached(
                    "SELECT c.document_id, d.title, c.heading_path, c.text
                     FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.id = ?1",
                )?;
                for id in batch {
                    let row: Option<(String, String, String, String)> = stmt
                        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                        .optional()?;
                    if let Some((doc_id, title, headings, text)) = row {
                        w.add_document(chunk_document(
                            &f, *id as u64, &doc_id, &title, &headings, &text,
                        ))?;
                        report.added += 1;
                    }
                }
            }
            Ok(report)
        },
    );
    match result {
        Ok((_, Ok(report))) => Ok(report),
        Ok((_, Err(e))) | Err(e) => {
            ws.set_needs_reconcile(true);
            Err(e)
        }
    }
}

#[cfg(test)]
#[path = "../../tests/api/tmpfs.rs"]
mod tmpfs;

#[cfg(test)]
mod tests {
    use super::tmpfs::Tmpfs;
    use super::*;
    use crate::workspace::{create, dir_of};
    use std::path::PathBuf;
    use uuid::Uuid;

    /// A new, empty store in a temp dir: (the temp dir, its folder, its id).
    fn store() -> (tempfile::TempDir, PathBuf, Uuid) {
        let tmp = tempfile::tempdir().expect("tmp");
        let id = crate::ids::new_id();
        let dir = dir_of(tmp.path(), id);
        create(&dir).expect("create");
        (tmp, dir, id)
    }

    /// A closed store whose database holds document `d1` with chunks `texts` (not indexed:
    /// the next open repairs that).
    fn seeded_store(texts: &[&str]) -> (tempfile::TempDir, PathBuf, Uuid) {
        let (tmp, dir, id) = store();
        let ws = Workspace::open(&dir, id).expect("open");
        seed(&ws, "d1", texts);
        drop(ws);
        (tmp, dir, id)
    }

    fn seed(ws: &Workspace, doc: &str, texts: &[&str]) {
        let conn = ws.conn();
        conn.execute(
            "INSERT INTO documents (id, title, mime_type, content_hash, byte_size, status, created_at, updated_at)
             VALUES (?1, 'T', 'text/plain', 'h', 1, 'indexed', 'now', 'now')",
            [doc],
        )
        .expect("doc");
        for (i, t) in texts.iter().enumerate() {
            conn.execute(
                "INSERT INTO chunks (document_id, ordinal, text) VALUES (?1, ?2, ?3)",
                rusqlite::params![doc, i as i64, t],
            )
            .expect("chunk");
        }
        bump_generation(&conn).expect("bump");
    }

    #[test]
    fn an_index_behind_or_ahead_of_sqlite_is_repaired_on_open() {
        let (_tmp, dir, id) = store();
        {
            let ws = Workspace::open(&dir, id).expect("open");
            assert_eq!(
                repair_if_needed(&ws).expect("check"),
                None,
                "a fresh store is in sync"
            );
            // Crash after the SQLite commit, before the Tantivy commit.
            seed(&ws, "d1", &["alpha", "beta"]);
            assert_eq!(ws.indexed_chunks(), 0);
        }
        {
            let ws = Workspace::open(&dir, id).expect("reopen");
            assert_eq!(ws.indexed_chunks(), 2, "missing chunks were added");
            assert_eq!(repair_if_needed(&ws).expect("check"), None, "now in sync");
            // A stale entry: the index holds a chunk SQLite no longer has.
            ws.index_chunk(999, "gone", "T", "", "stale")
                .expect("index");
            ws.commit_index().expect("commit");
            bump_generation(&ws.conn()).expect("bump");
        }
        let ws = Workspace::open(&dir, id).expect("reopen again");
        assert_eq!(ws.indexed_chunks(), 2, "the stale chunk was removed");
        assert_eq!(repair_if_needed(&ws).expect("check"), None);
    }

    #[test]
    fn an_index_of_an_older_schema_is_rebuilt() {
        let (_tmp, dir, id) = seeded_store(&["gamma"]);
        // Replace the index with one whose text fields use the default tokenizer.
        let idx = dir.join(crate::workspace::INDEX_DIR);
        std::fs::remove_dir_all(&idx).expect("rm");
        std::fs::create_dir_all(&idx).expect("mkdir");
        let mut b = Schema::builder();
        b.add_u64_field("chunk_id", tantivy::schema::INDEXED | tantivy::schema::FAST);
        b.add_text_field("document_id", tantivy::schema::STRING);
        for f in ["title", "headings", "text"] {
            b.add_text_field(f, tantivy::schema::TEXT);
        }
        Index::create_in_dir(&idx, b.build()).expect("old index");
        let ws = Workspace::open(&dir, id).expect("reopen");
        assert!(schema_is_current(&ws.index().schema()));
        assert_eq!(ws.indexed_chunks(), 1);
    }

    fn words(seed: usize, n: usize) -> String {
        (0..n)
            .map(|i| format!("w{}x{}", (i * 7919 + seed) % 100_003, i % 13))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_failed_commit_discards_the_writer_and_the_index_is_reconciled() {
        let Some(fs) = Tmpfs::mount("6m") else {
            return;
        };
        let id = crate::ids::new_id();
        let dir = dir_of(fs.path(), id);
        create(&dir).expect("create");
        let ws = Workspace::open(&dir, id).expect("open");
        // The chunks are in SQLite (committed) before the disk fills up.
        let big = words(1, 150_000);
        seed(&ws, "d1", &[big.as_str(), "alpha"]);
        let gen = generation(&ws.conn()).expect("gen");
        let payload_before = ws.index().load_metas().expect("metas").payload;
        let filler = fs.fill();
        let f = ws.fields();
        let ids: Vec<(i64, String)> = {
            let conn = ws.conn();
            let mut stmt = conn.prepare("SELECT id, text FROM chunks").expect("prep");
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("q");
            rows.collect::<rusqlite::Result<_>>().expect("rows")
        };
        let (_, indexed) = ws
            .index_transaction(
                || Ok(((), gen)),
                |w, _| {
                    for (id, text) in &ids {
                        w.add_document(chunk_document(&f, *id as u64, "d1", "T", "", text))?;
                    }
                    Ok(())
                },
            )
            .expect("sql part");
        let err = indexed.expect_err("the commit cannot fit");
        assert!(err.is_storage_full(), "{err:?}");
        assert!(ws.needs_reconcile(), "marked for reconciliation");
        assert!(!ws.writer_is_open(), "the failed writer was discarded");
        assert_eq!(
            ws.index().load_metas().expect("metas").payload,
            payload_before,
            "no generation recorded without a successful commit"
        );
        // Space returns; a later change commits with a fresh writer, and the reconciliation
        // brings back what the failed commit lost.
        std::fs::remove_file(filler).expect("free");
        seed(&ws, "d2", &["gamma"]);
        let gen2 = generation(&ws.conn()).expect("gen");
        let (_, indexed) = ws
            .index_transaction(
                || Ok(((), gen2)),
                |w, _| {
                    let id: i64 = ws
                        .conn()
                        .query_row("SELECT id FROM chunks WHERE document_id = 'd2'", [], |r| {
                            r.get(0)
                        })
                        .expect("id");
                    w.add_document(chunk_document(&f, id as u64, "d2", "T", "", "gamma"))?;
                    Ok(())
                },
            )
            .expect("sql part");
        indexed.expect("commits again once there is room");
        assert_eq!(
            ws.indexed_chunks(),
            1,
            "the failed commit's chunks are not there"
        );
        assert!(ws.needs_reconcile());
        reconcile(&ws).expect("reconcile");
        assert!(!ws.needs_reconcile());
        assert_eq!(ws.indexed_chunks(), 3, "every chunk of SQLite is indexed");
        drop(ws);
        let ws = Workspace::open(&dir, id).expect("reopen");
        assert_eq!(repair_if_needed(&ws).expect("check"), None, "in sync");
        assert_eq!(ws.indexed_chunks(), 3);
    }

    #[test]
    fn repair_on_open_compares_counts_not_only_the_generation() {
        let (_tmp, dir, id) = store();
        {
            let ws = Workspace::open(&dir, id).expect("open");
            seed(&ws, "d1", &["alpha", "beta"]);
            let gen = generation(&ws.conn()).expect("gen");
            // A commit that records the right generation but lost a chunk (what a failed
            // writer kept in service used to commit).
            let f = ws.fields();
            let (_, r) = ws
                .index_transaction(
                    || Ok(((), gen)),
                    |w, _| {
                        w.add_document(chunk_document(&f, 1, "d1", "T", "", "alpha"))?;
                        Ok(())
                    },
                )
                .expect("tx");
            r.expect("commit");
            assert_eq!(ws.indexed_chunks(), 1);
        }
        let ws = Workspace::open(&dir, id).expect("reopen");
        assert_eq!(
            ws.indexed_chunks(),
            2,
            "the lost chunk was restored on open"
        );
    }

    #[test]
    fn a_missing_or_unreadable_index_opens_empty_and_is_rebuilt() {
        let (_tmp, dir, id) = seeded_store(&["alpha", "beta"]);
        let idx = dir.join(crate::workspace::INDEX_DIR);
        let damages: [&dyn Fn(); 2] = [
            &|| std::fs::write(idx.join("meta.json"), b"\x00garbage{").expect("garbage"),
            &|| std::fs::remove_dir_all(&idx).expect("rm"),
        ];
        for damage in damages {
            damage();
            let ws = Workspace::open(&dir, id).expect("opens despite the index");
            assert!(ws.rebuild_pending());
            assert!(matches!(
                ws.require_index(),
                Err(crate::error::Error::IndexUnavailable(_))
            ));
            let report = ws.rebuild_index().expect("rebuild");
            assert_eq!(report.added, 2);
            assert!(ws.require_index().is_ok());
            assert_eq!(ws.indexed_chunks(), 2);
            assert!(!ws.writer_is_open(), "the rebuild leaves no writer open");
        }
    }

    #[test]
    fn an_index_that_opens_but_cannot_be_read_is_rebuilt_without_reading_it() {
        use crate::error::Error;
        use tantivy::collector::Count;
        use tantivy::query::PhraseQuery;
        let (_tmp, dir, id) = seeded_store(&["alpha beta gamma", "beta gamma delta"]);
        drop(Workspace::open(&dir, id).expect("indexes the chunks"));
        // Positions are opened lazily: without them the index opens, and phrases fail.
        for e in std::fs::read_dir(dir.join(crate::workspace::INDEX_DIR))
            .expect("index")
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "pos") {
                std::fs::remove_file(e.path()).expect("rm");
            }
        }
        let ws = Workspace::open(&dir, id).expect("opens");
        assert!(!ws.rebuild_pending());
        let f = ws.fields();
        let phrase = || -> Result<usize> {
            let terms = ["beta", "gamma"].map(|w| Term::from_field_text(f.text, w));
            let q = PhraseQuery::new(terms.to_vec());
            Ok(ws.reader().searcher().search(&q, &Count)?)
        };
        // Errors that do not say the files are damaged pass through and mark nothing.
        let invalid = ws.read_index(|| Err::<(), _>(Error::invalid("bad query")));
        assert!(matches!(invalid, Err(Error::Invalid(_))), "{invalid:?}");
        assert!(!ws.rebuild_pending());
        let err = ws.read_index(phrase).expect_err("positions are gone");
        assert!(matches!(err, Error::IndexUnavailable(_)), "{err:?}");
        assert!(ws.rebuild_pending());
        assert!(ws.require_index().is_err());
        // A decoder's panic on garbled bytes is caught the same way.
        let panicked = ws.read_index(|| -> Result<()> { panic!("garbled bytes") });
        assert!(matches!(panicked, Err(Error::IndexUnavailable(_))));
        // Writes meanwhile reach SQLite and wait for the rebuild.
        let report = ws.rebuild_index().expect("rebuilt");
        assert_eq!(report.added, 2);
        assert!(ws.require_index().is_ok());
        assert_eq!(ws.read_index(phrase).expect("phrases work again"), 2);
        assert!(!ws.writer_is_open(), "the rebuild leaves no writer open");
        drop(ws);
        let ws = Workspace::open(&dir, id).expect("reopen");
        assert_eq!(repair_if_needed(&ws).expect("check"), None, "in sync");
    }
}
