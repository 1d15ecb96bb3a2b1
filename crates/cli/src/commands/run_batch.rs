//! `tem run-batch`: a JSONL file of calls, run durably against an HTTP API.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use tem_core::http::InputSource;

use crate::config::{self, RunConfig};
use crate::plan::RunPlan;
use crate::run::{RunRequest, run};
use crate::usage::UsageError;

#[derive(clap::Args)]
#[command(after_long_help = "\
Each input line is one call, either a full request of its own:
  {\"method\": \"POST\", \"path\": \"/v1/embed\", \"headers\": {\"x-id\": \"7\"}, \"body\": {\"text\": \"hi\"}}
  {\"url\": \"https://api.example.com/v1/items/7\", \"method\": \"GET\"}
or a payload for the request template given by --method/--path/--body:
  {\"id\": 7, \"text\": \"hello\"}     with --path /v1/items/{id} --body '{\"input\": \"{{text}}\"}'
Without --body, a payload line is sent as the body itself. Invalid lines are reported with their
line number and field and fail on their own; the other lines run. Settings that no line can be
sent with, or a file that is mostly not JSON, stop the run before anything is written (exit 2);
--dry-run shows the first requests exactly as they would be sent, secrets masked.

Secrets: header values may name environment variables, read at call time and never stored:
  --header 'authorization: Bearer ${API_TOKEN}'
These headers go only to --base-url's origin (a line with a \"url\" elsewhere does not get
them), redirects are followed only within an origin, and input lines cannot use ${VAR}.

Durability: the batch lives in the database (--db, default tem.db) under its code (--batch,
default the input file's name). Ctrl-C once stops starting calls and waits for those in flight;
twice aborts them. After Ctrl-C, a kill or a crash, run the same command again: it continues
where it stopped, and a call that succeeded is never made again.

Every setting can also come from TEM_<NAME> (e.g. TEM_RATE=100/s) or a tem.toml file (rate =
\"100/s\", [headers] table); flags win over the environment, which wins over the file.

Responses: 2xx succeeds (the body is the result: JSON if it parses, else text); 429 is rate-
limited (Retry-After honoured); 502/503/504 overloaded; 408, other 5xx and network errors are
retried with backoff; other 4xx fail at once.

Exit status: 0 every task succeeded; 1 some failed, or the batch was interrupted or stopped
(the message says how to continue); 2 the command line or config is wrong.

Examples:
  tem run-batch prompts.jsonl --base-url https://api.example.com --path /v1/complete \\
      --header 'authorization: Bearer ${API_TOKEN}' --rate 600/min --concurrency 16
  tem run-batch items.jsonl --base-url http://127.0.0.1:8080 --method GET --path '/items/{id}' \\
      --output results.jsonl
  cat calls.jsonl | tem run-batch - --batch nightly --json")]
pub struct Args {
    /// JSONL input, one call per line; `-` reads standard input.
    #[arg(value_name = "INPUT.jsonl")]
    input: PathBuf,

    /// Config file (default: ./tem.toml when it exists).
    #[arg(long, env = "TEM_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Database holding the batch: a SQLite file [default: tem.db], or postgres://USER@HOST/DB to
    /// share one batch between processes on many machines (then --concurrency and --rate hold for
    /// all of them together).
    #[arg(long, value_name = "FILE|URL")]
    db: Option<PathBuf>,
    /// Batch code; the same code continues the same batch [default: the input file's name].
    #[arg(long, value_name = "CODE")]
    batch: Option<String>,
    /// Continue the batch even if it was interrupted.
    #[arg(long)]
    resume: bool,
    /// Call nothing and write nothing: read the whole input, print the first N requests exactly
    /// as they would be sent (secrets masked) as JSON lines, and say how many lines cannot
    /// become a request (exit 1 if any).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "3")]
    dry_run: Option<usize>,

    /// Prefix of every relative path, e.g. https://api.example.com.
    #[arg(long, value_name = "URL", help_heading = "Request")]
    base_url: Option<String>,
    /// Method of template requests [default: POST].
    #[arg(long, help_heading = "Request")]
    method: Option<String>,
    /// Path template; `{field}` takes the payload's field, e.g. /v1/items/{id}.
    #[arg(long, help_heading = "Request")]
    path: Option<String>,
    /// A header of every request, `NAME: VALUE`; repeat for more. `${VAR}` reads the environment.
    #[arg(
        long = "header",
        short = 'H',
        value_name = "NAME: VALUE",
        help_heading = "Request"
    )]
    headers: Vec<String>,
    /// Body template (JSON); strings `{{field}}` take the payload's field. Default: the payload.
    #[arg(long, value_name = "JSON", help_heading = "Request")]
    body: Option<String>,

    /// Calls in flight at most [default: 8].
    #[arg(long, short = 'c', help_heading = "Limits")]
    concurrency: Option<usize>,
    /// Keep concurrency fixed instead of halving it on 429/503 and growing it back.
    #[arg(long, help_heading = "Limits")]
    fixed_concurrency: bool,
    /// Calls per period, never exceeded in any window: 100/s, 600/min, 5/10s.
    #[arg(long, value_name = "N/PERIOD", help_heading = "Limits")]
    rate: Option<String>,
    /// Weighted budget per period (e.g. tokens), with --cost-field and/or --response-cost-field.
    #[arg(long, value_name = "N/PERIOD", help_heading = "Limits")]
    budget: Option<String>,
    /// Field of each line (dotted path) estimating its cost, e.g. max_tokens.
    #[arg(long, value_name = "FIELD", help_heading = "Limits")]
    cost_field: Option<String>,
    /// Field of each JSON response (dotted path) with its real cost, e.g. usage.total_tokens.
    #[arg(long, value_name = "FIELD", help_heading = "Limits")]
    response_cost_field: Option<String>,
    /// Per-call timeout (0 for none) [default: 30s].
    #[arg(long, value_name = "DURATION", help_heading = "Limits")]
    timeout: Option<String>,
    /// Connection timeout [default: 10s].
    #[arg(long, value_name = "DURATION", help_heading = "Limits")]
    connect_timeout: Option<String>,
    /// How long a claimed task is ours without renewal; a crashed run's tasks return after it [default: 10s].
    #[arg(long, value_name = "DURATION", help_heading = "Limits")]
    lease: Option<String>,
    /// How long to keep retrying the database through a restart, failover or dropped
    /// connection before giving up (calls in flight go on meanwhile) [default: 1m].
    #[arg(long, value_name = "DURATION", help_heading = "Limits")]
    outage_tolerance: Option<String>,

    /// Attempts per task, the first included [default: 5].
    #[arg(long, help_heading = "Retries")]
    max_attempts: Option<u32>,
    /// First retry delay, doubled each time, with full jitter [default: 500ms].
    #[arg(long, value_name = "DURATION", help_heading = "Retries")]
    backoff: Option<String>,
    /// Longest retry delay [default: 30s].
    #[arg(long, value_name = "DURATION", help_heading = "Retries")]
    backoff_max: Option<String>,
    /// Stop calling for a while after this many failures in a row (circuit breaker; off by default).
    #[arg(long, value_name = "N", help_heading = "Retries")]
    breaker_failures: Option<u32>,
    /// How long the breaker stays open [default: 30s].
    #[arg(long, value_name = "DURATION", help_heading = "Retries")]
    breaker_cool_down: Option<String>,

    /// Interrupt the batch when more than this fraction of finished tasks failed (0–1).
    #[arg(long, value_name = "FRACTION", help_heading = "Interrupt the batch when")]
    max_error_rate: Option<f64>,
    /// Finished tasks needed before --max-error-rate is judged [default: 20].
    #[arg(long, value_name = "N", help_heading = "Interrupt the batch when")]
    min_sample: Option<u64>,
    /// More than this many tasks failed.
    #[arg(long, value_name = "N", help_heading = "Interrupt the batch when")]
    max_failed: Option<u64>,
    /// More than this many tasks failed in a row.
    #[arg(long, value_name = "N", help_heading = "Interrupt the batch when")]
    max_consecutive_failures: Option<u64>,
    /// More than this many attempts were answered 429.
    #[arg(long, value_name = "N", help_heading = "Interrupt the batch when")]
    max_rate_limited: Option<u64>,
    /// More than this many attempts were answered 502/503/504.
    #[arg(long, value_name = "N", help_heading = "Interrupt the batch when")]
    max_overloaded: Option<u64>,
    /// The batch has run longer than this.
    #[arg(long, value_name = "DURATION", help_heading = "Interrupt the batch when")]
    max_runtime: Option<String>,

    /// Write one result line per task, in input order, to this file.
    #[arg(long, short = 'o', value_name = "FILE", help_heading = "Output")]
    output: Option<PathBuf>,
    /// Bytes of each response body kept [default: 1048576]; longer ones are cut and marked.
    #[arg(long, value_name = "BYTES", help_heading = "Output")]
    max_result_bytes: Option<usize>,
    /// Print one JSON document (the report) at the end, and nothing else on stdout.
    #[arg(long, help_heading = "Output")]
    json: bool,
    /// Print nothing but errors; the exit status says how it went.
    #[arg(long, short = 'q', help_heading = "Output")]
    quiet: bool,
}

pub async fn run_command(args: Args) -> anyhow::Result<ExitCode> {
    let flags = flags(&args)?;
    let loaded = config::load(flags, args.config.as_deref())?;
    let plan = RunPlan::new(&loaded)?;
    let stdin = args.input.as_os_str() == "-";
    let code = match (&loaded.config.batch, stdin) {
        (Some(code), _) => code.clone(),
        (None, true) => {
            crate::usage!("reading standard input needs --batch CODE (the name to continue it by)")
        }
        (None, false) => args
            .input
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                UsageError(format!(
                    "cannot name a batch after {}; give --batch",
                    args.input.display()
                ))
            })?,
    };
    let source = if stdin {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes)?;
        InputSource::Memory {
            name: "standard input".into(),
            bytes: bytes.into(),
        }
    } else {
        if !args.input.is_file() {
            crate::usage!("input {} does not exist or is not a file", args.input.display());
        }
        InputSource::File(args.input.clone())
    };
    run(RunRequest {
        plan,
        code,
        source,
        resume: args.resume,
        dry_run: args.dry_run,
    })
    .await
}

/// The flags that were given, as settings (the rest stay unset so the environment or the
/// config file can supply them).
fn flags(args: &Args) -> Result<RunConfig, UsageError> {
    let mut headers = BTreeMap::new();
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            return Err(UsageError(format!(
                "--header `{header}`: write NAME: VALUE, e.g. --header 'authorization: Bearer ${{API_TOKEN}}'"
            )));
        };
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    Ok(RunConfig {
        base_url: args.base_url.clone(),
        method: args.method.clone(),
        path: args.path.clone(),
        headers,
        // Parsed (and its errors named) with the other places a body can come from.
        body: args.body.clone().map(serde_json::Value::String),
        db: args.db.clone(),
        batch: args.batch.clone(),
        concurrency: args.concurrency,
        adaptive: args.fixed_concurrency.then_some(false),
        rate: args.rate.clone(),
        budget: args.budget.clone(),
        cost_field: args.cost_field.clone(),
        response_cost_field: args.response_cost_field.clone(),
        timeout: args.timeout.clone(),
        connect_timeout: args.connect_timeout.clone(),
        lease: args.lease.clone(),
        outage_tolerance: args.outage_tolerance.clone(),
        max_attempts: args.max_attempts,
        backoff: args.backoff.clone(),
        backoff_max: args.backoff_max.clone(),
        breaker_failures: args.breaker_failures,
        breaker_cool_down: args.breaker_cool_down.clone(),
        max_error_rate: args.max_error_rate,
        min_sample: args.min_sample,
        max_failed: args.max_failed,
        max_consecutive_failures: args.max_consecutive_failures,
        max_rate_limited: args.max_rate_limited,
        max_overloaded: args.max_overloaded,
        max_runtime: args.max_runtime.clone(),
        max_result_bytes: args.max_result_bytes,
        output: args.output.clone(),
        json: args.json.then_some(true),
        quiet: args.quiet.then_some(true),
    })
}
