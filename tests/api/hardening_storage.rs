//! Hardening (issue 10): storage.
