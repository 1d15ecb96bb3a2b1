//! `cargo xtask test`: the whole test suite on any machine, its set-up included — the command
//! the README gives a newcomer and the one CI runs.
//!
//! 1. Postgres for the engine's tests: `TEM_TEST_POSTGRES` as given; else the server on
//!    127.0.0.1:5432 when one answers; else a throwaway cluster of its own from the machine's
//!    PostgreSQL binaries (installing Debian's `postgresql` when they are missing and it can),
//!    stopped and deleted at the end.
//! 2. The `tem` binary, built once so no test's deadline pays for it.
//! 3. The suite: `cargo nextest run --workspace` when cargo-nextest is installed (every test in
//!    its own process, with deadlines), else `cargo test --workspace`. A test that passed only
//!    on a retry (nextest's FLAKY) fails the run: a race must not hide behind a retry.
//! 4. The real clients: ts-topy against the Teraslice mock, the official OpenAI and Anthropic
//!    Python SDKs against the LLM-shaped mock, the Durable Streams conformance suite against
//!    `tem streams serve` (each installs itself on first use).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tem_test_support::pg_cluster::{PgCluster, pg_bin};

/// `cargo xtask test` options.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Skip the real-client checks (ts-topy, the LLM SDKs, the streams conformance suite).
    #[arg(long)]
    no_clients: bool,
    /// Run with `cargo test` even when cargo-nextest is installed.
    #[arg(long)]
    cargo_test: bool,
    /// The nextest profile (`ci` retries nothing and reports every failure at the end).
    #[arg(long, default_value = "ci")]
    profile: String,
    /// Arguments for the test runner, after `--` (e.g. `-- outage`: the tests whose names hold it).
    #[arg(last = true)]
    runner_args: Vec<String>,
}

pub fn run(args: TestArgs) -> anyhow::Result<()> {
    let root = workspace_root()?;
    let (_cluster, postgres) = postgres()?;
    let env = Env {
        root: &root,
        postgres: &postgres,
    };

    step("cargo build -p tem-cli --bin tem");
    env.cargo(&["build", "--locked", "-p", "tem-cli", "--bin", "tem"])?;

    if !args.cargo_test && has_nextest(&root) {
        step("cargo nextest run --workspace");
        let mut argv = vec![
            "nextest",
            "run",
            "--locked",
            "--workspace",
            "--profile",
            &args.profile,
        ];
        argv.extend(args.runner_args.iter().map(String::as_str));
        env.nextest(&argv)?;
    } else {
        step(
            "cargo test --workspace (cargo-nextest is not installed: `cargo install cargo-nextest --locked`)",
        );
        let mut argv = vec!["test", "--locked", "--workspace"];
        argv.extend(args.runner_args.iter().map(String::as_str));
        env.cargo(&argv)?;
    }

    if !args.no_clients {
        let tem = root.join("target/debug/tem");
        step("the real Teraslice client (ts-topy) against tem mock-server --teraslice");
        env.script("tests/teraslice-client/run.sh", &tem)?;
        step("the official OpenAI and Anthropic SDKs against tem mock-server --kind openai|anthropic");
        env.script("tests/llm-sdks/run.sh", &tem)?;
        step("the Durable Streams conformance suite against tem streams serve (memory, then --data-dir)");
        env.script("tests/streams-conformance/run.sh", &tem)?;
    }
    step("ok");
    Ok(())
}

fn step(what: &str) {
    println!("\n== {what} ==");
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("the workspace root (xtask's parent directory)")
}

/// The Postgres the engine's tests use (its URL goes to every child as `TEM_TEST_POSTGRES`);
/// a cluster started here lives as long as the returned value.
fn postgres() -> anyhow::Result<(Option<PgCluster>, String)> {
    step("Postgres for the engine's tests");
    if let Ok(url) = std::env::var("TEM_TEST_POSTGRES") {
        println!("using TEM_TEST_POSTGRES as given");
        return Ok((None, url));
    }
    let shared: SocketAddr = ([127, 0, 0, 1], 5432).into();
    if TcpStream::connect_timeout(&shared, Duration::from_secs(1)).is_ok() {
        println!("using the server on 127.0.0.1:5432");
        return Ok((None, "postgres://postgres@127.0.0.1:5432/postgres".to_owned()));
    }
    if pg_bin().is_none() {
        install_postgresql()?;
    }
    let cluster =
        PgCluster::try_start().map_err(|reason| anyhow::anyhow!("could not start Postgres: {reason}"))?;
    let url = cluster.url();
    println!("started a throwaway cluster at {url} (deleted at the end)");
    Ok((Some(cluster), url))
}

/// Debian's `postgresql`, when this machine has apt and the right to use it.
fn install_postgresql() -> anyhow::Result<()> {
    println!("no PostgreSQL binaries here: installing Debian's postgresql");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let apt = |args: &[&str]| -> anyhow::Result<()> {
        let mut command = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        let status = command
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .context("run apt-get")?;
        if !status.success() {
            bail!(
                "apt-get {} failed: install PostgreSQL, or point TEM_TEST_POSTGRES at a server",
                args.join(" ")
            );
        }
        Ok(())
    };
    apt(&["update", "-qq"])?;
    apt(&["install", "-y", "-qq", "postgresql"])
}

fn has_nextest(root: &Path) -> bool {
    Command::new(env!("CARGO"))
        .args(["nextest", "--version"])
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Where and with what the steps run.
struct Env<'a> {
    root: &'a Path,
    postgres: &'a str,
}

impl Env<'_> {
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(self.root)
            .env("TEM_TEST_POSTGRES", self.postgres);
        command
    }

    fn cargo(&self, args: &[&str]) -> anyhow::Result<()> {
        let status = self
            .command(env!("CARGO"))
            .args(args)
            .status()
            .with_context(|| format!("run cargo {}", args.join(" ")))?;
        if !status.success() {
            bail!("cargo {} failed", args.join(" "));
        }
        Ok(())
    }

    /// Runs nextest, passing its output through, and fails on any test reported FLAKY.
    fn nextest(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut child = self
            .command(env!("CARGO"))
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .context("run cargo nextest")?;
        let stderr = child.stderr.take().context("nextest's stderr")?;
        let mut flaky = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.context("read nextest's output")?;
            eprintln!("{line}");
            // A retried pass: its own line, and the summary's "(N flaky)".
            if line.trim_start().starts_with("FLAKY") || line.contains(" flaky)") || line.contains(" flaky,")
            {
                flaky.push(line.trim().to_owned());
            }
        }
        let status = child.wait().context("wait for cargo nextest")?;
        if !status.success() {
            bail!("cargo nextest failed");
        }
        if !flaky.is_empty() {
            bail!(
                "{} test(s) passed only on a retry — a race or a stall, not a pass:\n{}",
                flaky.len(),
                flaky.join("\n")
            );
        }
        Ok(())
    }

    fn script(&self, path: &str, tem: &Path) -> anyhow::Result<()> {
        let status = self
            .command("bash")
            .arg(self.root.join(path))
            .arg(tem)
            .status()
            .with_context(|| format!("run {path}"))?;
        if !status.success() {
            bail!("{path} failed");
        }
        Ok(())
    }
}
