//! Hardening (issue 10): ingest.
