//! Running blocking work (SQLite, Tantivy, files) from async code.

use crate::error::{Error, Result};

/// Runs blocking work off the async threads, inside the current log span.
pub async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(f)).await {
        Ok(r) => r,
        Err(e) => Err(Error::internal(format!("task failed: {e}"))),
    }
}
