//! `cargo xtask …`: the workspace's own dev tasks. Benchmarks live here, not in timed tests:
//! tests assert behaviour, benchmarks measure it.

mod bench;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Workspace dev tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a benchmark and print its figures (a table, or JSON lines with --json).
    #[command(subcommand)]
    Bench(bench::Bench),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Bench(bench) => runtime.block_on(bench::run(bench)),
    }
}
