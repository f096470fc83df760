//! Monthly allowances (chat tokens, embedding chunks): what an org used in the current calendar
//! month (UTC, by the server's clock) is read through [`UsageSource`], implemented by
//! [`Governance`] over the metered usage of part B: the month's rows of `usage_daily` plus the
//! amounts counted in memory and not flushed yet. So an allowance survives a restart (it loses
//! at most what a `kill -9` loses of usage, `USAGE_FLUSH`), and the command line and the
//! server agree on it. Chat tokens are a chat answer's prompt plus completion tokens
//! (`chat_prompt_tokens` + `chat_completion_tokens`); embedding chunks are `embedding_chunks`
//! (first embeddings and re-embeddings), both counted by the metering hooks of chat and
//! knowledge.

use chrono::{Datelike, NaiveDate};
use rusqlite::{params, Connection};
use uuid::Uuid;

use super::usage::{Metric, Usage};
use super::Governance;
use crate::control::limits::Limit;
use crate::error::Result;

/// A resource with a monthly allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Monthly {
    ChatTokens,
    EmbeddingChunks,
}

impl Monthly {
    pub fn limit(self) -> Limit {
        match self {
            Monthly::ChatTokens => Limit::ChatTokensPerMonth,
            Monthly::EmbeddingChunks => Limit::EmbeddingChunksPerMonth,
        }
    }

    /// The metered counters that add up to it.
    pub fn metrics(self) -> &'static [Metric] {
        match self {
            Monthly::ChatTokens => &[Metric::ChatPromptTokens, Metric::ChatCompletionTokens],
            Monthly::EmbeddingChunks => &[Metric::EmbeddingChunks],
        }
    }
}

/// Where monthly usage is read from.
pub trait UsageSource: Send + Sync {
    /// The org's usage of `what` in the current calendar month.
    fn used_this_month(&self, org: Uuid, what: Monthly) -> Result<u64>;
}

impl UsageSource for Governance {
    fn used_this_month(&self, org: Uuid, what: Monthly) -> Result<u64> {
        // Under the connection's lock: a flush (which takes it too) moves amounts from memory
        // to the table all at once, never while they are being added up here.
        let db = self.db();
        month_usage(&db, &self.usage, org, self.today(), what)
    }
}

/// The first and last day of `day`'s month.
fn month_of(day: NaiveDate) -> (NaiveDate, NaiveDate) {
    let first = day.with_day(1).unwrap_or(day);
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    };
    (first, next.and_then(|d| d.pred_opt()).unwrap_or(day))
}

/// `what` of `org` in `today`'s month: flushed rows plus unflushed counters.
fn month_usage(
    conn: &Connection,
    usage: &Usage,
    org: Uuid,
    today: NaiveDate,
    what: Monthly,
) -> Result<u64> {
    let (from, to) = month_of(today);
    let mut stmt = conn.prepare_cached(
        "SELECT coalesce(sum(value), 0) FROM usage_daily
         WHERE org_id = ?1 AND day >= ?2 AND day <= ?3 AND metric = ?4",
    )?;
    let mut total = 0u64;
    for m in what.metrics() {
        let v: i64 = stmt.query_row(
            params![
                org.to_string(),
                from.format("%Y-%m-%d").to_string(),
                to.format("%Y-%m-%d").to_string(),
                m.name()
            ],
            |r| r.get(0),
        )?;
        total = total.saturating_add(u64::try_from(v).unwrap_or(0));
    }
    Ok(total.saturating_add(usage.pending(org, from, to, what.metrics())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    #[test]
    fn the_month_adds_flushed_and_unflushed_usage_of_the_org() {
        let mut conn = Connection::open_in_memory().expect("open");
        crate::db::migrate(&mut conn, crate::control::MIGRATIONS).expect("migrate");
        let u = Usage::default();
        let (org, other, ws) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        // Last month, this month (two workspaces' worth), another org.
        u.add(
            day("2025-02-28"),
            org,
            Some(ws),
            Metric::ChatPromptTokens,
            1000,
        );
        u.add(
            day("2025-03-01"),
            org,
            Some(ws),
            Metric::ChatPromptTokens,
            10,
        );
        u.add(
            day("2025-03-02"),
            org,
            None,
            Metric::ChatCompletionTokens,
            5,
        );
        u.add(
            day("2025-03-02"),
            other,
            Some(ws),
            Metric::ChatPromptTokens,
            70,
        );
        u.add(day("2025-03-02"), org, Some(ws), Metric::EmbeddingChunks, 3);
        u.flush(&mut conn).expect("flush");
        // Counted since the flush, still in memory.
        u.add(
            day("2025-03-03"),
            org,
            Some(ws),
            Metric::ChatCompletionTokens,
            2,
        );
        u.add(day("2025-03-03"), org, Some(ws), Metric::EmbeddingChunks, 4);
        u.add(
            day("2025-04-01"),
            org,
            Some(ws),
            Metric::EmbeddingChunks,
            100,
        );
        let today = day("2025-03-31");
        let chat = month_usage(&conn, &u, org, today, Monthly::ChatTokens).expect("chat");
        assert_eq!(chat, 10 + 5 + 2);
        let chunks = month_usage(&conn, &u, org, today, Monthly::EmbeddingChunks).expect("emb");
        assert_eq!(chunks, 3 + 4);
        // A flush moves amounts without changing the month's total.
        u.flush(&mut conn).expect("flush");
        assert_eq!(
            month_usage(&conn, &u, org, today, Monthly::ChatTokens).expect("chat"),
            17
        );
        // A new month starts from zero.
        assert_eq!(
            month_usage(&conn, &u, org, day("2025-05-01"), Monthly::ChatTokens).expect("may"),
            0
        );
        assert_eq!(
            month_of(day("2024-02-10")),
            (day("2024-02-01"), day("2024-02-29"))
        );
        assert_eq!(
            month_of(day("2024-12-31")),
            (day("2024-12-01"), day("2024-12-31"))
        );
    }
}
