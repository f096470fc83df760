//! The states of documents and jobs, as stored in the workspace database and shown by the API.
//!
//! Each enum is written to SQLite and to JSON as its lowercase name (`as_str`), so stored rows
//! and API bodies are the same strings as before they were typed. SQL that filters by state
//! inside a query writes the same names as literals; the sets used by several queries are the
//! `*_SQL` constants here.

use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::Serialize;

/// Declares a string-backed enum: `as_str`, `parse`, `Display`, serde and SQLite conversions.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stored and serialized name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value named `s`, if any.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        /// In the API contract: a string, one of the names (serde's renames inside a macro are
        /// not seen by the derive, so the schema is written from `ALL`).
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some($name::ALL.iter().map(|v| v.as_str())))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let s = value.as_str()?;
                $name::parse(s).ok_or_else(|| {
                    FromSqlError::Other(format!(concat!("unknown ", stringify!($name), " {:?}"), s).into())
                })
            }
        }
    };
}

string_enum! {
    /// Where a document is in its ingestion.
    DocumentStatus {
        /// Stored, its job not started.
        Pending => "pending",
        /// Chunks are being written, or written and not yet in the full-text index.
        Indexing => "indexing",
        /// Searchable.
        Indexed => "indexed",
        /// Its job failed (the error says why).
        Failed => "failed",
    }
}

string_enum! {
    /// Where a job is.
    JobStatus {
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
    }
}

string_enum! {
    /// The step a running job is at (an ingestion job goes queued → fulltext → embedding → done;
    /// a re-embedding job queued → done).
    JobPhase {
        Queued => "queued",
        /// Written to SQLite, waiting for the full-text commit.
        Fulltext => "fulltext",
        /// In the full-text index, waiting for its vectors.
        Embedding => "embedding",
        Done => "done",
    }
}

string_enum! {
    /// What a job does.
    JobKind {
        /// Extract, chunk, index and embed one document.
        Ingest => "ingest",
        /// Re-embed every chunk into a new vector space.
        Reembed => "reembed",
    }
}

impl JobStatus {
    /// Whether the job has not reached an end (it is queued or running).
    pub fn is_unfinished(self) -> bool {
        matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// SQL set of the unfinished job statuses, for `status IN {UNFINISHED_JOBS_SQL}`.
pub const UNFINISHED_JOBS_SQL: &str = "('queued', 'running')";

/// SQL set of the document statuses whose job is still at work.
pub const DOCUMENTS_IN_PROGRESS_SQL: &str = "('pending', 'indexing')";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_sqlite_and_json() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for s in JobStatus::ALL {
            let back: JobStatus = conn.query_row("SELECT ?1", [s], |r| r.get(0)).unwrap();
            assert_eq!(back, *s);
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
        }
        for s in DocumentStatus::ALL {
            let back: DocumentStatus = conn.query_row("SELECT ?1", [s], |r| r.get(0)).unwrap();
            assert_eq!(back, *s);
        }
        for p in JobPhase::ALL {
            let back: JobPhase = conn.query_row("SELECT ?1", [p], |r| r.get(0)).unwrap();
            assert_eq!(back, *p);
        }
        for k in JobKind::ALL {
            let back: JobKind = conn.query_row("SELECT ?1", [k], |r| r.get(0)).unwrap();
            assert_eq!(back, *k);
        }
        let bad: rusqlite::Result<JobStatus> = conn.query_row("SELECT 'paused'", [], |r| r.get(0));
        assert!(bad.is_err());
    }

    #[test]
    fn the_sql_sets_name_the_same_states() {
        let unfinished: Vec<_> = JobStatus::ALL
            .iter()
            .filter(|s| s.is_unfinished())
            .map(|s| format!("'{s}'"))
            .collect();
        assert_eq!(UNFINISHED_JOBS_SQL, format!("({})", unfinished.join(", ")));
        assert_eq!(
            DOCUMENTS_IN_PROGRESS_SQL,
            format!(
                "('{}', '{}')",
                DocumentStatus::Pending,
                DocumentStatus::Indexing
            )
        );
    }
}
