//! `tem`: run durable batches of rate-limited HTTP calls, inspect and steer them, and serve the
//! APIs to test them against. This file only parses arguments and dispatches; the work is done
//! by the library crates.

mod commands;
mod config;
mod duration_flag;
mod plan;
mod progress;
mod rehearsal;
mod report_view;
mod run;
mod signal;
mod suggest;
mod usage;

/// `println!` that does not panic when stdout is closed (a pipe whose reader went away): status
/// lines are for whoever is watching, and nobody watching is not an error.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Durable batches of rate-limited calls, and the servers to test them against.
#[derive(Parser)]
#[command(name = "tem", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log filter (e.g. `info`, `tem_core=debug`); also read from TEM_LOG.
    #[arg(long, global = true, env = "TEM_LOG", default_value = "warn")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a JSONL file of HTTP calls durably: limits, retries, resumable after any stop.
    RunBatch(Box<commands::run_batch::Args>),
    /// Inspect and steer batches: list, show, tasks, watch, interrupt, resume, cancel, export.
    Batch(commands::batch::Args),
    /// Run a 10,000-call batch against a simulated rate-limited, flaky API and print the report.
    Demo(commands::demo::Args),
    /// Find an API's concurrency and rate limits within a request budget (and write them to tem.toml).
    Detect(commands::detect::Args),
    /// Serve an HTTP API simulator (rate limits, concurrency caps, errors) or a Teraslice mock.
    MockServer(Box<commands::mock_server::Args>),
    /// Durable Streams: `tem streams serve` runs an append-only HTTP stream server.
    Streams(commands::streams::Args),
}

/// The servers allocate per request (headers, bodies, futures); mimalloc's thread-local free
/// lists serve that pattern with less work than glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The log filter: the user's, where the CLI does not already say the same in its own words
/// (a database outage is shown by the progress view) unless the user asked about that module.
fn log_filter(given: &str) -> String {
    if given.contains("tem_core") {
        given.to_owned()
    } else {
        format!("{given},tem_core::outage=error")
    }
}

/// An error and its causes on one line, each said once: a cause whose words are already in the
/// message (the database driver repeats its inner error at every level) is left out.
fn render(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Colour only for a person at a terminal, and never when `NO_COLOR` is set (no-color.org).
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(log_filter(&cli.log)).unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour_on_stderr())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::RunBatch(args) => commands::run_batch::run_command(*args).await,
            Command::Batch(args) => commands::batch::run(args).await,
            Command::Demo(args) => commands::demo::run_command(args).await,
            Command::Detect(args) => commands::detect::run(args).await,
            Command::MockServer(args) => commands::mock_server::run(*args).await,
            Command::Streams(args) => commands::streams::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", render(&error));
            if usage::is_usage(&error) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
