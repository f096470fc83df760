//! Knowledge: documents become searchable by full text, by meaning and by both.
//!
//! - [`extract`] turns files into structural blocks, [`chunk`] cuts them into chunks;
//! - [`store`] keeps documents, blobs and jobs in the workspace database; [`bulk`] writes
//!   batches of documents at once (`POST /documents/batch`);
//! - [`ingest`] does the jobs' work in quanta, which the server-wide [`scheduler`] hands out
//!   fairly across workspaces, weighted by plan priority;
//! - [`embedders`] selects a workspace's embedder, [`vectors`] keeps its vector tables (int8
//!   through [`quant`], or sqlite-vec floats), and
//!   [`ann`] their in-memory binary codes for fast approximate search of large workspaces;
//! - [`caches`] keeps the codes and the allowed chunks of recent filters with each open
//!   workspace;
//! - [`search`] runs full-text, vector and hybrid search with [`filter`]s;
//! - [`service`] is the API of all this on [`crate::app::App`].

pub mod ann;
pub mod bulk;
pub mod caches;
pub mod chunk;
pub mod embedders;
pub mod extract;
pub use crate::filter;
pub mod ingest;
pub mod quant;
pub mod scheduler;
pub mod search;
pub mod service;
pub mod status;
pub mod store;
pub mod vectors;

pub use embedders::{EmbedderConfig, Embedders};
pub use filter::Filter;
pub use search::{Mode, SearchRequest, SearchResponse, SearchResult};
pub use service::{DocumentInput, IngestPermit, JobWait, Knowledge, OrgProviders};
pub use status::{DocumentStatus, JobKind, JobPhase, JobStatus};
pub use store::{Added, DocumentView, JobView};

/// PDF and DOCX writers for tests, shared with the API tests.
#[cfg(test)]
#[path = "../../tests/api/doc_files.rs"]
pub(crate) mod doc_files;
