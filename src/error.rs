//! The domain error: one typed enum for everything below the HTTP layer.
//! `http::error` maps it to SPEC's status codes in one place.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of resource an error is about, for clear messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Org,
    Workspace,
    Route,
    User,
    Member,
    Invitation,
    ApiKey,
    Agent,
    Session,
    Provider,
    Document,
    Job,
    Plan,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Org => "organization",
            Resource::Workspace => "workspace",
            Resource::Route => "route",
            Resource::User => "user",
            Resource::Member => "member",
            Resource::Invitation => "invitation",
            Resource::ApiKey => "API key",
            Resource::Agent => "agent",
            Resource::Session => "chat session",
            Resource::Provider => "provider",
            Resource::Document => "document",
            Resource::Job => "job",
            Resource::Plan => "plan",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field or id from the caller is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The resource does not exist, or the caller may not know that it does.
    #[error("{0} not found")]
    NotFound(Resource),
    /// A uniqueness rule (slug) was violated.
    #[error("{0}")]
    Conflict(String),
    /// No credential, or one that is malformed, unknown, expired or revoked.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid credential without the role or scope the action needs.
    #[error("{0}")]
    Forbidden(String),
    /// Too many attempts (login throttling); retry after this many seconds.
    #[error("too many attempts: try again in {0} seconds")]
    RateLimited(u64),
    /// A quota of the org's plan would be exceeded: nothing was done.
    #[error("the organization's plan allows {limit} {resource}; {used} are used: nothing was done (free some, or ask the operator for a larger plan)")]
    QuotaExceeded {
        resource: &'static str,
        limit: u64,
        used: u64,
    },
    /// A request rate limit was reached; retry after this many seconds.
    #[error("rate limit reached: retry in {0} seconds")]
    TooManyRequests(u64),
    /// The model provider failed, timed out or answered something unusable.
    #[error("{0}")]
    Provider(String),
    /// The organization is suspended.
    #[error("the organization is suspended")]
    Suspended,
    /// Every slot of the open-workspace cache is held by requests in flight.
    #[error("the server is busy: every open workspace slot is in use, try again shortly")]
    Busy,
    /// An upload is over the configured size limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A file type Enclave does not ingest.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A write failed for lack of space (disk full or quota exceeded). Reads keep working.
    #[error("{0}")]
    InsufficientStorage(String),
    /// A store's files cannot be read (a corrupt database): the message names the workspace.
    #[error("{0}")]
    Corrupt(String),
    /// The workspace's full-text index is being rebuilt from its database; retry shortly.
    #[error("{0}")]
    IndexUnavailable(String),
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    #[error("index error: {0}")]
    Index(tantivy::TantivyError),
    #[error("io error: {0}")]
    Io(std::io::Error),
    /// Anything else that is the server's fault.
    #[error("{0}")]
    Internal(String),
    /// One item of a batch request was refused (the whole batch with it): its index in the
    /// batch (from 0) and why. Answered as the item's own error, naming the index.
    #[error("item {index}: {error}")]
    BatchItem { index: usize, error: Box<Error> },
}

/// The message of [`Error::InsufficientStorage`].
pub const STORAGE_FULL_MESSAGE: &str =
    "the server's disk is full: the change was not saved; reads and deletions keep working, \
     retry once space has been freed";

/// Whether an I/O error means the disk (or the quota) is full.
pub fn io_is_storage_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Whether any error in `err`'s source chain is a full disk. Tantivy reports some I/O failures
/// of its threads only as text, so the text of the chain is checked too.
fn chain_is_storage_full(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io_is_storage_full(io) {
                return true;
            }
        }
        let text = e.to_string();
        if text.contains("No space left on device")
            || text.contains("Disk quota exceeded")
            || text.contains("os error 28")
            || text.contains("os error 122")
        {
            return true;
        }
        cur = e.source();
    }
    false
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        if io_is_storage_full(&e) {
            tracing::warn!(error = %e, "write failed: disk full");
            return Error::InsufficientStorage(STORAGE_FULL_MESSAGE.into());
        }
        Error::Io(e)
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        let full = matches!(
            &e,
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull
        ) || chain_is_storage_full(&e);
        if full {
            tracing::warn!(error = %e, "database write failed: disk full");
            return Error::InsufficientStorage(STORAGE_FULL_MESSAGE.into());
        }
        Error::Sqlite(e)
    }
}

impl From<tantivy::TantivyError> for Error {
    fn from(e: tantivy::TantivyError) -> Self {
        if chain_is_storage_full(&e) {
            tracing::warn!(error = %e, "index write failed: disk full");
            return Error::InsufficientStorage(STORAGE_FULL_MESSAGE.into());
        }
        Error::Index(e)
    }
}

impl Error {
    /// True for a write that failed for lack of space.
    pub fn is_storage_full(&self) -> bool {
        match self {
            Error::BatchItem { error, .. } => error.is_storage_full(),
            e => matches!(e, Error::InsufficientStorage(_)),
        }
    }

    /// `self` as the refusal of the batch item at `index`.
    pub fn at_item(self, index: usize) -> Error {
        match self {
            e @ Error::BatchItem { .. } => e,
            e => Error::BatchItem {
                index,
                error: Box::new(e),
            },
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    pub fn unauthenticated(msg: impl Into<String>) -> Self {
        Error::Unauthenticated(msg.into())
    }

    pub fn forbidden(msg: impl Into<String>) -> Self {
        Error::Forbidden(msg.into())
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }

    /// True when a SQLite error is a UNIQUE constraint violation.
    pub fn is_unique_violation(err: &rusqlite::Error) -> bool {
        matches!(
            err,
            rusqlite::Error::SqliteFailure(e, _)
                if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
        )
    }
}
