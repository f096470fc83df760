//! Hardening (issue 10): access.
