//! `cargo xtask bench streams`: `tem streams serve` beside the two upstream Durable Streams
//! servers — the Node reference server (`@durable-streams/server` from npm) and the published
//! Rust server (`durable-streams` from crates.io) — in the same run, each in memory and durable:
//!
//! - **appends/s** to one stream, 1 KiB and 64 B bodies, 1 and 64 writers, each writer on its
//!   own keep-alive connection; each case stops at `--seconds` or `--max-appends`;
//! - **catch-up MB/s**: `--catch-up-mib` written in 64 KiB appends, then read from offset -1,
//!   following `Stream-Next-Offset` until `Stream-Up-To-Date`;
//! - **wake-up latency**: `--waiters` long-poll readers, one connection each, parked at the tail
//!   of one stream; then one append, timed from sending it to each reader's answer.
//!
//! Every server is a fresh process per mode and round, on a fresh data directory, warmed up
//! before its cases; figures are medians over rounds. The peers are installed once under
//! target/xtask-bench; one that cannot be installed or started is reported and left out, not
//! fatal. Only 127.0.0.1 is ever contacted, and every loop is bounded in count and time.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use serde_json::{Map, Value, json};

use super::load::{Connection, Response};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per append case (each also stops after --max-appends appends).
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// The most appends one append case makes.
    #[arg(long, default_value_t = 200_000)]
    max_appends: u64,
    /// MiB written in 64 KiB appends, then read back from the start, by the catch-up case.
    #[arg(long, default_value_t = 64)]
    catch_up_mib: u64,
    /// Concurrent catch-up readers, each reading the whole stream on its own connection.
    #[arg(long, default_value_t = 1)]
    readers: usize,
    /// Long-poll readers waiting on one stream in the wake-up case.
    #[arg(long, default_value_t = 1000)]
    waiters: usize,
    /// Appends in the wake-up case, each waking every reader (re-armed at the new tail).
    #[arg(long, default_value_t = 5)]
    wakes: usize,
    /// Rounds; each server starts afresh per mode in each, and medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Leave out the Node reference server.
    #[arg(long)]
    skip_node: bool,
    /// Leave out the published Rust server.
    #[arg(long)]
    skip_rust: bool,
    /// Also measure the floor: one thread, one epoll loop, canned answers and no checks (not a
    /// Durable Streams server) — what this machine and this load generator allow at all.
    #[arg(long)]
    floor: bool,
    /// One JSON object per case, mode and server per line.
    #[arg(long)]
    json: bool,
    /// Only these cases, comma-separated (append_1k_1w, append_1k_64w, append_64b_1w,
    /// append_64b_64w, catch_up, wake_up); all by default.
    #[arg(long, value_delimiter = ',', value_parser = parse_case)]
    cases: Vec<Case>,
    /// Measure this tem binary instead of building target/release/tem (to compare two builds,
    /// run the bench once with each).
    #[arg(long, value_name = "PATH")]
    tem: Option<PathBuf>,
    /// Only this storage mode; both by default.
    #[arg(long, value_enum)]
    mode: Option<Mode>,
}

fn parse_case(name: &str) -> Result<Case, String> {
    CASES.into_iter().find(|case| case.name() == name).ok_or_else(|| {
        let names: Vec<String> = CASES.iter().map(|case| case.name()).collect();
        format!("no case {name:?}; the cases are {}", names.join(", "))
    })
}

impl Args {
    /// The modes to run, in [`MODES`] order.
    fn modes(&self) -> Vec<Mode> {
        MODES
            .into_iter()
            .filter(|mode| self.mode.is_none_or(|only| only == *mode))
            .collect()
    }

    /// The cases to run, in [`CASES`] order.
    fn cases(&self) -> Vec<Case> {
        CASES
            .into_iter()
            .filter(|case| self.cases.is_empty() || self.cases.contains(case))
            .collect()
    }
}

/// Where every server is given its streams: the conformance suite's prefix (tem and both peers
/// treat any path as a stream).
const PREFIX: &str = "/v1/stream/";
const NODE_VERSION: &str = "0.3.7";
const RUST_VERSION: &str = "0.1.5";
/// The script that starts the Node reference server, written next to its node_modules.
const NODE_SCRIPT: &str = "serve.mjs";
/// Every server's long-poll timeout, in ms: the protocol's default, far above a wake-up round.
const LONG_POLL_MS: u64 = 30_000;
/// No request may take longer: a stuck server fails its case rather than hanging the bench.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A server's warm-up before its cases: a JIT-compiled server (Node) is slow until warm, and
/// the others lose nothing by it.
const WARM_UP: Duration = Duration::from_secs(1);
/// The catch-up case's append size.
const CHUNK: usize = 64 * 1024;
/// Writing the catch-up stream, and reading it back, each stop after this long.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(120);
/// Reads one catch-up reader may make: far more than any server needs for `--catch-up-mib`.
const MAX_READS: usize = 100_000;
/// How long the long-poll readers are given to reach the server before the append, so it
/// finds them waiting.
const SETTLE: Duration = Duration::from_millis(500);
/// A parked reader not answered this long after the append counts as missed.
const WAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections opened at once, so no server's accept backlog overflows.
const CONNECT_BATCH: usize = 100;
/// Per connection: room for a response head. The catch-up reader reads in bigger bites.
const SMALL_BUFFER: usize = 8 * 1024;
const READ_BUFFER: usize = 256 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Memory,
    Durable,
}

const MODES: [Mode; 2] = [Mode::Memory, Mode::Durable];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Memory => "memory",
            Mode::Durable => "durable",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Append { body: usize, writers: usize },
    CatchUp,
    WakeUp,
}

const CASES: [Case; 6] = [
    Case::Append {
        body: 1024,
        writers: 1,
    },
    Case::Append {
        body: 1024,
        writers: 64,
    },
    Case::Append { body: 64, writers: 1 },
    Case::Append {
        body: 64,
        writers: 64,
    },
    Case::CatchUp,
    Case::WakeUp,
];

impl Case {
    fn name(self) -> String {
        match self {
            Case::Append { body, writers } => format!("append_{}_{writers}w", size(body)),
            Case::CatchUp => "catch_up".to_owned(),
            Case::WakeUp => "wake_up".to_owned(),
        }
    }

    /// What the case does, for the table's heading.
    fn describe(self, args: &Args) -> String {
        match self {
            Case::Append { body, writers } => format!(
                "appends/s to one stream from {writers} writer(s), {body} B bodies, {} s or {} \
                 appends; tem/peer above 1: tem is faster",
                args.seconds, args.max_appends
            ),
            Case::CatchUp => format!(
                "MB/s reading {} MiB (written in 64 KiB appends) from offset -1, {} reader(s); \
                 tem/peer above 1: tem is faster",
                args.catch_up_mib, args.readers
            ),
            Case::WakeUp => format!(
                "ms from sending one append to each of {} long-poll readers' answer, {} appends; \
                 tem/peer (p50 / p99) below 1: tem is faster",
                args.waiters, args.wakes
            ),
        }
    }

    /// The figure's name in the table and in JSON.
    fn rate_name(self) -> (&'static str, &'static str) {
        match self {
            Case::Append { .. } => ("appends/s", "appends_per_sec"),
            Case::CatchUp => ("MB/s", "mb_per_sec"),
            Case::WakeUp => ("", ""),
        }
    }
}

/// `1k` or `64b`.
fn size(bytes: usize) -> String {
    if bytes.is_multiple_of(1024) {
        format!("{}k", bytes / 1024)
    } else {
        format!("{bytes}b")
    }
}

/// A server under test and how to start it.
struct Server {
    /// `tem`, `node` or `rust`, as in the JSON.
    name: &'static str,
    version: String,
    kind: Kind,
}

enum Kind {
    Tem(PathBuf),
    /// This xtask binary, as `bench streams-floor`.
    Floor(PathBuf),
    /// The directory holding node_modules and [`NODE_SCRIPT`].
    Node(PathBuf),
    Rust(PathBuf),
}

impl Server {
    /// Whether this server takes part in `case`: the floor answers a read in one piece from
    /// one copy, which is no floor for bulk reads.
    fn measures(&self, case: Case) -> bool {
        !(matches!(self.kind, Kind::Floor(_)) && case == Case::CatchUp)
    }

    fn label(&self) -> String {
        match self.kind {
            Kind::Tem(_) | Kind::Floor(_) => self.name.to_owned(),
            _ => format!("{} {}", self.name, self.version),
        }
    }

    /// The command lines, for the table's legend.
    fn describe(&self) -> String {
        match &self.kind {
            Kind::Tem(tem) => format!(
                "{} streams serve --port 0 --long-poll-timeout 30s; durable: + --data-dir DIR",
                tem.display()
            ),
            Kind::Node(dir) => format!(
                "@durable-streams/server {NODE_VERSION}: node {}/{NODE_SCRIPT} \
                 (DurableStreamTestServer, longPollTimeout {LONG_POLL_MS}); durable: + dataDir DIR",
                dir.display()
            ),
            Kind::Rust(binary) => format!(
                "{} --host 127.0.0.1 --port PORT --long-poll-timeout-ms {LONG_POLL_MS} \
                 --data-dir DIR --durability memory|wal",
                binary.display()
            ),
            Kind::Floor(_) => "one epoll loop, canned answers, no checks (xtask bench \
                               streams-floor); durable: one write + fdatasync per loop turn"
                .to_owned(),
        }
    }

    fn command(&self, mode: Mode, data: &Path) -> anyhow::Result<Command> {
        let durable = mode == Mode::Durable;
        let command = match &self.kind {
            Kind::Floor(xtask) => {
                let mut command = Command::new(xtask);
                command.args(["bench", "streams-floor"]);
                if durable {
                    command.arg("--data-dir").arg(data);
                }
                command
            }
            Kind::Tem(tem) => {
                let mut command = Command::new(tem);
                command.args(["streams", "serve", "--port", "0", "--long-poll-timeout", "30s"]);
                if durable {
                    command.arg("--data-dir").arg(data);
                }
                command
            }
            Kind::Node(dir) => {
                let mut command = Command::new("node");
                command
                    .arg(NODE_SCRIPT)
                    .current_dir(dir)
                    .env("BENCH_PORT", "0")
                    .env("BENCH_LONG_POLL_MS", LONG_POLL_MS.to_string())
                    .env_remove("BENCH_DATA_DIR");
                if durable {
                    command.env("BENCH_DATA_DIR", data);
                }
                command
            }
            Kind::Rust(binary) => {
                // It prints the port it was asked for, not the one bound, so `--port 0` would
                // leave us without its address: it is given one that is free now.
                let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
                let mut command = Command::new(binary);
                command
                    .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--long-poll-timeout-ms", &LONG_POLL_MS.to_string()])
                    // Memory mode, too, writes stream files (to the page cache, never synced).
                    .arg("--data-dir")
                    .arg(data)
                    .args(["--durability", if durable { "wal" } else { "memory" }]);
                command
            }
        };
        Ok(command)
    }

    fn start(&self, mode: Mode, data: &Path) -> anyhow::Result<Running> {
        let (child, addr) = super::spawn_printing_url(&mut self.command(mode, data)?)?;
        anyhow::ensure!(addr.ip().is_loopback(), "{} listens on {addr}", self.name);
        Ok(Running { child, addr })
    }
}

/// A running server, killed when dropped: nothing is needed from a graceful stop, and its data
/// directory is thrown away.
struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the upstream reference server on 127.0.0.1; port, data directory (unset: in memory)
/// and long-poll timeout come from the environment.
const SERVE_MJS: &str = r#"// Written by `cargo xtask bench streams`.
import { DurableStreamTestServer } from "@durable-streams/server"

const server = new DurableStreamTestServer({
  host: "127.0.0.1",
  port: Number(process.env.BENCH_PORT ?? 0),
  dataDir: process.env.BENCH_DATA_DIR || undefined,
  longPollTimeout: Number(process.env.BENCH_LONG_POLL_MS ?? 30000),
})
const url = await server.start()
console.log(`reference server listening on ${url}`)
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, async () => {
    await server.stop()
    process.exit(0)
  })
}
"#;

/// Installs a peer, once.
type Install = fn() -> anyhow::Result<Server>;

/// The Node reference server, installed from npm into target/xtask-bench/node-reference once.
fn node_server() -> anyhow::Result<Server> {
    let node = Command::new("node").arg("--version").output();
    anyhow::ensure!(node.is_ok_and(|o| o.status.success()), "node is not on PATH");
    let dir = PathBuf::from("target/xtask-bench/node-reference");
    let installed = std::fs::read(dir.join("node_modules/@durable-streams/server/package.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .is_some_and(|package| package["version"] == NODE_VERSION);
    if !installed {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("package.json"),
            "{ \"name\": \"xtask-bench-node-reference\", \"private\": true, \"type\": \"module\" }\n",
        )?;
        eprintln!(
            "installing @durable-streams/server@{NODE_VERSION} into {}",
            dir.display()
        );
        // lmdb ships prebuilt binaries as optional packages, so no install script is needed.
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--ignore-scripts"])
            .args([
                "--loglevel=error",
                &format!("@durable-streams/server@{NODE_VERSION}"),
            ])
            .current_dir(&dir)
            .stdout(std::io::stderr())
            .status()
            .context("npm is needed to install the Node reference server")?;
        anyhow::ensure!(
            status.success(),
            "npm install @durable-streams/server@{NODE_VERSION} failed"
        );
    }
    std::fs::write(dir.join(NODE_SCRIPT), SERVE_MJS)?;
    Ok(Server {
        name: "node",
        version: NODE_VERSION.to_owned(),
        kind: Kind::Node(std::env::current_dir()?.join(dir)),
    })
}

/// The published Rust server, installed with `cargo install` into
/// target/xtask-bench/durable-streams-VERSION once (with its lock file if that builds).
fn rust_server() -> anyhow::Result<Server> {
    let root = PathBuf::from(format!("target/xtask-bench/durable-streams-{RUST_VERSION}"));
    let binary = root.join("bin/durable-streams-server");
    if !binary.exists() {
        let install = |locked: bool| -> anyhow::Result<bool> {
            let mut command = Command::new(env!("CARGO"));
            command.args(["install", "durable-streams", "--version", RUST_VERSION]);
            if locked {
                command.arg("--locked");
            }
            let status = command
                .arg("--root")
                .arg(&root)
                .stdout(std::io::stderr())
                .status()?;
            Ok(status.success())
        };
        if !install(true)? {
            eprintln!("cargo install --locked failed; retrying without --locked");
            anyhow::ensure!(
                install(false)?,
                "cargo install durable-streams --version {RUST_VERSION} failed"
            );
        }
    }
    Ok(Server {
        name: "rust",
        version: RUST_VERSION.to_owned(),
        kind: Kind::Rust(binary),
    })
}

/// One case's figures for one server in one round.
#[derive(Clone, Copy)]
struct Figures {
    /// Appends/s or MB/s; none for wake-up.
    rate: Option<f64>,
    /// Per append, or per woken reader; none for catch-up.
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// Appends answered other than 2xx, or readers not woken.
    errors: u64,
}

/// Every round's figures for one case, mode and server.
struct Row {
    case: Case,
    mode: Mode,
    server: usize,
    rounds: Vec<Figures>,
    /// Why the latest failed round failed.
    failure: Option<String>,
}

/// A row's medians over the rounds that measured something.
struct Summary {
    rate: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    errors: u64,
}

impl Row {
    fn summary(&self) -> Option<Summary> {
        if self.rounds.is_empty() {
            return None;
        }
        let median = |field: fn(&Figures) -> Option<f64>| {
            let values: Vec<f64> = self.rounds.iter().filter_map(field).collect();
            (!values.is_empty()).then(|| super::median(values))
        };
        Some(Summary {
            rate: median(|f| f.rate),
            p50_ms: median(|f| f.p50_ms),
            p99_ms: median(|f| f.p99_ms),
            errors: self.rounds.iter().map(|f| f.errors).sum(),
        })
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let load_before = super::load_average();
    let mut servers = vec![Server {
        name: "tem",
        version: env!("CARGO_PKG_VERSION").to_owned(),
        kind: Kind::Tem(match &args.tem {
            Some(path) => path.clone(),
            None => super::tem_binary()?,
        }),
    }];
    let mut left_out = Vec::new();
    let peers: [(bool, &str, Install); 2] = [
        (args.skip_node, "the Node reference server", node_server),
        (args.skip_rust, "the Rust server", rust_server),
    ];
    for (skip, what, install) in peers {
        if skip {
            continue;
        }
        match install() {
            Ok(server) => servers.push(server),
            Err(error) => {
                eprintln!("leaving out {what}: {error:#}");
                left_out.push(format!("{what} ({error:#})"));
            }
        }
    }
    if args.floor {
        servers.push(Server {
            name: "floor",
            version: String::new(),
            kind: Kind::Floor(std::env::current_exe()?),
        });
    }

    let cases = args.cases();
    let servers_ref = &servers;
    let mut rows: Vec<Row> = cases
        .iter()
        .copied()
        .flat_map(|case| args.modes().into_iter().map(move |mode| (case, mode)))
        .flat_map(|(case, mode)| {
            (0..servers.len())
                .filter(move |&server| servers_ref[server].measures(case))
                .map(move |server| Row {
                    case,
                    mode,
                    server,
                    rounds: Vec::new(),
                    failure: None,
                })
        })
        .collect();
    // Data directories live under target/ rather than /tmp, which may be a tmpfs where a sync
    // costs nothing; absolute, since the Node server runs in its own directory.
    let data_root = std::env::current_dir()?.join("target/xtask-bench/data");
    std::fs::create_dir_all(&data_root)?;
    let rounds = args.rounds.max(1);
    for round in 1..=rounds {
        for mode in args.modes() {
            for (index, server) in servers.iter().enumerate() {
                eprintln!(
                    "streams bench: round {round}/{rounds}, {} {}",
                    server.label(),
                    mode.name()
                );
                let outcomes = measure_server(server, mode, &data_root, &args).await;
                for (&case, outcome) in cases.iter().zip(outcomes) {
                    let row = rows
                        .iter_mut()
                        .find(|r| r.case == case && r.mode == mode && r.server == index);
                    match (row, outcome) {
                        (Some(row), Ok(figures)) => row.rounds.push(figures),
                        (Some(row), Err(error)) => row.failure = Some(error),
                        (None, _) => {}
                    }
                }
            }
        }
    }
    let load_after = super::load_average();

    if args.json {
        print_json(&rows, &servers, &args, load_before, load_after);
    } else {
        print_table(&rows, &servers, &args, &left_out);
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        match (load_before, load_after) {
            (Some(before), Some(after)) => {
                println!("load average: {before:.2} before, {after:.2} after ({cores} cores)");
            }
            _ => println!("load average: unknown (no /proc/loadavg)"),
        }
    }
    Ok(())
}

/// Starts `server` in `mode` on a fresh data directory, warms it up and measures every case,
/// in the order of [`Args::cases`]; a server that cannot start or warm up fails every case.
async fn measure_server(
    server: &Server,
    mode: Mode,
    data_root: &Path,
    args: &Args,
) -> Vec<Result<Figures, String>> {
    let measured = async {
        // Declared first, so it is removed after the server is killed.
        let data = tempfile::Builder::new()
            .prefix("streams-")
            .tempdir_in(data_root)?;
        let running = server.start(mode, data.path()).context("starting the server")?;
        warm_up(running.addr, args).await.context("warming up")?;
        let mut outcomes = Vec::new();
        for case in args.cases() {
            if !server.measures(case) {
                // No row takes it.
                outcomes.push(Err("not measured".to_owned()));
                continue;
            }
            let figures = measure(case, running.addr, args).await;
            outcomes.push(figures.map_err(|error| format!("{error:#}")));
        }
        anyhow::Ok(outcomes)
    };
    match measured.await {
        Ok(outcomes) => outcomes,
        Err(error) => args.cases().iter().map(|_| Err(format!("{error:#}"))).collect(),
    }
}

async fn measure(case: Case, addr: SocketAddr, args: &Args) -> anyhow::Result<Figures> {
    let path = format!("{PREFIX}bench-{}", case.name().replace('_', "-"));
    create(addr, &path).await?;
    let figures = match case {
        Case::Append { body, writers } => append_case(addr, &path, body, writers, args).await,
        Case::CatchUp => catch_up(addr, &path, args).await,
        Case::WakeUp => wake_up(addr, &path, args).await,
    };
    // Gone, so an in-memory server does not carry it into the next case.
    delete(addr, &path).await;
    figures
}

async fn warm_up(addr: SocketAddr, args: &Args) -> anyhow::Result<()> {
    let path = format!("{PREFIX}bench-warm-up");
    create(addr, &path).await?;
    let appends = append_load(addr, &path, &[b'w'; 1024], 16, args.max_appends, WARM_UP).await;
    delete(addr, &path).await;
    appends.map(drop)
}

async fn append_case(
    addr: SocketAddr,
    path: &str,
    body: usize,
    writers: usize,
    args: &Args,
) -> anyhow::Result<Figures> {
    let duration = Duration::from_secs(args.seconds);
    let body = vec![b'a'; body];
    let appends = append_load(addr, path, &body, writers, args.max_appends, duration).await?;
    Ok(Figures {
        rate: Some(appends.latencies.len() as f64 / appends.seconds),
        p50_ms: percentile_ms(&appends.latencies, 50),
        p99_ms: percentile_ms(&appends.latencies, 99),
        errors: appends.errors,
    })
}

/// What an append load did.
struct Appends {
    /// One per successful append, sorted.
    latencies: Vec<Duration>,
    errors: u64,
    seconds: f64,
}

/// `writers` connections appending `body` to `path` back to back, until `max` appends in all
/// or `duration`, whichever comes first.
async fn append_load(
    addr: SocketAddr,
    path: &str,
    body: &[u8],
    writers: usize,
    max: u64,
    duration: Duration,
) -> anyhow::Result<Appends> {
    let request: Arc<[u8]> = request("POST", addr, path, body).into();
    let connections = open_many(addr, writers.max(1), SMALL_BUFFER).await?;
    // Each append takes a ticket, so all the writers together stop at `max`.
    let tickets = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut connection| {
            let (request, tickets) = (request.clone(), tickets.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                while Instant::now() < deadline && tickets.fetch_add(1, Ordering::Relaxed) < max {
                    let sent = Instant::now();
                    let response = exchange(&mut connection, &request, &[]).await?;
                    if (200..300).contains(&response.status) {
                        latencies.push(sent.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                anyhow::Ok((latencies, errors))
            })
        })
        .collect();
    let mut appends = Appends {
        latencies: Vec::new(),
        errors: 0,
        seconds: 0.0,
    };
    for task in tasks {
        let (mut latencies, errors) = task.await??;
        appends.latencies.append(&mut latencies);
        appends.errors += errors;
    }
    appends.seconds = started.elapsed().as_secs_f64();
    appends.latencies.sort_unstable();
    Ok(appends)
}

async fn catch_up(addr: SocketAddr, path: &str, args: &Args) -> anyhow::Result<Figures> {
    let appends = (args.catch_up_mib * 1024 * 1024 / CHUNK as u64).max(1);
    // A few writers, so a durable server can share its syncs; their order does not matter.
    let written = append_load(addr, path, &vec![b'c'; CHUNK], 4, appends, CATCH_UP_LIMIT).await?;
    anyhow::ensure!(written.errors == 0, "{} catch-up appends failed", written.errors);
    let expected = written.latencies.len() * CHUNK;
    let started = Instant::now();
    let readers: Vec<_> = (0..args.readers.max(1))
        .map(|_| tokio::spawn(read_all(addr, path.to_owned(), started + CATCH_UP_LIMIT)))
        .collect();
    let mut total = 0;
    for reader in readers {
        let bytes = reader.await??;
        anyhow::ensure!(bytes == expected, "a reader got {bytes} bytes of {expected}");
        total += bytes;
    }
    Ok(Figures {
        rate: Some(total as f64 / 1e6 / started.elapsed().as_secs_f64()),
        p50_ms: None,
        p99_ms: None,
        errors: 0,
    })
}

/// Reads a whole stream from offset -1, following `Stream-Next-Offset` until
/// `Stream-Up-To-Date`; returns the bytes read.
async fn read_all(addr: SocketAddr, path: String, deadline: Instant) -> anyhow::Result<usize> {
    let mut connection = Connection::open(addr, READ_BUFFER).await?;
    let mut offset = "-1".to_owned();
    let mut bytes = 0;
    for _ in 0..MAX_READS {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the catch-up read took over {CATCH_UP_LIMIT:?}"
        );
        let target = format!("{path}?offset={}", encode(&offset));
        let wanted = ["stream-next-offset", "stream-up-to-date"];
        let get = request("GET", addr, &target, &[]);
        let response = exchange(&mut connection, &get, &wanted).await?;
        anyhow::ensure!(
            response.status == 200,
            "a catch-up read answered {}",
            response.status
        );
        bytes += response.body_len;
        let mut headers = response.headers.into_iter();
        let next = headers.next().flatten();
        let up_to_date = headers.next().flatten();
        if up_to_date.is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(bytes);
        }
        offset = next.context("a catch-up read without Stream-Next-Offset")?;
    }
    anyhow::bail!("the catch-up read was not up to date after {MAX_READS} reads")
}

async fn wake_up(addr: SocketAddr, path: &str, args: &Args) -> anyhow::Result<Figures> {
    let append = request("POST", addr, path, &[b'w'; 64]);
    let mut writer = Connection::open(addr, SMALL_BUFFER).await?;
    let mut tail = append_once(&mut writer, &append).await?;
    let mut idle: Vec<Connection> = Vec::new();
    let mut latencies = Vec::new();
    let mut missed = 0;
    for _ in 0..args.wakes.max(1) {
        // Readers lost last time are replaced, so every append finds `waiters` of them.
        let missing = args.waiters.saturating_sub(idle.len());
        idle.append(&mut open_many(addr, missing, SMALL_BUFFER).await?);
        let target = format!("{path}?offset={}&live=long-poll", encode(&tail));
        let poll: Arc<[u8]> = request("GET", addr, &target, &[]).into();
        let parked: Vec<_> = idle
            .drain(..)
            .map(|mut connection| {
                let poll = poll.clone();
                tokio::spawn(async move {
                    connection.send(&poll).await?;
                    let response = tokio::time::timeout(SETTLE + WAKE_TIMEOUT, connection.response(&[]));
                    let response = response.await.map_err(|_| anyhow!("not woken"))??;
                    anyhow::Ok((connection, Instant::now(), response.status))
                })
            })
            .collect();
        tokio::time::sleep(SETTLE).await;
        let sent = Instant::now();
        tail = append_once(&mut writer, &append).await?;
        for reader in parked {
            match reader.await {
                Ok(Ok((connection, answered, 200))) => {
                    latencies.push(answered.saturating_duration_since(sent));
                    idle.push(connection);
                }
                _ => missed += 1,
            }
        }
    }
    anyhow::ensure!(!latencies.is_empty(), "no long-poll reader was woken");
    latencies.sort_unstable();
    Ok(Figures {
        rate: None,
        p50_ms: percentile_ms(&latencies, 50),
        p99_ms: percentile_ms(&latencies, 99),
        errors: missed,
    })
}

/// Appends once on `connection`; returns the new tail.
async fn append_once(connection: &mut Connection, append: &[u8]) -> anyhow::Result<String> {
    let response = exchange(connection, append, &["stream-next-offset"]).await?;
    anyhow::ensure!(
        (200..300).contains(&response.status),
        "an append answered {}",
        response.status
    );
    response
        .headers
        .into_iter()
        .next()
        .flatten()
        .context("an append answered without Stream-Next-Offset")
}

async fn create(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let mut connection = Connection::open(addr, SMALL_BUFFER).await?;
    let response = exchange(&mut connection, &request("PUT", addr, path, &[]), &[]).await?;
    anyhow::ensure!(
        matches!(response.status, 200 | 201),
        "creating {path} answered {}",
        response.status
    );
    Ok(())
}

/// Deletes a stream, if it can: a case's figures do not depend on it.
async fn delete(addr: SocketAddr, path: &str) {
    if let Ok(mut connection) = Connection::open(addr, SMALL_BUFFER).await {
        let _ = exchange(&mut connection, &request("DELETE", addr, path, &[]), &[]).await;
    }
}

/// Opens `n` connections, [`CONNECT_BATCH`] at a time.
async fn open_many(addr: SocketAddr, n: usize, buffer: usize) -> anyhow::Result<Vec<Connection>> {
    let mut connections = Vec::with_capacity(n);
    while connections.len() < n {
        let batch = (n - connections.len()).min(CONNECT_BATCH);
        let opening: Vec<_> = (0..batch)
            .map(|_| {
                tokio::spawn(tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    Connection::open(addr, buffer),
                ))
            })
            .collect();
        for task in opening {
            let connection = task.await?.map_err(|_| anyhow!("connecting timed out"))??;
            connections.push(connection);
        }
    }
    Ok(connections)
}

/// Sends `request` and reads the answer, within [`REQUEST_TIMEOUT`].
async fn exchange(connection: &mut Connection, request: &[u8], wanted: &[&str]) -> anyhow::Result<Response> {
    let exchange = async {
        connection.send(request).await?;
        connection.response(wanted).await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("no answer within {REQUEST_TIMEOUT:?}"))?
}

/// A request, built once and sent as it is; PUT and POST carry an octet-stream body.
fn request(method: &str, addr: SocketAddr, target: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n").into_bytes();
    if matches!(method, "PUT" | "POST") {
        let length = body.len();
        bytes.extend_from_slice(
            format!("Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n").as_bytes(),
        );
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body);
    bytes
}

/// `text` percent-encoded for a query string: offsets are opaque, nothing promises they are
/// URL-safe.
fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// The `p`th percentile of `sorted`, in ms.
fn percentile_ms(sorted: &[Duration], p: usize) -> Option<f64> {
    let at = sorted.len() * p / 100;
    sorted.get(at).map(|d| d.as_secs_f64() * 1e3)
}

/// `tem`'s figure over `peer`'s: the rate, or for wake-up p50 and p99.
fn ratios(case: Case, tem: &Summary, peer: &Summary) -> Vec<(&'static str, f64)> {
    let over = |a: Option<f64>, b: Option<f64>| Some(a? / b?).filter(|r| r.is_finite());
    let pairs = match case {
        Case::WakeUp => vec![
            ("tem_ratio_p50", over(tem.p50_ms, peer.p50_ms)),
            ("tem_ratio_p99", over(tem.p99_ms, peer.p99_ms)),
        ],
        _ => vec![("tem_ratio", over(tem.rate, peer.rate))],
    };
    pairs
        .into_iter()
        .filter_map(|(name, ratio)| Some((name, ratio?)))
        .collect()
}

/// The summary of tem's row beside `row` (same case and mode).
fn tem_summary(rows: &[Row], row: &Row) -> Option<Summary> {
    rows.iter()
        .find(|r| r.case == row.case && r.mode == row.mode && r.server == 0)?
        .summary()
}

fn print_table(rows: &[Row], servers: &[Server], args: &Args, left_out: &[String]) {
    println!(
        "streams bench: {} round(s), medians; each server a fresh process per mode and round; \
         the load generator shares the machine",
        args.rounds.max(1)
    );
    for server in servers {
        println!("  {:<11} {}", server.label(), server.describe());
    }
    for what in left_out {
        println!("  left out: {what}");
    }
    let cell = |value: Option<f64>, decimals: usize| {
        value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
    };
    for case in args.cases() {
        println!();
        println!("{}: {}", case.name(), case.describe(args));
        let rate_header = match case.rate_name().0 {
            "" => "-",
            name => name,
        };
        println!(
            "{:<8} {:<11} {:>10} {:>9} {:>9} {:>7}  tem/peer",
            "mode", "server", rate_header, "p50 ms", "p99 ms", "errors"
        );
        for row in rows.iter().filter(|r| r.case == case) {
            let server = &servers[row.server];
            let (mode, label) = (row.mode.name(), server.label());
            if let Some(summary) = row.summary() {
                let decimals = if case == Case::CatchUp { 1 } else { 0 };
                let ratio = tem_summary(rows, row)
                    .filter(|_| row.server != 0)
                    .map(|tem| ratios(case, &tem, &summary))
                    .unwrap_or_default()
                    .iter()
                    .map(|(_, r)| format!("{r:.2}×"))
                    .collect::<Vec<_>>()
                    .join(" / ");
                println!(
                    "{mode:<8} {label:<11} {:>10} {:>9} {:>9} {:>7}  {ratio}",
                    cell(summary.rate, decimals),
                    cell(summary.p50_ms, 3),
                    cell(summary.p99_ms, 3),
                    summary.errors,
                );
            }
            if let Some(failure) = &row.failure {
                println!("{mode:<8} {label:<11} failed: {failure}");
            }
        }
    }
}

fn print_json(
    rows: &[Row],
    servers: &[Server],
    args: &Args,
    load_before: Option<f64>,
    load_after: Option<f64>,
) {
    let round = |v: f64, decimals: i32| {
        let scale = 10f64.powi(decimals);
        (v * scale).round() / scale
    };
    for row in rows {
        let server = &servers[row.server];
        let mut line = Map::new();
        let mut put = |key: &str, value: Value| {
            line.insert(key.to_owned(), value);
        };
        put("bench", json!("streams"));
        put("case", json!(row.case.name()));
        put("server", json!(server.name));
        put("version", json!(server.version));
        put("mode", json!(row.mode.name()));
        put("rounds", json!(row.rounds.len()));
        match row.case {
            Case::Append { body, writers } => {
                put("body_bytes", json!(body));
                put("writers", json!(writers));
                put("seconds", json!(args.seconds));
                put("max_appends", json!(args.max_appends));
            }
            Case::CatchUp => {
                put("mib", json!(args.catch_up_mib));
                put("readers", json!(args.readers));
            }
            Case::WakeUp => {
                put("waiters", json!(args.waiters));
                put("wakes", json!(args.wakes));
            }
        }
        if let Some(summary) = row.summary() {
            let (_, rate_key) = row.case.rate_name();
            if let Some(rate) = summary.rate {
                put(rate_key, json!(round(rate, 1)));
            }
            if let (Some(p50), Some(p99)) = (summary.p50_ms, summary.p99_ms) {
                put("p50_ms", json!(round(p50, 3)));
                put("p99_ms", json!(round(p99, 3)));
            }
            put("errors", json!(summary.errors));
            if let Some(tem) = tem_summary(rows, row).filter(|_| row.server != 0) {
                for (key, ratio) in ratios(row.case, &tem, &summary) {
                    put(key, json!(round(ratio, 3)));
                }
            }
        }
        if let Some(failure) = &row.failure {
            put("error", json!(failure));
        }
        put("load_average_before", json!(load_before));
        put("load_average_after", json!(load_after));
        println!("{}", Value::Object(line));
    }
}
