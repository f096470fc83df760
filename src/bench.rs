//! Benchmarks (commands that print a report, never timed tests).

use clap::Subcommand;

use crate::config::ConfigArgs;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Many tenants: creation rate, cold/warm open, RSS and fds held open, start time.
    Tenants {
        #[arg(long, default_value_t = 1000)]
        workspaces: usize,
    },
}

pub fn run(_cmd: BenchCommand, _args: &ConfigArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
