//! API integration tests: a real server on a loopback port, real HTTP.

mod auth;
mod authz_prop;
mod backup;
mod chat;
mod cli;
mod clients;
mod crash;
mod dataplane;
mod doc_files;
mod durability;
mod facade;
mod hardening_access;
mod hardening_ingest;
mod hardening_query;
mod hardening_server;
mod hardening_storage;
mod harness;
mod knowledge;
mod lifecycle;
mod mock_llm;
mod orgs;
mod registry;
mod tmpfs;
mod traversal;
mod workspaces;
