//! `cargo xtask …`: the workspace's own dev tasks — `test`, the whole suite with its set-up, and
//! the benchmarks, which live here rather than in timed tests: tests assert behaviour,
//! benchmarks measure it.

mod bench;
mod test;

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
    /// The whole test suite with its set-up: Postgres (the one at TEM_TEST_POSTGRES or
    /// 127.0.0.1:5432, else a throwaway cluster), the suite (nextest if installed, else cargo
    /// test; a FLAKY test fails it), then the real clients (ts-topy, the OpenAI and Anthropic SDKs, the streams conformance suite).
    Test(test::TestArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        // Benchmarks measure optimised code: a debug build of this tool hands them to a release
        // build of itself (the alias builds debug, which `test` needs and builds fast).
        Command::Bench(_) if cfg!(debug_assertions) => release_self(),
        Command::Bench(bench) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(bench::run(bench))
        }
        Command::Test(args) => test::run(args),
    }
}

/// Runs this same command line in a release build of xtask; exits with its status.
fn release_self() -> anyhow::Result<()> {
    let status = std::process::Command::new(env!("CARGO"))
        .args(["run", "--release", "--quiet", "--package", "xtask", "--"])
        .args(std::env::args_os().skip(1))
        .status()?;
    std::process::exit(status.code().unwrap_or(1));
}
