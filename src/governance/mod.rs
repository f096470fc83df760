//! Governance (issue 12), one service: [`Governance`] (`service.rs`, owned by `App`).
//! Part B: audit chains (`audit`), usage metering (`usage`), metrics, the request choke point
//! (`routes`, `service`). Part A: plans and limits (`plans`: the org's effective limits,
//! plan and override administration; the types are `control::limits`), quotas checked and
//! reserved before work is accepted (`quota`), monthly allowances read from the metered usage
//! (`monthly`), request rate limits (`ratelimit`). The lifecycle of orgs and workspaces (soft
//! deletion, restore, purge) is tenancy's (`crate::tenancy`), which calls in here.

pub mod audit;
pub mod metrics;
pub mod monthly;
pub mod plans;
pub mod quota;
pub mod ratelimit;
pub mod routes;
pub mod service;
pub mod usage;
pub use service::{Governance, QuantumWork};
