//! `tem mock-server`: serve the API simulator (or the Teraslice mock) until `POST /shutdown`,
//! Ctrl-C or SIGTERM, then exit 0.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use mock_server::config::DEFAULT_DELAY_MS;
use mock_server::provider::config::MINUTE_MS;
use mock_server::{
    Algorithm, Definition, ErrorSimulation, KeyCase, Latency, Limits, MockServer, Mode, Provider,
    ProviderConfig, ServiceConfig, TerasliceOptions,
};
use serde_json::Value;

use crate::duration_flag;
use crate::say;
use crate::usage::UsageError;

#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  tem mock-server --limit 10 --window 1s --max-concurrency 4
      one service answering every path (single mode: a single-mode flag implies it),
      10 requests per second, 4 at a time
  tem mock-server --echo --delay 0ms --port 0
      answers every request with the request itself as JSON: check what a template sends
  tem mock-server --config services.toml --port 0
      the services of a file at `/mock/NAME`, on a free port (printed)
  tem mock-server --teraslice --seed 7
      the Teraslice cluster mock on port 5678
  tem mock-server --kind openai --rpm 3000 --tpm 200000 --port 0
      an OpenAI-shaped API at `/` (POST /v1/chat/completions, /v1/completions, /v1/embeddings,
      GET /v1/models): point an SDK's base_url at http://HOST:PORT/v1
  tem mock-server --kind anthropic --rpm 50 --itpm 40000 --otpm 8000 --api-key sk-test
      an Anthropic-shaped API (POST /v1/messages): base_url http://HOST:PORT

Durations are written 250ms, 2s, 1m; the older --window-ms, --delay-ms, --limit-window-ms,
--first-token-ms and --per-token-ms still work and take bare milliseconds too.

LLM-shaped services count tokens with OpenAI's o200k_base BPE, limit per window (a minute) as the
providers do — OpenAI: requests and tokens, a request reserving its prompt plus max_tokens;
Anthropic: requests, input tokens and output tokens apart — and send the providers' own
x-ratelimit-* / anthropic-ratelimit-* headers, retry-after on 429, and their error JSON.

A config file (TOML, or JSON if it ends in .json) holds an optional `mode = \"single\"|\"multi\"`
and `[services.NAME]` tables. Keys are snake_case, as in tem.toml (the HTTP API's camelCase,
`maxConcurrency`, is read too). Every key:
  [services.llm]                     # a generic service, at /mock/llm
  kind = \"generic\"                   # the default
  max_concurrency = 4                # required: requests in flight above this get 503
  rate_limit = { limit = 60, window_ms = 60000, algorithm = \"sliding_window\" }
                                     # required; algorithm: token_bucket (default),
                                     # fixed_window, sliding_window
  delay_ms = [50, 200]               # latency range in ms (default [10, 200])
  error_simulation = { rate = 0.05, status_code = 503, error_message = \"busy\" }
  budget = { limit = 100000, window_ms = 60000, cost_header = \"x-cost\", cost_field = \"tokens\" }
                                     # a weighted limit: each request costs its header or
                                     # JSON body field (1 if absent)
  headers = { retry_after = true, rate_limit_on_429 = true, rate_limit_on_success = true }
                                     # which rate-limit headers are sent (all by default)
  echo = false                       # answer 200 with the request as JSON

  [services.gpt]                     # at /mock/gpt/v1/chat/completions …
  kind = \"openai\"                    # or \"anthropic\" (limits rpm, itpm, otpm)
  max_concurrency = 8                # none by default (openai 503, anthropic 529)
  limits = { rpm = 500, tpm = 30000 }
  models = { \"gpt-4o-mini\" = { tpm = 10000 } }   # per model; others then answer 404
  window_ms = 60000                  # every limit's window
  latency = { first_token_ms = [100, 300], per_token_ms = [5, 15] }
  api_key = \"sk-test\"                # required of requests when set
  rate_limit_headers = true
  seed = 0                           # the answers' seed
  default_max_tokens = 256           # for a request that names none

Routes: POST /service/NAME (create), DELETE /service/NAME, GET|POST /mock/NAME (multi);
in single mode every other path, any method (`/`, `/v1/answer/7`); GET /service/NAME/stats,
GET /stats, POST /shutdown; an LLM-shaped service's routes at /mock/NAME/v1/… (multi) or
/v1/… (single).")]
pub struct Args {
    /// Address to bind; the default keeps the server private to this machine.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0 picks a free one; the address is printed). Default 19999, or 5678 with --teraslice.
    #[arg(long)]
    port: Option<u16>,
    /// `single`: one service answering every path, from the flags below (which imply it);
    /// `multi`: named services at /mock/NAME.
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

    /// What the service imitates [default: generic].
    #[arg(
        long,
        value_enum,
        help_heading = "Single-mode service (any of these implies --mode single)"
    )]
    kind: Option<KindArg>,
    /// Requests in flight above this are refused (generic and openai 503, anthropic 529).
    /// Default 100 for generic; none for an LLM service.
    #[arg(
        long,
        help_heading = "Single-mode service (any of these implies --mode single)"
    )]
    max_concurrency: Option<u64>,
    /// Generic: requests allowed per window [default: 100].
    #[arg(
        long,
        help_heading = "Single-mode service (any of these implies --mode single)"
    )]
    limit: Option<u64>,
    /// Generic: the rate-limit window, e.g. `1s`, `500ms` [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = duration_flag::millis,
          help_heading = "Single-mode service (any of these implies --mode single)")]
    window: Option<u64>,
    /// The old name of --window: milliseconds (or a duration).
    #[arg(long, value_name = "MS", hide = true, conflicts_with = "window",
          value_parser = duration_flag::millis_or_duration)]
    window_ms: Option<u64>,
    /// Generic: how requests are counted [default: token-bucket].
    #[arg(
        long,
        value_enum,
        help_heading = "Single-mode service (any of these implies --mode single)"
    )]
    algorithm: Option<AlgorithmArg>,
    /// Generic: latency range `MIN,MAX` (e.g. `10ms,200ms`; `0ms` for none) [default: 10ms,200ms].
    #[arg(long, value_name = "MIN,MAX", value_parser = duration_flag::range,
          help_heading = "Single-mode service (any of these implies --mode single)")]
    delay: Option<[u64; 2]>,
    /// The old name of --delay: `MIN,MAX` in milliseconds (or durations).
    #[arg(long, value_name = "MIN,MAX", hide = true, conflicts_with = "delay",
          value_parser = duration_flag::range_millis_or_duration)]
    delay_ms: Option<[u64; 2]>,
    /// Generic: fraction of requests that fail at random (0 to 1) [default: 0].
    #[arg(
        long,
        help_heading = "Single-mode service (any of these implies --mode single)"
    )]
    error_rate: Option<f64>,
    /// Generic: the status of those random failures [default: 500].
    #[arg(
        long,
        help_heading = "Single-mode service (any of these implies --mode single)"
    )]
    error_status: Option<u16>,
    /// Generic: answer 200 with the request as JSON (method, path, query, headers, body), to
    /// check what a template sends.
    #[arg(
        long,
        help_heading = "Single-mode service (any of these implies --mode single)"
    )]
    echo: bool,

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
    /// LLM service: the limits' window, e.g. `1m`, `10s` [default: 1m, the providers' minute].
    #[arg(long, value_name = "DURATION", value_parser = duration_flag::millis,
          help_heading = "LLM-shaped service (--kind openai|anthropic)")]
    limit_window: Option<u64>,
    /// The old name of --limit-window: milliseconds (or a duration).
    #[arg(long, value_name = "MS", hide = true, conflicts_with = "limit_window",
          value_parser = duration_flag::millis_or_duration)]
    limit_window_ms: Option<u64>,
    /// LLM service: the key requests must carry (Authorization: Bearer / x-api-key); none if absent.
    #[arg(long, help_heading = "LLM-shaped service (--kind openai|anthropic)")]
    api_key: Option<String>,
    /// LLM service: time to first token, `MIN,MAX` [default: 100ms,300ms].
    #[arg(long, value_name = "MIN,MAX", value_parser = duration_flag::range,
          help_heading = "LLM-shaped service (--kind openai|anthropic)")]
    first_token: Option<[u64; 2]>,
    /// The old name of --first-token: `MIN,MAX` in milliseconds (or durations).
    #[arg(long, value_name = "MIN,MAX", hide = true, conflicts_with = "first_token",
          value_parser = duration_flag::range_millis_or_duration)]
    first_token_ms: Option<[u64; 2]>,
    /// LLM service: time per further output token, `MIN,MAX` [default: 5ms,15ms].
    #[arg(long, value_name = "MIN,MAX", value_parser = duration_flag::range,
          help_heading = "LLM-shaped service (--kind openai|anthropic)")]
    per_token: Option<[u64; 2]>,
    /// The old name of --per-token: `MIN,MAX` in milliseconds (or durations).
    #[arg(long, value_name = "MIN,MAX", hide = true, conflicts_with = "per_token",
          value_parser = duration_flag::range_millis_or_duration)]
    per_token_ms: Option<[u64; 2]>,
    /// LLM service: leave out the rate-limit headers (some real answers lack them).
    #[arg(long, help_heading = "LLM-shaped service (--kind openai|anthropic)")]
    no_rate_limit_headers: bool,
}

impl Args {
    fn kind(&self) -> KindArg {
        self.kind.unwrap_or(KindArg::Generic)
    }

    /// The generic service's flags that were given.
    fn generic_flags(&self) -> Vec<&'static str> {
        given(&[
            ("--limit", self.limit.is_some()),
            ("--window", self.window.is_some()),
            ("--window-ms", self.window_ms.is_some()),
            ("--algorithm", self.algorithm.is_some()),
            ("--delay", self.delay.is_some()),
            ("--delay-ms", self.delay_ms.is_some()),
            ("--error-rate", self.error_rate.is_some()),
            ("--error-status", self.error_status.is_some()),
            ("--echo", self.echo),
        ])
    }

    /// The LLM-shaped service's flags that were given.
    fn llm_flags(&self) -> Vec<&'static str> {
        given(&[
            ("--rpm", self.rpm.is_some()),
            ("--tpm", self.tpm.is_some()),
            ("--itpm", self.itpm.is_some()),
            ("--otpm", self.otpm.is_some()),
            ("--limit-window", self.limit_window.is_some()),
            ("--limit-window-ms", self.limit_window_ms.is_some()),
            ("--api-key", self.api_key.is_some()),
            ("--first-token", self.first_token.is_some()),
            ("--first-token-ms", self.first_token_ms.is_some()),
            ("--per-token", self.per_token.is_some()),
            ("--per-token-ms", self.per_token_ms.is_some()),
            ("--no-rate-limit-headers", self.no_rate_limit_headers),
        ])
    }

    /// Every single-mode flag that was given: each means something only for the one service.
    fn single_flags(&self) -> Vec<&'static str> {
        let mut flags = given(&[
            ("--kind", self.kind.is_some()),
            ("--max-concurrency", self.max_concurrency.is_some()),
        ]);
        flags.extend(self.generic_flags());
        flags.extend(self.llm_flags());
        flags
    }
}

fn given(flags: &[(&'static str, bool)]) -> Vec<&'static str> {
    flags
        .iter()
        .filter(|(_, given)| *given)
        .map(|(flag, _)| *flag)
        .collect()
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
    check_flags_fit_the_kind(&args)?;
    let single_flags = args.single_flags();
    if args.teraslice {
        if let Some(flag) = single_flags.first() {
            crate::usage!(
                "{flag} configures the simulator's single-mode service, but --teraslice serves only \
                 the Teraslice mock: drop {flag}, or use --with-teraslice to serve both"
            );
        }
        builder = builder.teraslice_only(teraslice());
    } else {
        let file = match &args.config {
            Some(path) => Some(read_config(path)?),
            None => None,
        };
        let mode = resolve_mode(args.mode, file.as_ref(), &single_flags, args.config.as_deref())?;
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
    // Listening before the address is printed: whoever reads it may signal at once.
    let stop = crate::signal::listen();
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
    say!("  stop with POST {}/shutdown, Ctrl-C or SIGTERM", server.url());
    stop_on_signal(server, stop).await
}

/// Serves until `POST /shutdown`, Ctrl-C or SIGTERM; each stops the same graceful way.
async fn stop_on_signal(server: MockServer, stop: impl Future<Output = ()>) -> anyhow::Result<ExitCode> {
    let url = server.url();
    let wait = server.wait();
    tokio::pin!(wait);
    tokio::select! {
        result = &mut wait => result.context("the server failed")?,
        () = stop => {
            // Ask the server to stop the same graceful way /shutdown does.
            let _ = mock_server::MockClient::new(url).shutdown().await;
            wait.await.context("the server failed while stopping")?;
        }
    }
    // The process may outlive its reader: never fail on a closed stderr either.
    let _ = writeln!(std::io::stderr(), "mock server stopped");
    Ok(ExitCode::SUCCESS)
}

/// Flags of the other kind of service are refused rather than ignored.
fn check_flags_fit_the_kind(args: &Args) -> anyhow::Result<()> {
    match args.kind() {
        KindArg::Generic => {
            if let Some(flag) = args.llm_flags().first() {
                crate::usage!("{flag} is for an LLM-shaped service: add --kind openai or --kind anthropic");
            }
        }
        kind => {
            if let Some(flag) = args.generic_flags().first() {
                let name = if kind == KindArg::Openai {
                    "openai"
                } else {
                    "anthropic"
                };
                crate::usage!(
                    "{flag} is for the generic service, not --kind {name}: drop it (an LLM-shaped \
                     service is limited by --rpm/--tpm/--itpm/--otpm and --limit-window, paced by \
                     --first-token and --per-token)"
                );
            }
        }
    }
    Ok(())
}

/// The mode: `--mode`, else the file's `mode`, else single if a single-mode flag was given
/// (those flags mean nothing otherwise), else multi. A single-mode flag where another mode was
/// asked for is refused, naming it.
fn resolve_mode(
    asked: Option<ModeArg>,
    file: Option<&ConfigFile>,
    single_flags: &[&'static str],
    path: Option<&Path>,
) -> anyhow::Result<Mode> {
    let flag = single_flags.first();
    let shown = || path.map(|p| p.display().to_string()).unwrap_or_default();
    match (asked, file) {
        (Some(ModeArg::Single), _) => Ok(Mode::Single),
        (Some(ModeArg::Multi), _) => match flag {
            Some(flag) => crate::usage!(
                "{flag} configures single mode's one service, but --mode multi was given: drop \
                 --mode multi (a single-mode flag implies --mode single), or drop {flag} and define \
                 the service in a --config file's [services.NAME]"
            ),
            None => Ok(Mode::Multi),
        },
        (None, Some(file)) => match (file.mode, flag) {
            (Some(Mode::Multi), Some(flag)) => crate::usage!(
                "{flag} configures single mode's one service, but {} says mode = \"multi\": add \
                 --mode single, or drop {flag}",
                shown()
            ),
            (None, Some(flag)) if !file.services.is_empty() => crate::usage!(
                "{flag} configures single mode's one service, but {} defines services for multi \
                 mode: add --mode single to serve only the flags' service, or drop {flag}",
                shown()
            ),
            (Some(mode), _) => Ok(mode),
            (None, Some(_)) => Ok(Mode::Single),
            (None, None) => Ok(Mode::Multi),
        },
        (None, None) if flag.is_some() => Ok(Mode::Single),
        (None, None) => Ok(Mode::Multi),
    }
}

fn single_service(args: &Args) -> anyhow::Result<Definition> {
    let provider = match args.kind() {
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
    config.window_ms = args.limit_window.or(args.limit_window_ms).unwrap_or(MINUTE_MS);
    config.api_key = args.api_key.clone();
    config.rate_limit_headers = !args.no_rate_limit_headers;
    config.seed = args.seed.unwrap_or(0);
    config.latency = Latency {
        first_token_ms: args
            .first_token
            .or(args.first_token_ms)
            .unwrap_or(Latency::DEFAULT.first_token_ms),
        per_token_ms: args
            .per_token
            .or(args.per_token_ms)
            .unwrap_or(Latency::DEFAULT.per_token_ms),
    };
    config.validate().map_err(|e| {
        let flag = match e.field.as_str() {
            "maxConcurrency" => "--max-concurrency".to_owned(),
            "windowMs" => "--limit-window".to_owned(),
            "apiKey" => "--api-key".to_owned(),
            "latency.firstTokenMs" => "--first-token".to_owned(),
            "latency.perTokenMs" => "--per-token".to_owned(),
            other => match other.strip_prefix("limits.") {
                Some(limit) => format!("--{limit}"),
                None => other.to_owned(),
            },
        };
        let message = e
            .message
            .replace("use tpm", "use --tpm")
            .replace("use itpm and otpm", "use --itpm and --otpm");
        UsageError(format!("{flag}: {message}"))
    })?;
    Ok(Definition::Provider(config))
}

fn generic_service(args: &Args) -> anyhow::Result<ServiceConfig> {
    let window_ms = args.window.or(args.window_ms).unwrap_or(1000);
    let mut config = ServiceConfig::new(
        args.max_concurrency.unwrap_or(100),
        args.limit.unwrap_or(100),
        window_ms,
    );
    config.delay_ms = args.delay.or(args.delay_ms).unwrap_or(DEFAULT_DELAY_MS);
    config.rate_limit.algorithm = match args.algorithm.unwrap_or(AlgorithmArg::TokenBucket) {
        AlgorithmArg::TokenBucket => Algorithm::TokenBucket,
        AlgorithmArg::FixedWindow => Algorithm::FixedWindow,
        AlgorithmArg::SlidingWindow => Algorithm::SlidingWindow,
    };
    config.echo = args.echo;
    let error_rate = args.error_rate.unwrap_or(0.0);
    if error_rate != 0.0 || args.error_status.is_some() {
        config.error_simulation = Some(ErrorSimulation {
            rate: error_rate,
            status_code: args.error_status.unwrap_or(500),
            error_message: "internal_server_error".to_owned(),
        });
    }
    config.validate().map_err(|e| {
        let flag = match e.field.as_str() {
            "maxConcurrency" => "--max-concurrency",
            "rateLimit.limit" => "--limit",
            "rateLimit.windowMs" => "--window",
            "delayMs" | "delayMs[0]" | "delayMs[1]" => "--delay",
            "errorSimulation.rate" => "--error-rate",
            "errorSimulation.statusCode" => "--error-status",
            other => other,
        };
        UsageError(format!("{flag}: {}", e.message))
    })?;
    Ok(config)
}

/// A config file: an optional mode and `services.NAME` tables.
struct ConfigFile {
    mode: Option<Mode>,
    services: Vec<(String, Definition)>,
}

/// Reads a config file; every problem with it is the user's to fix (exit 2), named by its key.
fn read_config(path: &Path) -> anyhow::Result<ConfigFile> {
    let shown = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => crate::usage!("--config {shown}: could not read it ({e})"),
    };
    let value: Value = if path.extension().is_some_and(|e| e == "json") {
        match serde_json::from_str(&text) {
            Ok(value) => value,
            Err(e) => crate::usage!("{shown} is not valid JSON: {e}"),
        }
    } else {
        match toml::from_str(&text) {
            Ok(value) => value,
            Err(e) => crate::usage!("{shown} is not valid TOML: {e}"),
        }
    };
    let Some(object) = value.as_object() else {
        crate::usage!("{shown} must be a table of `mode` and `services`");
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !["mode", "services"].contains(&k.as_str()))
    {
        crate::usage!(
            "{shown}: `{unknown}` is not a known key (expected mode, or [services.NAME] tables; \
             every key is listed in `tem mock-server --help`)"
        );
    }
    let mode = match object.get("mode") {
        None => None,
        Some(Value::String(mode)) if mode == "single" => Some(Mode::Single),
        Some(Value::String(mode)) if mode == "multi" => Some(Mode::Multi),
        Some(other) => crate::usage!("{shown}: mode must be \"single\" or \"multi\", got {other}"),
    };
    let mut services = Vec::new();
    if let Some(table) = object.get("services") {
        let Some(table) = table.as_object() else {
            crate::usage!("{shown}: `services` must be a table of [services.NAME]");
        };
        for (name, config) in table {
            let config = Definition::from_json_any_case(config, KeyCase::Snake).map_err(|e| {
                UsageError(format!(
                    "{shown}: services.{name}.{}: {} (every key is listed in `tem mock-server --help`)",
                    e.field, e.message
                ))
            })?;
            services.push((name.clone(), config));
        }
    }
    Ok(ConfigFile { mode, services })
}
