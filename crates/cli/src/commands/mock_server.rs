//! `tem mock-server`: serve the API simulator (or the Teraslice mock) until `POST /shutdown` or
//! Ctrl-C, then exit 0.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use mock_server::{
    Algorithm, Definition, ErrorSimulation, Latency, Limits, MockServer, Mode, Provider, ProviderConfig,
    ServiceConfig, TerasliceOptions,
};
use serde_json::Value;

use crate::say;

#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  tem mock-server --mode single --limit 10 --window-ms 1000 --max-concurrency 4
      one service at `/`, 10 requests per second, 4 at a time
  tem mock-server --config services.toml --port 0
      the services of a file at `/mock/NAME`, on a free port (printed)
  tem mock-server --teraslice --seed 7
      the Teraslice cluster mock on port 5678
  tem mock-server --kind openai --rpm 3000 --tpm 200000 --port 0
      an OpenAI-shaped API at `/` (POST /v1/chat/completions, /v1/completions, /v1/embeddings,
      GET /v1/models): point an SDK's base_url at http://HOST:PORT/v1
  tem mock-server --kind anthropic --rpm 50 --itpm 40000 --otpm 8000 --api-key sk-test
      an Anthropic-shaped API (POST /v1/messages): base_url http://HOST:PORT

LLM-shaped services count tokens with OpenAI's o200k_base BPE, limit per window (a minute) as the
providers do — OpenAI: requests and tokens, a request reserving its prompt plus max_tokens;
Anthropic: requests, input tokens and output tokens apart — and send the providers' own
x-ratelimit-* / anthropic-ratelimit-* headers, retry-after on 429, and their error JSON.

A config file (TOML or JSON) holds `[services.NAME]` tables in the simulator's own JSON shape:
  [services.llm]
  maxConcurrency = 4
  rateLimit = { limit = 60, windowMs = 60000, algorithm = \"sliding_window\" }
  delayMs = [50, 200]
  errorSimulation = { rate = 0.05, statusCode = 503 }

  [services.gpt]          # at /mock/gpt/v1/chat/completions …
  kind = \"openai\"
  limits = { rpm = 500, tpm = 30000 }
  models = { \"gpt-4o-mini\" = { tpm = 10000 } }
  latency = { firstTokenMs = [100, 300], perTokenMs = [5, 15] }

Routes: POST /service/NAME (create), DELETE /service/NAME, GET|POST /mock/NAME (multi) or / (single),
GET /service/NAME/stats, GET /stats, POST /shutdown; an LLM-shaped service's routes at
/mock/NAME/v1/… (multi) or /v1/… (single).")]
pub struct Args {
    /// Address to bind; the default keeps the server private to this machine.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0 picks a free one; the address is printed). Default 19999, or 5678 with --teraslice.
    #[arg(long)]
    port: Option<u16>,
    /// `single`: one service at `/`, from the flags below; `multi`: named services at /mock/NAME.
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// Services to start with (TOML or JSON; see below).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve the Teraslice cluster mock instead of the simulator.
    #[arg(long, conflicts_with_all = ["mode", "config"])]
    teraslice: bool,
    /// Also serve the Teraslice mock under /v1, beside the simulator.
    #[arg(long)]
    with_teraslice: bool,
    /// Seed for the Teraslice mock's data (random if absent), and for an LLM service's answers (0).
    #[arg(long)]
    seed: Option<u64>,

    /// Single mode: what the service imitates; `openai` or `anthropic` implies single mode.
    #[arg(
        long,
        value_enum,
        default_value = "generic",
        help_heading = "Single-mode service"
    )]
    kind: KindArg,
    /// Single mode: requests in flight above this are refused (generic and openai 503, anthropic
    /// 529). Default 100 for generic; none for an LLM service.
    #[arg(long, help_heading = "Single-mode service")]
    max_concurrency: Option<u64>,
    /// Single mode: requests allowed per window.
    #[arg(long, default_value_t = 100, help_heading = "Single-mode service")]
    limit: u64,
    /// Single mode: the rate-limit window in milliseconds.
    #[arg(long, default_value_t = 1000, help_heading = "Single-mode service")]
    window_ms: u64,
    /// Single mode: how requests are counted.
    #[arg(
        long,
        value_enum,
        default_value = "token-bucket",
        help_heading = "Single-mode service"
    )]
    algorithm: AlgorithmArg,
    /// Single mode: latency range in ms, `MIN,MAX` (e.g. `10,200`; `0,0` for none).
    #[arg(long, default_value = "10,200", help_heading = "Single-mode service")]
    delay_ms: String,
    /// Single mode: fraction of requests that fail at random (0 to 1).
    #[arg(long, default_value_t = 0.0, help_heading = "Single-mode service")]
    error_rate: f64,
    /// Single mode: the status of those random failures.
    #[arg(long, default_value_t = 500, help_heading = "Single-mode service")]
    error_status: u16,

    /// LLM service: requests per window (none if absent).
    #[arg(long, help_heading = "LLM-shaped service (--kind openai|anthropic)")]
    rpm: Option<u64>,
    /// OpenAI: tokens per window; a request counts its prompt plus its max_tokens.
    #[arg(long, help_heading = "LLM-shaped service (--kind openai|anthropic)")]
    tpm: Option<u64>,
    /// Anthropic: input tokens per window.
    #[arg(long, help_heading = "LLM-shaped service (--kind openai|anthropic)")]
    itpm: Option<u64>,
    /// Anthropic: output tokens per window (a request must fit its max_tokens).
    #[arg(long, help_heading = "LLM-shaped service (--kind openai|anthropic)")]
    otpm: Option<u64>,
    /// LLM service: the limits' window in ms (the providers' minute by default).
    #[arg(
        long,
        default_value_t = 60_000,
        help_heading = "LLM-shaped service (--kind openai|anthropic)"
    )]
    limit_window_ms: u64,
    /// LLM service: the key requests must carry (Authorization: Bearer / x-api-key); none if absent.
    #[arg(long, help_heading = "LLM-shaped service (--kind openai|anthropic)")]
    api_key: Option<String>,
    /// LLM service: time to first token in ms, `MIN,MAX`.
    #[arg(
        long,
        default_value = "100,300",
        help_heading = "LLM-shaped service (--kind openai|anthropic)"
    )]
    first_token_ms: String,
    /// LLM service: time per further output token in ms, `MIN,MAX`.
    #[arg(
        long,
        default_value = "5,15",
        help_heading = "LLM-shaped service (--kind openai|anthropic)"
    )]
    per_token_ms: String,
    /// LLM service: leave out the rate-limit headers (some real answers lack them).
    #[arg(long, help_heading = "LLM-shaped service (--kind openai|anthropic)")]
    no_rate_limit_headers: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum KindArg {
    Generic,
    Openai,
    Anthropic,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Single,
    Multi,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AlgorithmArg {
    TokenBucket,
    FixedWindow,
    SlidingWindow,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let seed = args.seed;
    let teraslice = || TerasliceOptions {
        seed,
        ..Default::default()
    };
    let mut builder = MockServer::builder();
    let default_port = if args.teraslice { 5678 } else { 19999 };
    if args.kind == KindArg::Generic {
        for (flag, given) in [
            ("--rpm", args.rpm.is_some()),
            ("--tpm", args.tpm.is_some()),
            ("--itpm", args.itpm.is_some()),
            ("--otpm", args.otpm.is_some()),
            ("--api-key", args.api_key.is_some()),
        ] {
            if given {
                crate::usage!("{flag} is for an LLM-shaped service: add --kind openai or --kind anthropic");
            }
        }
    }
    if args.teraslice {
        builder = builder.teraslice_only(teraslice());
    } else {
        let file = match &args.config {
            Some(path) => Some(read_config(path)?),
            None => None,
        };
        let mode = match (args.mode, &file) {
            (Some(ModeArg::Single), _) => Mode::Single,
            (Some(ModeArg::Multi), _) => Mode::Multi,
            (None, Some(file)) => file.mode.unwrap_or(Mode::Multi),
            (None, None) if args.kind != KindArg::Generic => Mode::Single,
            (None, None) => Mode::Multi,
        };
        match mode {
            Mode::Single => builder = builder.single(single_service(&args)?),
            Mode::Multi => {
                for (name, config) in file.map(|f| f.services).unwrap_or_default() {
                    builder = builder.service(name, config);
                }
            }
        }
        if args.with_teraslice {
            builder = builder.teraslice(teraslice());
        }
    }
    let address = format!("{}:{}", args.host, args.port.unwrap_or(default_port));
    let server = builder
        .bind(&address)
        .await
        .with_context(|| format!("could not listen on {address} (is the port taken? try --port 0)"))?;
    let state = server.state();
    say!("mock server listening on {}", server.url());
    if args.teraslice {
        say!(
            "  Teraslice cluster mock: {}/v1/cluster/state, /v1/jobs, /v1/ex …",
            server.url()
        );
    } else {
        match state.mode {
            Mode::Single => match state.services.values().next() {
                Some(Definition::Provider(config)) => {
                    say!(
                        "  single mode: an {}-shaped API at {}/v1/… (SDK base_url: {})",
                        config.provider.kind(),
                        server.url(),
                        match config.provider {
                            Provider::Openai => format!("{}/v1", server.url()),
                            Provider::Anthropic => server.url(),
                        }
                    )
                }
                _ => say!("  single mode: the service answers at {}/", server.url()),
            },
            Mode::Multi => {
                say!(
                    "  multi mode: {} service(s); create more with POST /service/NAME",
                    state.services.len()
                );
                for name in state.services.keys() {
                    say!("    {}/mock/{name}", server.url());
                }
            }
        }
    }
    say!("  stop with POST {}/shutdown or Ctrl-C", server.url());
    let stop = server_stop_on_ctrl_c(server).await?;
    Ok(stop)
}

async fn server_stop_on_ctrl_c(server: MockServer) -> anyhow::Result<ExitCode> {
    let url = server.url();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let wait = server.wait();
    tokio::pin!(wait);
    tokio::select! {
        result = &mut wait => result.context("the server failed")?,
        _ = &mut ctrl_c => {
            // Ask the server to stop the same graceful way /shutdown does.
            let _ = mock_server::MockClient::new(url).shutdown().await;
            wait.await.context("the server failed while stopping")?;
        }
    }
    // The process may outlive its reader: never fail on a closed stderr either.
    let _ = writeln!(std::io::stderr(), "mock server stopped");
    Ok(ExitCode::SUCCESS)
}

/// `MIN,MAX` milliseconds of flag `flag`.
fn range(flag: &str, text: &str) -> anyhow::Result<[u64; 2]> {
    text.split_once(',')
        .and_then(|(a, b)| Some([a.trim().parse().ok()?, b.trim().parse().ok()?]))
        .with_context(|| format!("{flag} must be MIN,MAX in milliseconds (e.g. 10,200), got `{text}`"))
}

fn single_service(args: &Args) -> anyhow::Result<Definition> {
    let provider = match args.kind {
        KindArg::Generic => return generic_service(args).map(Definition::Generic),
        KindArg::Openai => Provider::Openai,
        KindArg::Anthropic => Provider::Anthropic,
    };
    let mut config = ProviderConfig::new(provider);
    config.max_concurrency = args.max_concurrency;
    config.limits = Limits {
        rpm: args.rpm,
        tpm: args.tpm,
        itpm: args.itpm,
        otpm: args.otpm,
    };
    config.window_ms = args.limit_window_ms;
    config.api_key = args.api_key.clone();
    config.rate_limit_headers = !args.no_rate_limit_headers;
    config.seed = args.seed.unwrap_or(0);
    config.latency = Latency {
        first_token_ms: range("--first-token-ms", &args.first_token_ms)?,
        per_token_ms: range("--per-token-ms", &args.per_token_ms)?,
    };
    config.validate().map_err(|e| {
        let flag = match e.field.as_str() {
            "maxConcurrency" => "--max-concurrency".to_owned(),
            "windowMs" => "--limit-window-ms".to_owned(),
            "apiKey" => "--api-key".to_owned(),
            "latency.firstTokenMs" => "--first-token-ms".to_owned(),
            "latency.perTokenMs" => "--per-token-ms".to_owned(),
            other => match other.strip_prefix("limits.") {
                Some(limit) => format!("--{limit}"),
                None => other.to_owned(),
            },
        };
        let message = e
            .message
            .replace("use tpm", "use --tpm")
            .replace("use itpm and otpm", "use --itpm and --otpm");
        crate::usage::UsageError(format!("{flag}: {message}"))
    })?;
    Ok(Definition::Provider(config))
}

fn generic_service(args: &Args) -> anyhow::Result<ServiceConfig> {
    let [min, max] = range("--delay-ms", &args.delay_ms)?;
    let mut config = ServiceConfig::new(args.max_concurrency.unwrap_or(100), args.limit, args.window_ms);
    config.delay_ms = [min, max];
    config.rate_limit.algorithm = match args.algorithm {
        AlgorithmArg::TokenBucket => Algorithm::TokenBucket,
        AlgorithmArg::FixedWindow => Algorithm::FixedWindow,
        AlgorithmArg::SlidingWindow => Algorithm::SlidingWindow,
    };
    if args.error_rate > 0.0 {
        config.error_simulation = Some(ErrorSimulation {
            rate: args.error_rate,
            status_code: args.error_status,
            error_message: "internal_server_error".to_owned(),
        });
    }
    config.validate().map_err(|e| {
        let flag = match e.field.as_str() {
            "maxConcurrency" => "--max-concurrency",
            "rateLimit.limit" => "--limit",
            "rateLimit.windowMs" => "--window-ms",
            "delayMs" | "delayMs[0]" | "delayMs[1]" => "--delay-ms",
            "errorSimulation.rate" => "--error-rate",
            "errorSimulation.statusCode" => "--error-status",
            other => other,
        };
        anyhow::anyhow!("{flag}: {}", e.message)
    })?;
    Ok(config)
}

/// A config file: an optional mode and `services.NAME` tables.
struct ConfigFile {
    mode: Option<Mode>,
    services: Vec<(String, Definition)>,
}

fn read_config(path: &Path) -> anyhow::Result<ConfigFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))?;
    let value: Value = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?
    } else {
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?
    };
    let mode = match value.get("mode").and_then(Value::as_str) {
        None => None,
        Some("single") => Some(Mode::Single),
        Some("multi") => Some(Mode::Multi),
        Some(other) => bail!(
            "{}: mode must be `single` or `multi`, got `{other}`",
            path.display()
        ),
    };
    let mut services = Vec::new();
    if let Some(table) = value.get("services") {
        let table = table
            .as_object()
            .with_context(|| format!("{}: `services` must be a table of NAME = {{…}}", path.display()))?;
        for (name, config) in table {
            let config = Definition::from_json(config).map_err(|e| {
                anyhow::anyhow!("{}: services.{name}.{}: {}", path.display(), e.field, e.message)
            })?;
            services.push((name.clone(), config));
        }
    }
    Ok(ConfigFile { mode, services })
}
