//! Benchmarks. Each prints a human table by default and one JSON object per case with `--json`.

mod engine;
mod load;
mod mock;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Bench {
    /// Enqueue and run a batch on an on-disk SQLite file: no-op and 5 ms handlers.
    Engine(engine::Args),
    /// Requests/s of `tem mock-server` (and of the original Bun mock, given a checkout).
    Mock(mock::Args),
}

pub async fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Engine(args) => engine::run(args).await,
        Bench::Mock(args) => mock::run(args).await,
    }
}

/// The median of `values` (which must not be empty).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The machine's 1-minute load average, to print beside figures that are compared.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
