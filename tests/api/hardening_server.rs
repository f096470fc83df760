//! Hardening (issue 10): server.
