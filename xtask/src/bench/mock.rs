//! `cargo xtask bench mock`: requests/s of `tem mock-server` for a 0-latency service under a
//! keep-alive load, and — given a checkout of the original TypeScript project — of the
//! original's Bun mock server under the same load in the same run, with the ratio. With
//! `--kind openai|anthropic`, also chat completions (messages) per second of an LLM-shaped
//! service with 0 latency and limits it never reaches, beside the generic figure of the same
//! round, with the cost ratio (the provider path must stay within 2× the generic one).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use super::load;

#[derive(clap::Args)]
pub struct Args {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of load per server (after a one-second warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// A checkout of github.com/qianxude/tem, to measure its Bun mock server too.
    #[arg(long, value_name = "DIR")]
    original: Option<PathBuf>,
    /// The bun binary (default: `bun` on PATH, else installed from npm into target/xtask-bench).
    #[arg(long)]
    bun: Option<PathBuf>,
    /// Rounds; servers alternate within each, and medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// One JSON object per server per line.
    #[arg(long)]
    json: bool,
    /// Also measure an LLM-shaped service of this kind beside the generic one.
    #[arg(long, value_enum, default_value = "generic")]
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    Generic,
    Openai,
    Anthropic,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Generic => "generic",
            Kind::Openai => "openai",
            Kind::Anthropic => "anthropic",
        }
    }

    /// The request the load repeats: a short chat with a 16-token answer.
    fn request(self, addr: SocketAddr) -> Vec<u8> {
        match self {
            Kind::Generic => {
                format!("GET / HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: tem-bench\r\n\r\n").into_bytes()
            }
            Kind::Openai => load::post_json(
                addr,
                "/v1/chat/completions",
                r#"{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"Say something short."}]}"#,
            ),
            Kind::Anthropic => load::post_json(
                addr,
                "/v1/messages",
                r#"{"model":"claude-haiku-4-5","max_tokens":16,"messages":[{"role":"user","content":"Say something short."}]}"#,
            ),
        }
    }
}

/// One server's figures in one round.
#[derive(Clone, Copy)]
struct Round {
    per_second: f64,
    /// CPU (user + system) the server process spent per request, in µs.
    cpu_us: f64,
    p99_us: u64,
    non_2xx: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let load_before = super::load_average();
    let tem = super::tem_binary()?;
    let bun_script = match &args.original {
        Some(original) => Some((bun_binary(args.bun.as_deref())?, bun_script(original)?)),
        None => None,
    };
    let mut tem_rounds = Vec::new();
    let mut bun_rounds = Vec::new();
    let mut llm_rounds = Vec::new();
    for _ in 0..args.rounds.max(1) {
        let server = spawn_printing_url(Command::new(&tem).args([
            "mock-server",
            "--mode",
            "single",
            "--port",
            "0",
            "--delay",
            "0ms",
            "--limit",
            "1000000000",
            "--window",
            "1s",
            "--max-concurrency",
            "1000000",
        ]))?;
        tem_rounds.push(measure(&server, &args, Kind::Generic).await?);
        server.stop().await;
        if args.kind != Kind::Generic {
            let mut command = Command::new(&tem);
            command.args(["mock-server", "--kind", args.kind.name(), "--port", "0"]);
            command.args([
                "--first-token",
                "0ms",
                "--per-token",
                "0ms",
                "--rpm",
                "1000000000",
            ]);
            match args.kind {
                Kind::Anthropic => command.args(["--itpm", "1000000000000", "--otpm", "1000000000000"]),
                _ => command.args(["--tpm", "1000000000000"]),
            };
            let server = spawn_printing_url(&mut command)?;
            llm_rounds.push(measure(&server, &args, args.kind).await?);
            server.stop().await;
        }
        if let Some((bun, script)) = &bun_script {
            let server = spawn_printing_url(Command::new(bun).arg("run").arg(script))?;
            bun_rounds.push(measure(&server, &args, Kind::Generic).await?);
            server.stop().await;
        }
    }
    let load_after = super::load_average();

    let median = |values: Vec<f64>| super::median(values);
    let summary = |rounds: &[Round]| {
        (
            median(rounds.iter().map(|r| r.per_second).collect()),
            median(rounds.iter().map(|r| r.cpu_us).collect()),
            rounds.iter().map(|r| r.p99_us).max().unwrap_or(0),
            rounds.iter().map(|r| r.non_2xx).sum::<u64>(),
        )
    };
    let mut rows = vec![("tem", summary(&tem_rounds))];
    let llm_name = format!("tem {}", args.kind.name());
    if !llm_rounds.is_empty() {
        rows.push((llm_name.as_str(), summary(&llm_rounds)));
    }
    // The provider path's cost against the generic one's, pair by pair.
    let llm_ratio = (!llm_rounds.is_empty()).then(|| {
        (
            median(
                tem_rounds
                    .iter()
                    .zip(&llm_rounds)
                    .map(|(t, l)| t.per_second / l.per_second)
                    .collect(),
            ),
            median(
                tem_rounds
                    .iter()
                    .zip(&llm_rounds)
                    .map(|(t, l)| l.cpu_us / t.cpu_us)
                    .collect(),
            ),
        )
    });
    if !bun_rounds.is_empty() {
        rows.push(("bun-original", summary(&bun_rounds)));
    }
    // Ratios pair by pair (each round's servers ran back to back), then the median.
    let ratio = (!bun_rounds.is_empty()).then(|| {
        median(
            tem_rounds
                .iter()
                .zip(&bun_rounds)
                .map(|(t, b)| t.per_second / b.per_second)
                .collect(),
        )
    });
    let cpu_ratio = (!bun_rounds.is_empty()).then(|| {
        median(
            tem_rounds
                .iter()
                .zip(&bun_rounds)
                .map(|(t, b)| b.cpu_us / t.cpu_us)
                .collect(),
        )
    });

    if args.json {
        for (server, (rate, cpu, p99, errors)) in &rows {
            println!(
                "{}",
                json!({
                    "bench": "mock", "case": if server.contains(' ') { "zero_latency_llm" } else { "zero_latency" },
                    "server": server,
                    "connections": args.connections, "seconds": args.seconds, "rounds": args.rounds,
                    "requests_per_sec": rate.round(), "cpu_us_per_request": (cpu * 100.0).round() / 100.0,
                    "p99_us": p99, "non_2xx": errors,
                })
            );
        }
    } else {
        println!(
            "mock bench: a 0-latency service, {} keep-alive connections, {} s per server per round, {} rounds \
             (medians; the load generator shares the machine)",
            args.connections, args.seconds, args.rounds
        );
        println!(
            "{:<14} {:>12} {:>14} {:>9} {:>8}",
            "server", "requests/s", "CPU µs/request", "p99 µs", "non-2xx"
        );
        for (server, (rate, cpu, p99, errors)) in &rows {
            println!("{server:<14} {rate:>12.0} {cpu:>14.2} {p99:>9} {errors:>8}");
        }
        if let Some((slower, costlier)) = llm_ratio {
            println!(
                "{llm_name} vs tem generic: {slower:.2}× fewer requests/s, {costlier:.2}× the CPU per request \
                 (medians of paired rounds; the bound is 2×)"
            );
        }
        if let (Some(ratio), Some(cpu_ratio)) = (ratio, cpu_ratio) {
            println!(
                "tem vs bun-original: {ratio:.2}× the requests/s, {cpu_ratio:.2}× less CPU per request (medians of paired rounds)"
            );
        }
        if let (Some(before), Some(after)) = (load_before, load_after) {
            println!("load average: {before:.2} before, {after:.2} after (2 cores)");
        }
    }
    Ok(())
}

/// Our own glue to start the original's mock server on a free port, as its tests do.
fn bun_script(original: &Path) -> anyhow::Result<PathBuf> {
    let original = original
        .canonicalize()
        .context("--original must be a checkout of github.com/qianxude/tem")?;
    anyhow::ensure!(
        original.join("src/mock-server/index.ts").exists(),
        "{} has no src/mock-server/index.ts: is it a checkout of qianxude/tem?",
        original.display()
    );
    let script = std::env::temp_dir().join("tem-bench-bun-mock.ts");
    std::fs::write(
        &script,
        format!(
            "import {{ startMockServer }} from '{}/src/mock-server/index.ts';\n\
             const port = 20000 + Math.floor(Math.random() * 20000);\n\
             startMockServer({{ port, mode: 'single', defaultService: {{ maxConcurrency: 1000000, \
             rateLimit: {{ limit: 1000000000, windowMs: 1000 }}, delayMs: [0, 0] }} }});\n\
             console.log(`listening on http://127.0.0.1:${{port}}`);\n",
            original.display()
        ),
    )?;
    Ok(script)
}

async fn measure(server: &Server, args: &Args, kind: Kind) -> anyhow::Result<Round> {
    let request = kind.request(server.addr);
    load::run_request(
        server.addr,
        request.clone(),
        args.connections,
        Duration::from_secs(1),
    )
    .await?;
    let cpu_before = cpu_seconds(server.child.id());
    let load = load::run_request(
        server.addr,
        request,
        args.connections,
        Duration::from_secs(args.seconds),
    )
    .await?;
    let cpu = cpu_seconds(server.child.id()) - cpu_before;
    Ok(Round {
        per_second: load.per_second(),
        cpu_us: cpu * 1e6 / load.requests.max(1) as f64,
        p99_us: load.p99_us,
        non_2xx: load.non_2xx,
    })
}

/// User + system CPU seconds a process has used, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces): state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // /proc reports in USER_HZ, which Linux fixes at 100 for user space.
    (ticks(11) + ticks(12)) / 100.0
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    async fn stop(mut self) {
        let _ = Command::new("curl")
            .args(["-s", "-X", "POST", &format!("http://{}/shutdown", self.addr)])
            .output();
        for _ in 0..50 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server that prints its URL on stdout, and waits for that line.
fn spawn_printing_url(command: &mut Command) -> anyhow::Result<Server> {
    let (child, addr) = super::spawn_printing_url(command)?;
    Ok(Server { child, addr })
}

/// `bun` from the flag, PATH, or an npm install of bun@1.4.5 (the version the original was
/// measured with) into target/xtask-bench/bun.
fn bun_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    if Command::new("bun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(PathBuf::from("bun"));
    }
    let dir = PathBuf::from("target/xtask-bench/bun");
    let bin = dir.join("node_modules/.bin/bun");
    if !bin.exists() {
        std::fs::create_dir_all(&dir)?;
        let status = Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "bun@1.4.5",
            ])
            .current_dir(&dir)
            .status()
            .context("npm is needed to install bun")?;
        anyhow::ensure!(status.success(), "npm install bun@1.4.5 failed");
    }
    Ok(bin)
}
