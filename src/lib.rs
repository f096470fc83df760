//! Enclave: a self-hosted, single-binary, multi-tenant knowledge base.
//!
//! The module map and the invariants are in `ARCHITECTURE.md`.

pub mod app;
pub mod bench;
pub mod chat;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod crypto;
pub mod db;
pub mod durability;
pub mod embed;
pub mod error;
pub mod filter;
pub mod governance;
pub mod histogram;
pub mod http;
pub mod identity;
pub mod ids;
pub mod knowledge;
pub mod perms;
pub mod roles;
pub mod server;
pub mod task;
pub mod tenancy;
pub mod tls;
pub mod workspace;

pub use error::{Error, Result};
