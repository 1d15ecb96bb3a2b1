//! `tem detect URL`: find an API's concurrency and rate limits within a request budget, and
//! optionally write them into `tem.toml` for `tem run-batch`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tem_core::detect::{DetectOptions, DetectedLimits, Finding, detect_with_progress};
use tem_core::http::expand_env;

use crate::say;
use crate::usage::UsageError;

#[derive(clap::Args)]
#[command(after_long_help = "\
Examples:
  tem detect https://api.example.com/v1/ping --header 'Authorization: Bearer ${API_TOKEN}'
      asks first (the cost), then probes; ${VAR} in headers is read from the environment
  tem detect http://127.0.0.1:19999/ --yes --json --max-requests 500
      for scripts: no prompt, one JSON object
  tem detect URL --yes --write-config
      writes `concurrency` and `rate` into ./tem.toml for tem run-batch

How: one request first — if the API states its rate limit in headers (RateLimit-Policy,
X-RateLimit-Limit with a window), that is the answer. Then bursts of simultaneous requests find the
concurrency cap (502/503/504 = too many; 429 = the rate limit, which ends that search). Then, unless
stated, requests paced at doubling rates find where 429s start and what gets through above it. A
4xx other than 429, or a refused connection, stops detection with an error. Every request counts
against --max-requests; what the budget could not reach is reported as a lower bound.")]
pub struct Args {
    /// The endpoint to probe (a cheap one: every probe is a real call).
    url: String,
    /// HTTP method of each probe.
    #[arg(long, default_value = "GET")]
    method: String,
    /// A request header, `Name: value` (repeatable); `${VAR}` is replaced from the environment.
    #[arg(long = "header", value_name = "K:V")]
    headers: Vec<String>,
    /// JSON body sent with every probe.
    #[arg(long, value_name = "JSON")]
    body: Option<String>,
    /// Hard cap on the number of requests.
    #[arg(long, default_value_t = 300)]
    max_requests: u32,
    /// Hard cap on the run's duration (e.g. 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    max_time: Duration,
    /// The largest burst of simultaneous requests tried.
    #[arg(long, default_value_t = 128)]
    max_concurrency: u32,
    /// Start without asking (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    yes: bool,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    json: bool,
    /// Write the safe values into this TOML file (default ./tem.toml) as `concurrency` and `rate`.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "tem.toml")]
    write_config: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let options = options(&args)?;
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(UsageError(format!(
                "tem detect sends real requests ({}); pass --yes to start without a prompt",
                options.cost_estimate()
            ))
            .into());
        }
        eprint!(
            "tem detect will send {} to {}. Proceed? [y/N] ",
            options.cost_estimate(),
            args.url
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing sent");
            return Ok(ExitCode::from(1));
        }
    }
    if args.yes && !args.json {
        eprintln!("probing {}: {}", args.url, options.cost_estimate());
    }
    let progress: Option<tem_core::detect::Progress> = if args.json {
        None
    } else {
        Some(Arc::new(|line: &str| {
            let _ = writeln!(std::io::stderr(), "  … {line}");
        }))
    };
    let detected = detect_with_progress(&options, progress)
        .await
        .with_context(|| format!("detecting the limits of {}", args.url))?;
    if args.json {
        say!("{}", serde_json::to_string(&json(&detected))?);
    } else {
        print_report(&detected);
    }
    if let Some(path) = &args.write_config {
        write_config(path, &detected)?;
        if !args.json {
            say!("wrote concurrency and rate to {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn options(args: &Args) -> anyhow::Result<DetectOptions> {
    let mut options = DetectOptions::new(args.url.clone());
    options.method = tem_core::http::parse_method(&args.method)
        .map_err(|message| UsageError(format!("--method: {message}")))?;
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            return Err(UsageError(format!("--header `{header}` must be `Name: value`")).into());
        };
        let value =
            expand_env(value.trim(), &|name| std::env::var(name).ok(), &mut Vec::new()).map_err(|name| {
                UsageError(format!(
                    "--header `{header}` refers to ${{{name}}}, which is not set in the environment"
                ))
            })?;
        let name: http::HeaderName = name.trim().parse().map_err(|_| {
            UsageError(format!(
                "--header `{header}`: `{}` is not a header name",
                name.trim()
            ))
        })?;
        let value: http::HeaderValue = value.parse().map_err(|_| {
            UsageError(format!(
                "--header `{name}`: the value is not a valid header value"
            ))
        })?;
        options.headers.append(name, value);
    }
    if let Some(body) = &args.body {
        serde_json::from_str::<serde_json::Value>(body)
            .map_err(|error| UsageError(format!("--body is not JSON: {error}")))?;
        options.body = Some(body.clone().into_bytes());
    }
    if args.max_requests < 2 {
        return Err(UsageError("--max-requests must be at least 2".into()).into());
    }
    options.max_requests = args.max_requests;
    options.max_duration = args.max_time;
    options.max_concurrency = args.max_concurrency.max(1);
    Ok(options)
}

fn finding(f: Finding) -> &'static str {
    match f {
        Finding::Stated => "stated by the API",
        Finding::Exact => "observed on both sides",
        Finding::Bracketed => "bracketed",
        Finding::AtLeast => "lower bound: never reached",
    }
}

fn print_report(detected: &DetectedLimits) {
    let margin = (detected.safety * 100.0).round();
    say!("");
    match &detected.concurrency {
        Some(c) => say!(
            "concurrency  {} at once ({}); use {} ({margin}% of it)",
            c.detected,
            finding(c.finding),
            c.safe
        ),
        None => say!("concurrency  unknown"),
    }
    match &detected.rate_limit {
        Some(r) if r.finding == Finding::AtLeast => say!(
            "rate limit   not reached: at least {} requests pass within {} ms (a lower bound, not a rate to pace by)",
            r.requests,
            r.window_ms
        ),
        Some(r) => say!(
            "rate limit   {} per {} ms ({}); use {} per {} ms ({margin}% of it)",
            r.requests,
            r.window_ms,
            finding(r.finding),
            r.safe_requests,
            r.window_ms
        ),
        None => say!("rate limit   unknown: the budget ended before it could be measured"),
    }
    say!(
        "confidence   {:?} — {} requests in {:.1} s",
        detected.confidence,
        detected.requests_used,
        detected.elapsed_ms as f64 / 1000.0
    );
    say!("evidence:");
    for line in &detected.evidence {
        say!("  - {line}");
    }
}

fn json(detected: &DetectedLimits) -> serde_json::Value {
    serde_json::json!({
        "concurrency": detected.concurrency.as_ref().map(|c| c.safe),
        // A lower bound is not a limit to pace by: only measured or stated rates are given here.
        "rate_limit": usable_rate(detected).map(|r| serde_json::json!({ "requests": r.safe_requests, "window_ms": r.window_ms })),
        "confidence": detected.confidence,
        "requests_used": detected.requests_used,
        "elapsed_ms": detected.elapsed_ms,
        "safety": detected.safety,
        "detected": { "concurrency": detected.concurrency, "rate_limit": detected.rate_limit },
        "evidence": detected.evidence,
    })
}

/// The detected rate when it can be paced by: stated, or measured (not a lower bound).
fn usable_rate(detected: &DetectedLimits) -> Option<&tem_core::detect::RateLimit> {
    detected
        .rate_limit
        .as_ref()
        .filter(|r| r.finding != Finding::AtLeast)
}

/// The rate as `tem run-batch` reads it (`100/s`, `600/min`, `5/10s`).
fn rate_text(requests: u64, window_ms: u64) -> String {
    match window_ms {
        1000 => format!("{requests}/s"),
        60_000 => format!("{requests}/min"),
        ms if ms.is_multiple_of(1000) => format!("{requests}/{}s", ms / 1000),
        ms => format!("{requests}/{ms}ms"),
    }
}

/// Sets `concurrency` and `rate` in a TOML file, keeping the rest of it (and its comments).
fn write_config(path: &Path, detected: &DetectedLimits) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    let mut document: toml_edit::DocumentMut = text.parse().with_context(|| {
        format!(
            "{} is not valid TOML; fix it or choose another file",
            path.display()
        )
    })?;
    let Some(concurrency) = &detected.concurrency else {
        bail!("no concurrency was detected, so nothing was written");
    };
    document["concurrency"] = toml_edit::value(i64::from(concurrency.safe));
    match usable_rate(detected) {
        Some(rate) => document["rate"] = toml_edit::value(rate_text(rate.safe_requests, rate.window_ms)),
        None => eprintln!("the rate limit was not measured (only a lower bound), so `rate` was not written"),
    }
    std::fs::write(path, document.to_string()).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_written_in_the_form_run_batch_reads() {
        assert_eq!(rate_text(90, 1000), "90/s");
        assert_eq!(rate_text(540, 60_000), "540/min");
        assert_eq!(rate_text(4, 10_000), "4/10s");
        for text in [rate_text(90, 1000), rate_text(540, 60_000), rate_text(4, 10_000)] {
            assert!(text.parse::<tem_core::limit::Quota>().is_ok(), "{text}");
        }
    }
}
