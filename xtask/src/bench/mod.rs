//! Benchmarks. Each prints a human table by default and one JSON object per case with `--json`.

mod engine;
mod load;
mod mock;
mod streams;
mod streams_floor;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum Bench {
    /// Enqueue and run a batch on an on-disk SQLite file (or Postgres, with --db): no-op and
    /// 5 ms handlers, in one worker process or several.
    Engine(engine::Args),
    /// One worker process of `bench engine --processes N` (started by it, not by hand).
    #[command(hide = true)]
    EngineWorker(engine::WorkerArgs),
    /// Requests/s of `tem mock-server` (and of the original Bun mock, given a checkout).
    Mock(mock::Args),
    /// Appends/s, catch-up MB/s and long-poll wake-up latency of `tem streams serve`, the Node
    /// reference server and the published Rust server.
    Streams(streams::Args),
    /// The floor server of `bench streams --floor` (started by it, not by hand).
    #[command(hide = true)]
    StreamsFloor(streams_floor::Args),
}

pub async fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Engine(args) => engine::run(args).await,
        Bench::EngineWorker(args) => engine::worker_process(args).await,
        Bench::Mock(args) => mock::run(args).await,
        Bench::Streams(args) => streams::run(args).await,
        Bench::StreamsFloor(args) => tokio::task::spawn_blocking(move || streams_floor::serve(args)).await?,
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

/// `target/release/tem`, built first so the figures are never from a stale binary.
pub fn tem_binary() -> anyhow::Result<PathBuf> {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--release", "-p", "tem-cli", "--bin", "tem"])
        .status()?;
    anyhow::ensure!(status.success(), "building tem failed");
    Ok(PathBuf::from("target/release/tem"))
}

/// How long a server may take to print its address before it is given up on.
const STARTUP: Duration = Duration::from_secs(30);

/// Starts a server that prints its URL (`http://HOST:PORT`) on stdout, and waits for that line.
/// A thread reads stdout, so a server that never prints cannot hang the bench; afterwards it
/// drains stdout so the server never blocks on a full pipe.
pub fn spawn_printing_url(command: &mut Command) -> anyhow::Result<(Child, SocketAddr)> {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let stdout = child.stdout.take().context("the server's stdout")?;
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let addr = loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break None,
                Ok(_) => {
                    if let Some(addr) = url_in(&line) {
                        break Some(addr);
                    }
                }
            }
        };
        let found = addr.is_some();
        let _ = sender.send(addr);
        if found {
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        }
    });
    let failure = match receiver.recv_timeout(STARTUP) {
        Ok(Some(addr)) => return Ok((child, addr)),
        Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            "the server exited before printing its address".to_owned()
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            format!("the server printed no address within {STARTUP:?}")
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    anyhow::bail!(failure)
}

/// The address in the first `http://HOST:PORT` word of `line`.
fn url_in(line: &str) -> Option<SocketAddr> {
    let url = line.split_whitespace().find(|w| w.starts_with("http://"))?;
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .ok()
}
