//! The audit trail: one hash chain per workspace (its own `audit_log` table) and one for the
//! control plane (`operator_audit` in `control.db`).
//!
//! Each entry carries the hash of the entry before it (`prev_hash`) and its own `hash`:
//! SHA-256 over `prev_hash`, a newline, and the entry's fields as a JSON array (id included, so
//! an entry moved to another id no longer matches). The chain's head (last id and hash) is also
//! kept beside it (`server_settings` / `workspace_meta`, key `audit_head`), written in the same
//! transaction, so removing the newest entries is detected too. [`verify`] walks a chain and
//! names the first entry that was edited, removed, reordered or added outside Enclave.
//!
//! Appends run in an `IMMEDIATE` transaction (read the head, insert, move the head): two
//! writers, even in two processes (a server and a CLI command), never fork the chain.
//!
//! What this detects and what it does not: any change made with SQL by someone who does not
//! also recompute every later hash and the head. The hash is not keyed, so someone with write
//! access to the file and this source can rewrite the chain wholesale; copy `audit verify`'s
//! head hash elsewhere to pin it.

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::control::Page;
use crate::error::{Error, Result};
use crate::identity::Principal;

/// The `prev_hash` of a chain's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Where the chain's head is kept beside it.
const HEAD_KEY: &str = "audit_head";

/// One audit entry, in either chain. In a workspace's chain `org_id` and `workspace_id` are not
/// stored (no workspace id inside a workspace database); `path` and `client` are in its
/// `detail` column.
#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Entry {
    pub id: i64,
    pub at: String,
    /// Who: `user`, `api_key`, `tenant_token`, `operator` (HTTP, operator token) or `cli`.
    pub actor: String,
    /// Which one: the user id, the API key id, `<key id>:<subject or token id>` for a tenant
    /// token, the system user for the command line; none for the operator token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
    /// What was done, e.g. `document.add`, `org.suspend`, `key revoke` (CLI).
    pub action: String,
    /// What it was done to, e.g. `document:<id>`, `agent:<id>`, `org:<id>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The request's path (secret segments redacted); empty for CLI commands.
    pub path: String,
    pub status: Option<u16>,
    /// `success`, `denied` (401/403), `refused` (429), `failed` (other 4xx), `error` (5xx).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// The outcome word of an HTTP status.
pub fn outcome_of(status: u16) -> &'static str {
    match status {
        401 | 403 => "denied",
        429 => "refused",
        400..=499 => "failed",
        500.. => "error",
        _ => "success",
    }
}

/// The `actor_id` of a principal.
pub fn actor_id(p: &Principal) -> Option<String> {
    match p {
        Principal::Operator => None,
        Principal::User { user_id, .. } => Some(user_id.to_string()),
        Principal::ApiKey { key_id, .. } => Some(key_id.to_string()),
        Principal::TenantToken {
            key_id,
            subject,
            token_id,
            ..
        } => Some(match subject.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => format!("{key_id}:{s}"),
            None => format!("{key_id}:{token_id}"),
        }),
    }
}

/// The two kinds of chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    /// `control.db`'s `operator_audit`: org- and server-level actions.
    Control,
    /// A workspace's `audit_log`: actions on the workspace.
    Workspace,
}

impl Chain {
    fn table(self) -> &'static str {
        match self {
            Chain::Control => "operator_audit",
            Chain::Workspace => "audit_log",
        }
    }

    fn columns(self) -> &'static str {
        match self {
            Chain::Control => {
                "id, at, actor, actor_id, action, target, path, status, outcome, org_id, \
                 workspace_id, request_id, client, prev_hash, hash"
            }
            Chain::Workspace => {
                "id, at, actor, actor_id, action, target, detail, status, outcome, request_id, \
                 prev_hash, hash"
            }
        }
    }

    fn read_head(self, conn: &Connection) -> Result<Option<(i64, String)>> {
        let sql = match self {
            Chain::Control => "SELECT value FROM server_settings WHERE key = ?1",
            Chain::Workspace => "SELECT value FROM workspace_meta WHERE key = ?1",
        };
        let v: Option<String> = conn.query_row(sql, [HEAD_KEY], |r| r.get(0)).optional()?;
        Ok(v.and_then(|v| {
            let (id, hash) = v.split_once(':')?;
            Some((id.parse().ok()?, hash.to_string()))
        }))
    }

    fn write_head(self, conn: &Connection, id: i64, hash: &str) -> Result<()> {
        let value = format!("{id}:{hash}");
        match self {
            Chain::Control => conn.execute(
                "INSERT INTO server_settings (key, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value,
                                                 updated_at = excluded.updated_at",
                params![HEAD_KEY, value, crate::db::now()],
            )?,
            Chain::Workspace => conn.execute(
                "INSERT INTO workspace_meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![HEAD_KEY, value],
            )?,
        };
        Ok(())
    }

    fn read_row(self, r: &Row<'_>) -> rusqlite::Result<Entry> {
        let uuid = |name: &str| -> rusqlite::Result<Option<Uuid>> {
            Ok(r.get::<_, Option<String>>(name)?
                .and_then(|s| Uuid::try_parse(&s).ok()))
        };
        let mut e = Entry {
            id: r.get("id")?,
            at: r.get("at")?,
            actor: r.get("actor")?,
            actor_id: r.get("actor_id")?,
            action: r.get("action")?,
            target: r.get("target")?,
            status: r.get("status")?,
            outcome: r.get("outcome")?,
            request_id: r.get("request_id")?,
            prev_hash: r.get("prev_hash")?,
            hash: r.get("hash")?,
            ..Default::default()
        };
        match self {
            Chain::Control => {
                e.path = r.get("path")?;
                e.org_id = uuid("org_id")?;
                e.workspace_id = uuid("workspace_id")?;
                e.client = r.get("client")?;
            }
            Chain::Workspace => {
                let detail: String = r.get("detail")?;
                let d: Value = serde_json::from_str(&detail).unwrap_or(Value::Null);
                e.path = d
                    .get("path")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                e.client = d.get("client").and_then(Value::as_str).map(str::to_string);
            }
        }
        Ok(e)
    }
}

/// The hash of `e` after `prev`: SHA-256 (hex) of `prev`, `\n`, and the JSON array of the
/// entry's fields (those its chain stores).
pub fn entry_hash(chain: Chain, prev: &str, e: &Entry) -> String {
    let (org, ws) = match chain {
        Chain::Control => (e.org_id, e.workspace_id),
        Chain::Workspace => (None, None),
    };
    let fields = json!([
        e.id,
        e.at,
        e.actor,
        e.actor_id,
        e.action,
        e.target,
        e.path,
        e.status,
        e.outcome,
        org.map(|u| u.to_string()),
        ws.map(|u| u.to_string()),
        e.request_id,
        e.client,
    ]);
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(fields.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// Appends `e` to the chain in `conn` (its id, `at` if empty, and hashes are set here) and
/// returns it as stored.
pub fn append(conn: &mut Connection, chain: Chain, e: &Entry) -> Result<Entry> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let table = chain.table();
    let last: Option<(i64, Option<String>)> = tx
        .query_row(
            &format!("SELECT id, hash FROM {table} ORDER BY id DESC LIMIT 1"),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    // The head decides (a removed tail leaves a gap the next entry shows); without one, the
    // chain starts after the newest row (rows from before the chain have no hash).
    let (prev_id, prev_hash) = match (chain.read_head(&tx)?, last) {
        (Some((hid, hhash)), Some((lid, _))) => (hid.max(lid), hhash),
        (Some(h), None) => h,
        (None, Some((lid, Some(hash)))) => (lid, hash),
        (None, Some((lid, None))) => (lid, GENESIS.to_string()),
        (None, None) => (0, GENESIS.to_string()),
    };
    let mut e = e.clone();
    e.id = prev_id + 1;
    if e.at.is_empty() {
        e.at = crate::db::now();
    }
    let hash = entry_hash(chain, &prev_hash, &e);
    match chain {
        Chain::Control => tx.execute(
            "INSERT INTO operator_audit (id, at, actor, actor_id, action, target, path, status,
                 outcome, org_id, workspace_id, request_id, client, prev_hash, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            params![
                e.id,
                e.at,
                e.actor,
                e.actor_id,
                e.action,
                e.target,
                e.path,
                e.status,
                e.outcome,
                e.org_id.map(|u| u.to_string()),
                e.workspace_id.map(|u| u.to_string()),
                e.request_id,
                e.client,
                prev_hash,
                hash
            ],
        )?,
        Chain::Workspace => {
            let detail = json!({"path": e.path, "client": e.client}).to_string();
            tx.execute(
                "INSERT INTO audit_log (id, at, actor, actor_id, action, target, detail, status,
                     outcome, request_id, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    e.id,
                    e.at,
                    e.actor,
                    e.actor_id,
                    e.action,
                    e.target,
                    detail,
                    e.status,
                    e.outcome,
                    e.request_id,
                    prev_hash,
                    hash
                ],
            )?
        }
    };
    chain.write_head(&tx, e.id, &hash)?;
    tx.commit()?;
    e.prev_hash = Some(prev_hash);
    e.hash = Some(hash);
    Ok(e)
}

/// Filters of an audit listing.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// An actor kind (`user`, `api_key`, ...) or an actor id.
    pub actor: Option<String>,
    /// An action, or a prefix of one ending in `*` (`document.*`).
    pub action: Option<String>,
    /// Entries at or after this time (RFC 3339, stored form).
    pub from: Option<String>,
    /// Entries before this time.
    pub to: Option<String>,
    /// Control plane only: entries about this org.
    pub org_id: Option<Uuid>,
}

impl Filter {
    /// Parses the query's text filters: times are RFC 3339 or `YYYY-MM-DD` (midnight UTC).
    pub fn parse(
        actor: Option<String>,
        action: Option<String>,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Filter> {
        let time = |name: &str, t: Option<&str>| -> Result<Option<String>> {
            let Some(t) = t.map(str::trim).filter(|t| !t.is_empty()) else {
                return Ok(None);
            };
            if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
                return Ok(Some(crate::control::format_time(
                    d.with_timezone(&chrono::Utc),
                )));
            }
            if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
                let dt = d.and_hms_opt(0, 0, 0).map(|n| n.and_utc());
                return Ok(dt.map(crate::control::format_time));
            }
            Err(Error::invalid(format!(
                "{name} must be an RFC 3339 time (2025-01-31T12:00:00Z) or a date (2025-01-31)"
            )))
        };
        let bounded = |name: &str, v: Option<String>| -> Result<Option<String>> {
            match v {
                Some(s) if s.len() > 200 => Err(Error::invalid(format!(
                    "{name} is too long (at most 200 characters)"
                ))),
                Some(s) if s.is_empty() => Ok(None),
                other => Ok(other),
            }
        };
        Ok(Filter {
            actor: bounded("actor", actor)?,
            action: bounded("action", action)?,
            from: time("from", from)?,
            to: time("to", to)?,
            org_id: None,
        })
    }
}

/// Entries of a chain matching `f`, newest first.
pub fn list(conn: &Connection, chain: Chain, f: &Filter, page: Page) -> Result<Vec<Entry>> {
    let (action_eq, action_prefix) = match f.action.as_deref() {
        Some(a) => match a.strip_suffix('*') {
            Some(prefix) => (None, Some(prefix.to_string())),
            None => (Some(a.to_string()), None),
        },
        None => (None, None),
    };
    let org_clause = match chain {
        Chain::Control => "AND (?7 IS NULL OR org_id = ?7)",
        Chain::Workspace => "AND (?7 IS NULL OR ?7 IS NOT NULL)",
    };
    let sql = format!(
        "SELECT {cols} FROM {table}
         WHERE (?1 IS NULL OR actor = ?1 OR actor_id = ?1)
           AND (?2 IS NULL OR action = ?2)
           AND (?3 IS NULL OR substr(action, 1, length(?3)) = ?3)
           AND (?4 IS NULL OR at >= ?4)
           AND (?5 IS NULL OR at < ?5)
           {org_clause}
         ORDER BY id DESC LIMIT ?6 OFFSET ?8",
        cols = chain.columns(),
        table = chain.table(),
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![
            f.actor,
            action_eq,
            action_prefix,
            f.from,
            f.to,
            page.limit,
            f.org_id.map(|u| u.to_string()),
            page.offset
        ],
        |r| chain.read_row(r),
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// What [`verify`] found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verification {
    /// Entries checked (with a hash).
    pub entries: u64,
    /// Entries from before the chain existed (no hash), all older than the first chained one.
    pub unchained: u64,
    /// The newest entry's id and hash (keep it elsewhere to pin the chain).
    pub head: Option<(i64, String)>,
    /// The first break, if any.
    pub problem: Option<Problem>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// A break in a chain: the entry it is found at and what happened.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Problem {
    pub entry_id: i64,
    pub message: String,
}

/// Walks the chain in id order and reports the first entry that does not hold.
pub fn verify(conn: &Connection, chain: Chain) -> Result<Verification> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {} FROM {} ORDER BY id",
        chain.columns(),
        chain.table()
    ))?;
    let mut rows = stmt.query([])?;
    let mut v = Verification {
        entries: 0,
        unchained: 0,
        head: None,
        problem: None,
    };
    let mut last: Option<(i64, String)> = None;
    let fail = |v: &mut Verification, id: i64, message: String| {
        v.problem = Some(Problem {
            entry_id: id,
            message,
        });
    };
    while let Some(r) = rows.next()? {
        let e = chain.read_row(r)?;
        let Some(hash) = e.hash.clone() else {
            if last.is_some() {
                fail(
                    &mut v,
                    e.id,
                    format!(
                        "entry {} has no hash: it was added, or its hash removed, outside Enclave",
                        e.id
                    ),
                );
                return Ok(v);
            }
            v.unchained += 1;
            continue;
        };
        let prev = e.prev_hash.clone().unwrap_or_default();
        if entry_hash(chain, &prev, &e) != hash {
            fail(
                &mut v,
                e.id,
                format!(
                    "entry {} was edited (or moved from another id): its content does not match its hash",
                    e.id
                ),
            );
            return Ok(v);
        }
        match &last {
            None if prev != GENESIS => {
                fail(
                    &mut v,
                    e.id,
                    format!(
                        "entry {} is the oldest but does not start the chain: older entries were deleted",
                        e.id
                    ),
                );
                return Ok(v);
            }
            Some((lid, lhash)) if prev != *lhash || e.id != lid + 1 => {
                let message = if e.id != lid + 1 {
                    format!(
                        "entries {} to {} are missing: deleted (the chain goes from entry {lid} to entry {})",
                        lid + 1,
                        e.id - 1,
                        e.id
                    )
                } else {
                    format!(
                        "entry {} does not follow entry {lid}: entries were reordered or deleted, \
                         or entry {lid} was rewritten",
                        e.id
                    )
                };
                fail(&mut v, e.id, message);
                return Ok(v);
            }
            _ => {}
        }
        v.entries += 1;
        last = Some((e.id, hash));
    }
    drop(rows);
    let head = chain.read_head(conn)?;
    match (&head, &last) {
        (Some((hid, hhash)), Some((lid, lhash))) if hid != lid || hhash != lhash => {
            let message = if hid > lid {
                format!("entries after {lid} were deleted: the chain's head records entry {hid}")
            } else {
                format!("the chain's head (entry {hid}) does not match its newest entry ({lid})")
            };
            fail(&mut v, *hid.max(lid), message);
        }
        (Some((hid, _)), None) => fail(
            &mut v,
            *hid,
            format!("every entry was deleted: the chain's head records entry {hid}"),
        ),
        _ => {}
    }
    v.head = last;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        crate::db::register_sqlite_vec();
        let mut conn = Connection::open_in_memory().expect("open");
        crate::db::migrate(&mut conn, crate::workspace::MIGRATIONS).expect("migrate");
        conn
    }

    fn entry(action: &str) -> Entry {
        Entry {
            actor: "user".into(),
            actor_id: Some("u1".into()),
            action: action.into(),
            target: Some("document:d1".into()),
            path: "/v1/documents".into(),
            status: Some(201),
            outcome: Some("success".into()),
            ..Default::default()
        }
    }

    fn chain_of(n: usize) -> Connection {
        let mut conn = db();
        for i in 0..n {
            append(
                &mut conn,
                Chain::Workspace,
                &entry(&format!("document.add{i}")),
            )
            .expect("append");
        }
        conn
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let conn = chain_of(5);
        let v = verify(&conn, Chain::Workspace).expect("verify");
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.entries, 5);
        assert_eq!(v.head.as_ref().map(|h| h.0), Some(5));
    }

    #[test]
    fn an_edited_entry_is_named() {
        let conn = chain_of(5);
        conn.execute(
            "UPDATE audit_log SET actor_id = 'someone-else' WHERE id = 3",
            [],
        )
        .expect("edit");
        let v = verify(&conn, Chain::Workspace).expect("verify");
        assert_eq!(v.problem.as_ref().map(|p| p.entry_id), Some(3), "{v:?}");
        assert!(v.problem.expect("problem").message.contains("edited"));
    }

    #[test]
    fn a_deleted_entry_is_found() {
        let conn = chain_of(5);
        conn.execute("DELETE FROM audit_log WHERE id = 2", [])
            .expect("delete");
        let v = verify(&conn, Chain::Workspace).expect("verify");
        let p = v.problem.expect("problem");
        assert_eq!(p.entry_id, 3);
        assert!(
            p.message.contains("entries 2 to 2 are missing"),
            "{}",
            p.message
        );
    }

    #[test]
    fn a_deleted_tail_is_found_by_the_head() {
        let mut conn = chain_of(5);
        conn.execute("DELETE FROM audit_log WHERE id >= 4", [])
            .expect("delete");
        let v = verify(&conn, Chain::Workspace).expect("verify");
        assert!(v.problem.expect("problem").message.contains("after 3"));
        // And a later append does not hide it: the gap stays.
        append(&mut conn, Chain::Workspace, &entry("agent.create")).expect("append");
        let v = verify(&conn, Chain::Workspace).expect("verify");
        assert_eq!(v.problem.expect("problem").entry_id, 6);
    }

    #[test]
    fn swapped_entries_are_found() {
        let conn = chain_of(5);
        // Swap the contents (hashes included) of entries 2 and 3.
        conn.execute_batch(
            "UPDATE audit_log SET id = -2 WHERE id = 2;
             UPDATE audit_log SET id = 2 WHERE id = 3;
             UPDATE audit_log SET id = 3 WHERE id = -2;",
        )
        .expect("swap");
        let v = verify(&conn, Chain::Workspace).expect("verify");
        assert_eq!(v.problem.expect("problem").entry_id, 2);
    }

    #[test]
    fn a_rehashed_edit_breaks_the_next_link() {
        let conn = chain_of(4);
        let mut e = list(&conn, Chain::Workspace, &Filter::default(), Page::default())
            .expect("list")
            .into_iter()
            .find(|e| e.id == 2)
            .expect("entry 2");
        e.action = "nothing.happened".into();
        let h = entry_hash(Chain::Workspace, e.prev_hash.as_deref().unwrap_or(""), &e);
        conn.execute(
            "UPDATE audit_log SET action = ?1, hash = ?2 WHERE id = 2",
            params![e.action, h],
        )
        .expect("rewrite");
        let v = verify(&conn, Chain::Workspace).expect("verify");
        assert_eq!(v.problem.expect("problem").entry_id, 3);
    }

    #[test]
    fn filters_select_by_actor_action_and_time() {
        let mut conn = db();
        let mut a = entry("document.add");
        a.at = "2025-01-01T00:00:00.000Z".into();
        append(&mut conn, Chain::Workspace, &a).expect("a");
        let mut b = entry("agent.create");
        b.actor = "api_key".into();
        b.actor_id = Some("k1".into());
        b.at = "2025-02-01T00:00:00.000Z".into();
        append(&mut conn, Chain::Workspace, &b).expect("b");
        let ids = |f: Filter| -> Vec<i64> {
            list(&conn, Chain::Workspace, &f, Page::default())
                .expect("list")
                .iter()
                .map(|e| e.id)
                .collect()
        };
        assert_eq!(ids(Filter::default()), vec![2, 1]);
        let f =
            |actor: Option<&str>, action: Option<&str>, from: Option<&str>, to: Option<&str>| {
                Filter::parse(actor.map(Into::into), action.map(Into::into), from, to)
                    .expect("filter")
            };
        assert_eq!(ids(f(Some("api_key"), None, None, None)), vec![2]);
        assert_eq!(ids(f(Some("u1"), None, None, None)), vec![1]);
        assert_eq!(ids(f(None, Some("agent.*"), None, None)), vec![2]);
        assert_eq!(ids(f(None, Some("document.add"), None, None)), vec![1]);
        assert_eq!(ids(f(None, None, Some("2025-01-15"), None)), vec![2]);
        assert_eq!(
            ids(f(None, None, None, Some("2025-01-15T00:00:00Z"))),
            vec![1]
        );
        assert!(Filter::parse(None, None, Some("yesterday"), None).is_err());
    }
}
