//! Benchmarks: commands that print a report, never timed tests. Each benchmark lives in its own
//! module and adds one variant to [`BenchCommand`].

pub mod report;
mod tenants;

use clap::Subcommand;

use crate::config::ConfigArgs;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Many tenants: creation rate, cold/warm open, RSS and fds held open, start time.
    Tenants(tenants::Args),
}

pub fn run(cmd: BenchCommand, args: &ConfigArgs) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Tenants(a) => tenants::run(a, args),
    }
}
