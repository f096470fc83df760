pub mod audit;
pub mod metrics;
pub mod routes;
pub mod service;
pub mod usage;
pub use service::{Governance, QuantumWork};
