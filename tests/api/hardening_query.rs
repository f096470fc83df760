//! Hardening (issue 10): query.
