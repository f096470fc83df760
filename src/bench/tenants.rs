//! `enclave bench tenants`.

use crate::config::ConfigArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of workspaces to create.
    #[arg(long, default_value_t = 1000)]
    pub workspaces: usize,
}

pub fn run(_a: Args, _config: &ConfigArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
