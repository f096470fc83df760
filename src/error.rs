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
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("index error: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    /// Anything else that is the server's fault.
    #[error("{0}")]
    Internal(String),
}

impl Error {
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
