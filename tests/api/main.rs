//! API integration tests: a real server on a loopback port, real HTTP.

mod harness;
mod knowledge;
mod lifecycle;
mod orgs;
mod registry;
mod traversal;
mod workspaces;
