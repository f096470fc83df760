//! Usage metering: counters per org, workspace and UTC day, batched in memory and flushed to
//! the control plane's `usage_daily` table.
//!
//! Counting is lock-light: a counter is an `AtomicU64` found under a read lock (the write lock
//! is taken only the first time an org/workspace/day/metric is seen). [`Usage::flush`] swaps
//! every counter to zero and adds the amounts to the table in one transaction (on failure the
//! amounts are put back); the server flushes every `service::USAGE_FLUSH` (5 s) and at shutdown. A
//! process killed with `kill -9` loses what was counted since the last flush (at most that
//! many seconds of usage); nothing is counted twice.
//!
//! Gauges (`storage_bytes`, `documents`) are samples: the table keeps the largest of the day,
//! and a month reports the largest of its days.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{Datelike, NaiveDate};
use rusqlite::{params, Connection};
use serde::Serialize;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Rough token count (about four characters per token), for chat's budgets and for usage
/// when a provider reports none or for embeddings (no provider reports those).
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    RequestsSearch,
    RequestsChat,
    RequestsIngest,
    RequestsMcp,
    RequestsOpenai,
    ChatPromptTokens,
    ChatCompletionTokens,
    EmbeddingChunks,
    EmbeddingTokens,
    IngestBytes,
    DocumentsAdded,
    /// Gauge: documents in the workspace when sampled.
    Documents,
    /// Gauge: bytes of the workspace's folder (database, index, blobs) when sampled.
    StorageBytes,
    QuotaRefusals,
    RateLimitRefusals,
}

impl Metric {
    pub const ALL: [Metric; 15] = [
        Metric::RequestsSearch,
        Metric::RequestsChat,
        Metric::RequestsIngest,
        Metric::RequestsMcp,
        Metric::RequestsOpenai,
        Metric::ChatPromptTokens,
        Metric::ChatCompletionTokens,
        Metric::EmbeddingChunks,
        Metric::EmbeddingTokens,
        Metric::IngestBytes,
        Metric::DocumentsAdded,
        Metric::Documents,
        Metric::StorageBytes,
        Metric::QuotaRefusals,
        Metric::RateLimitRefusals,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Metric::RequestsSearch => "requests_search",
            Metric::RequestsChat => "requests_chat",
            Metric::RequestsIngest => "requests_ingest",
            Metric::RequestsMcp => "requests_mcp",
            Metric::RequestsOpenai => "requests_openai",
            Metric::ChatPromptTokens => "chat_prompt_tokens",
            Metric::ChatCompletionTokens => "chat_completion_tokens",
            Metric::EmbeddingChunks => "embedding_chunks",
            Metric::EmbeddingTokens => "embedding_tokens",
            Metric::IngestBytes => "ingest_bytes",
            Metric::DocumentsAdded => "documents_added",
            Metric::Documents => "documents",
            Metric::StorageBytes => "storage_bytes",
            Metric::QuotaRefusals => "quota_refusals",
            Metric::RateLimitRefusals => "rate_limit_refusals",
        }
    }

    pub fn parse(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    pub const fn is_gauge(self) -> bool {
        matches!(self, Metric::Documents | Metric::StorageBytes)
    }
}

/// The kinds of request that are counted (answered 2xx in a workspace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Search,
    Chat,
    Ingest,
    Mcp,
    OpenAi,
}

impl RequestKind {
    pub const fn metric(self) -> Metric {
        match self {
            RequestKind::Search => Metric::RequestsSearch,
            RequestKind::Chat => Metric::RequestsChat,
            RequestKind::Ingest => Metric::RequestsIngest,
            RequestKind::Mcp => Metric::RequestsMcp,
            RequestKind::OpenAi => Metric::RequestsOpenai,
        }
    }
}

/// Why a request was refused before any work (issue 12's quotas and rate limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Quota,
    RateLimit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    org: Uuid,
    ws: Option<Uuid>,
    day: NaiveDate,
    metric: Metric,
}

/// The in-memory counters of one process.
#[derive(Debug, Default)]
pub struct Usage {
    counters: RwLock<HashMap<Key, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<Key, u64>>,
    /// Refusals since start, for `/metrics` (no tenant label).
    refusals: [AtomicU64; 2],
}

impl Usage {
    /// Adds `n` to a counter of `org` (and `ws`, when the usage is a workspace's) on `day`.
    pub fn add(&self, day: NaiveDate, org: Uuid, ws: Option<Uuid>, metric: Metric, n: u64) {
        if n == 0 {
            return;
        }
        if metric.is_gauge() {
            self.sample(day, org, ws, metric, n);
            return;
        }
        let key = Key {
            org,
            ws,
            day,
            metric,
        };
        if let Some(c) = self
            .counters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            c.fetch_add(n, Ordering::Relaxed);
            return;
        }
        self.counters
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .fetch_add(n, Ordering::Relaxed);
    }

    /// Records a sample of a gauge (the day keeps its largest).
    pub fn sample(&self, day: NaiveDate, org: Uuid, ws: Option<Uuid>, metric: Metric, v: u64) {
        let key = Key {
            org,
            ws,
            day,
            metric,
        };
        let mut g = self.gauges.lock().unwrap_or_else(|p| p.into_inner());
        let cell = g.entry(key).or_default();
        *cell = (*cell).max(v);
    }

    /// Counts a refusal (quota or rate limit) of `org` (and `ws`) on `day`.
    pub fn refusal(&self, day: NaiveDate, org: Uuid, ws: Option<Uuid>, kind: Refusal) {
        let (i, metric) = match kind {
            Refusal::Quota => (0, Metric::QuotaRefusals),
            Refusal::RateLimit => (1, Metric::RateLimitRefusals),
        };
        self.refusals[i].fetch_add(1, Ordering::Relaxed);
        self.add(day, org, ws, metric, 1);
    }

    /// What is counted in memory and not flushed yet for `org` (every workspace and the org
    /// itself) between `from` and `to` (both included) in `metrics`: with the flushed rows,
    /// a monthly allowance's usage (`governance::monthly`).
    pub fn pending(&self, org: Uuid, from: NaiveDate, to: NaiveDate, metrics: &[Metric]) -> u64 {
        self.counters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(k, _)| {
                k.org == org && k.day >= from && k.day <= to && metrics.contains(&k.metric)
            })
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .fold(0u64, u64::saturating_add)
    }

    /// Refusals since start: (quota, rate limit).
    pub fn refusals_total(&self) -> (u64, u64) {
        (
            self.refusals[0].load(Ordering::Relaxed),
            self.refusals[1].load(Ordering::Relaxed),
        )
    }

    /// Writes what was counted since the last flush to `usage_daily` in one transaction and
    /// returns how many cells it wrote. On failure the amounts are kept for the next flush.
    pub fn flush(&self, conn: &mut Connection) -> Result<usize> {
        let taken: Vec<(Key, u64)> = {
            let counters = self.counters.read().unwrap_or_else(|p| p.into_inner());
            counters
                .iter()
                .filter_map(|(k, c)| {
                    let v = c.swap(0, Ordering::Relaxed);
                    (v > 0).then_some((*k, v))
                })
                .collect()
        };
        let gauges: Vec<(Key, u64)> =
            std::mem::take(&mut *self.gauges.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        if taken.is_empty() && gauges.is_empty() {
            self.prune();
            return Ok(0);
        }
        let written = write_cells(conn, &taken, &gauges);
        if let Err(e) = written {
            for (k, v) in taken {
                self.add(k.day, k.org, k.ws, k.metric, v);
            }
            for (k, v) in gauges {
                self.sample(k.day, k.org, k.ws, k.metric, v);
            }
            return Err(e);
        }
        self.prune();
        Ok(taken.len() + gauges.len())
    }

    /// Drops the zeroed counters of past days (a day's cells live until the day after).
    fn prune(&self) {
        let Some(newest) = self
            .counters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .map(|k| k.day)
            .max()
        else {
            return;
        };
        let mut counters = self.counters.write().unwrap_or_else(|p| p.into_inner());
        counters.retain(|k, c| k.day >= newest || c.load(Ordering::Relaxed) > 0);
    }
}

fn write_cells(
    conn: &mut Connection,
    counters: &[(Key, u64)],
    gauges: &[(Key, u64)],
) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Counters add up; gauges (samples) keep the day's largest.
    for (cells, merge) in [
        (counters, "value + excluded.value"),
        (gauges, "max(value, excluded.value)"),
    ] {
        let mut upsert = tx.prepare_cached(&format!(
            "INSERT INTO usage_daily (org_id, workspace_id, day, metric, value)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (org_id, day, workspace_id, metric)
             DO UPDATE SET value = {merge}"
        ))?;
        for (k, v) in cells {
            upsert.execute(params![
                k.org.to_string(),
                k.ws.map(|w| w.to_string()).unwrap_or_default(),
                k.day.format("%Y-%m-%d").to_string(),
                k.metric.name(),
                i64::try_from(*v).unwrap_or(i64::MAX)
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Day or month periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Day,
    Month,
}

impl Granularity {
    pub fn parse(s: Option<&str>) -> Result<Granularity> {
        match s.map(str::trim) {
            None | Some("") | Some("day") => Ok(Granularity::Day),
            Some("month") => Ok(Granularity::Month),
            Some(other) => Err(Error::invalid(format!(
                "granularity must be day or month, not {other:?}"
            ))),
        }
    }
}

/// Longest range a usage query covers, in days.
pub const MAX_RANGE_DAYS: i64 = 400;
/// Most rows a usage query answers (narrow the range or name an org beyond it).
pub const MAX_ROWS: usize = 100_000;

/// A usage query: a range of days (both included), a granularity, and optionally one org
/// and one workspace; `by_workspace` keeps workspaces apart instead of summing them per org.
#[derive(Debug, Clone)]
pub struct Query {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub granularity: Granularity,
    pub org: Option<Uuid>,
    pub workspace: Option<Uuid>,
    pub by_workspace: bool,
}

impl Query {
    /// Parses `from` and `to` (`YYYY-MM-DD`, or `YYYY-MM` for a whole month; `to` defaults to
    /// `today`, `from` to the first day of `to`'s month).
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        granularity: Option<&str>,
        today: NaiveDate,
    ) -> Result<Query> {
        let date = |name: &str, s: &str, end: bool| -> Result<NaiveDate> {
            let s = s.trim();
            if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                return Ok(d);
            }
            if let Ok(first) = NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d") {
                return Ok(if end { last_of_month(first) } else { first });
            }
            Err(Error::invalid(format!(
                "{name} must be a date (2025-01-31) or a month (2025-01), not {s:?}"
            )))
        };
        let to = match to {
            Some(t) if !t.trim().is_empty() => date("to", t, true)?,
            _ => today,
        };
        let from = match from {
            Some(f) if !f.trim().is_empty() => date("from", f, false)?,
            _ => to.with_day(1).unwrap_or(to),
        };
        if from > to {
            return Err(Error::invalid("from must not be after to"));
        }
        if (to - from).num_days() >= MAX_RANGE_DAYS {
            return Err(Error::invalid(format!(
                "the range is too long: at most {MAX_RANGE_DAYS} days per query"
            )));
        }
        Ok(Query {
            from,
            to,
            granularity: Granularity::parse(granularity)?,
            org: None,
            workspace: None,
            by_workspace: false,
        })
    }
}

fn last_of_month(first: NaiveDate) -> NaiveDate {
    let (y, m) = if first.month() == 12 {
        (first.year() + 1, 1)
    } else {
        (first.year(), first.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)
        .and_then(|d| d.pred_opt())
        .unwrap_or(first)
}

/// One row of a usage report: an org (and a workspace, when kept apart), a period, and every
/// metric (zero when nothing was counted).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub org_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<Uuid>,
    /// `YYYY-MM-DD` or `YYYY-MM`.
    pub period: String,
    #[serde(flatten)]
    pub metrics: BTreeMap<&'static str, u64>,
}

impl Row {
    pub fn get(&self, m: Metric) -> u64 {
        self.metrics.get(m.name()).copied().unwrap_or(0)
    }
}

/// The report of `q` from `usage_daily`, ordered by org, period and workspace.
pub fn report(conn: &Connection, q: &Query) -> Result<Vec<Row>> {
    let period_len = match q.granularity {
        Granularity::Day => 10,
        Granularity::Month => 7,
    };
    let gauges: Vec<String> = Metric::ALL
        .iter()
        .filter(|m| m.is_gauge())
        .map(|m| format!("'{}'", m.name()))
        .collect();
    let sql = format!(
        "SELECT org_id, workspace_id, substr(day, 1, {period_len}) AS period, metric,
                CASE WHEN metric IN ({gauges}) THEN max(value) ELSE sum(value) END AS value
         FROM usage_daily
         WHERE day >= ?1 AND day <= ?2
           AND (?3 IS NULL OR org_id = ?3) AND (?4 IS NULL OR workspace_id = ?4)
         GROUP BY org_id, workspace_id, period, metric
         ORDER BY org_id, period, workspace_id",
        gauges = gauges.join(", ")
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![
        q.from.format("%Y-%m-%d").to_string(),
        q.to.format("%Y-%m-%d").to_string(),
        q.org.map(|o| o.to_string()),
        q.workspace.map(|w| w.to_string()),
    ])?;
    let mut out: BTreeMap<(Uuid, String, Option<Uuid>), BTreeMap<&'static str, u64>> =
        BTreeMap::new();
    while let Some(r) = rows.next()? {
        let org: String = r.get("org_id")?;
        let ws: String = r.get("workspace_id")?;
        let period: String = r.get("period")?;
        let metric: String = r.get("metric")?;
        let value: i64 = r.get("value")?;
        let (Ok(org), Some(metric)) = (Uuid::try_parse(&org), Metric::parse(&metric)) else {
            continue;
        };
        let ws = if q.by_workspace || q.workspace.is_some() {
            Some(Uuid::try_parse(&ws).ok())
        } else {
            None
        };
        let key = (org, period, ws.flatten());
        if !out.contains_key(&key) && out.len() >= MAX_ROWS {
            return Err(Error::invalid(format!(
                "the report would have more than {MAX_ROWS} rows: narrow the range or name an org"
            )));
        }
        let cell = out
            .entry(key)
            .or_insert_with(|| Metric::ALL.iter().map(|m| (m.name(), 0)).collect())
            .entry(metric.name())
            .or_default();
        // Per-workspace rows are already grouped; summing workspaces of an org adds their
        // gauges too (an org's storage is the sum of its workspaces').
        *cell = cell.saturating_add(u64::try_from(value).unwrap_or(0));
    }
    Ok(out
        .into_iter()
        .map(|((org_id, period, workspace_id), metrics)| Row {
            org_id,
            workspace_id,
            period,
            metrics,
        })
        .collect())
}

/// The report as CSV: a header, then one line per row with every metric as a column.
pub fn to_csv(rows: &[Row]) -> String {
    let mut out = String::from("org_id,workspace_id,period");
    for m in Metric::ALL {
        out.push(',');
        out.push_str(m.name());
    }
    out.push('\n');
    for r in rows {
        out.push_str(&r.org_id.to_string());
        out.push(',');
        if let Some(w) = r.workspace_id {
            out.push_str(&w.to_string());
        }
        out.push(',');
        out.push_str(&r.period);
        for m in Metric::ALL {
            out.push(',');
            out.push_str(&r.get(m).to_string());
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().expect("open");
        crate::db::migrate(&mut conn, crate::control::MIGRATIONS).expect("migrate");
        conn
    }

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    #[test]
    fn counters_flush_add_up_and_gauges_keep_the_largest() {
        let mut conn = db();
        let u = Usage::default();
        let (org, a, b) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let d1 = day("2025-03-01");
        let d2 = day("2025-03-02");
        u.add(d1, org, Some(a), Metric::RequestsSearch, 2);
        u.add(d1, org, Some(b), Metric::RequestsSearch, 3);
        u.add(d2, org, Some(a), Metric::ChatPromptTokens, 10);
        u.sample(d1, org, Some(a), Metric::StorageBytes, 100);
        u.sample(d1, org, Some(a), Metric::StorageBytes, 70);
        u.refusal(d1, org, None, Refusal::Quota);
        assert_eq!(u.flush(&mut conn).expect("flush"), 5);
        // A second flush adds only what came after the first.
        u.add(d1, org, Some(a), Metric::RequestsSearch, 1);
        u.sample(d2, org, Some(a), Metric::StorageBytes, 50);
        u.flush(&mut conn).expect("flush");
        assert_eq!(u.flush(&mut conn).expect("nothing new"), 0);

        let mut q = Query::parse(Some("2025-03-01"), Some("2025-03-31"), None, d2).expect("q");
        let rows = report(&conn, &q).expect("report");
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].period, "2025-03-01");
        assert_eq!(rows[0].get(Metric::RequestsSearch), 6);
        assert_eq!(rows[0].get(Metric::StorageBytes), 100);
        assert_eq!(rows[0].get(Metric::QuotaRefusals), 1);
        assert_eq!(rows[1].get(Metric::ChatPromptTokens), 10);

        q.granularity = Granularity::Month;
        let rows = report(&conn, &q).expect("month");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].period, "2025-03");
        assert_eq!(rows[0].get(Metric::RequestsSearch), 6);
        assert_eq!(
            rows[0].get(Metric::StorageBytes),
            100,
            "largest of the month"
        );

        q.by_workspace = true;
        let rows = report(&conn, &q).expect("by workspace");
        let of = |w: Option<Uuid>| rows.iter().find(|r| r.workspace_id == w).expect("row");
        assert_eq!(of(Some(a)).get(Metric::RequestsSearch), 3);
        assert_eq!(of(Some(b)).get(Metric::RequestsSearch), 3);
        assert_eq!(of(None).get(Metric::QuotaRefusals), 1);
        assert_eq!(u.refusals_total(), (1, 0));

        let csv = to_csv(&rows);
        assert!(csv.starts_with("org_id,workspace_id,period,requests_search,"));
        assert_eq!(csv.lines().count(), 1 + rows.len());
    }

    #[test]
    fn a_failed_flush_keeps_the_amounts() {
        let mut conn = db();
        let u = Usage::default();
        let org = Uuid::from_u128(1);
        u.add(day("2025-03-01"), org, None, Metric::IngestBytes, 7);
        conn.execute_batch("DROP TABLE usage_daily").expect("drop");
        assert!(u.flush(&mut conn).is_err());
        let mut conn = db();
        u.flush(&mut conn).expect("flush");
        let q = Query::parse(
            Some("2025-03"),
            Some("2025-03"),
            Some("month"),
            day("2025-03-05"),
        )
        .expect("q");
        assert_eq!(report(&conn, &q).expect("r")[0].get(Metric::IngestBytes), 7);
    }

    #[test]
    fn queries_are_checked() {
        let today = day("2025-03-10");
        let q = Query::parse(None, None, None, today).expect("defaults");
        assert_eq!((q.from, q.to), (day("2025-03-01"), today));
        let q = Query::parse(Some("2024-02"), Some("2024-02"), None, today).expect("month");
        assert_eq!(q.to, day("2024-02-29"));
        assert!(Query::parse(Some("2025-03-05"), Some("2025-03-01"), None, today).is_err());
        assert!(Query::parse(Some("2020-01-01"), Some("2025-01-01"), None, today).is_err());
        assert!(Query::parse(Some("last week"), None, None, today).is_err());
        assert!(Query::parse(None, None, Some("year"), today).is_err());
    }
}
