//! A run plan: merged settings checked and turned into the engine's types, with every default in
//! one place. Nothing here touches the network or the database.

use std::path::PathBuf;
use std::time::Duration;

use tem_core::http::{HttpOptions, RequestTemplate};
use tem_core::limit::{Aimd, BreakerConfig, Quota};
use tem_core::{InterruptionCriteria, Jitter, Limits, RetryPolicy, WorkerOptions};

use crate::config::{self, RunConfig};
use crate::usage::UsageError;

/// Built-in defaults (documented in `tem run-batch --help`).
pub mod defaults {
    pub const CONCURRENCY: usize = 8;
    pub const MAX_ATTEMPTS: u32 = 5;
    pub const BACKOFF: &str = "500ms";
    pub const BACKOFF_MAX: &str = "30s";
    pub const TIMEOUT: &str = "30s";
    pub const CONNECT_TIMEOUT: &str = "10s";
    pub const LEASE: &str = "10s";
    pub const OUTAGE_TOLERANCE: &str = "1m";
    pub const BREAKER_COOL_DOWN: &str = "30s";
    pub const MAX_RESULT_BYTES: usize = 1 << 20;
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Display {
    /// A live bar (or periodic lines when stderr is not a terminal), then the report.
    Human,
    /// Nothing but errors; the exit status says how it went.
    Quiet,
    /// One JSON document on stdout at the end.
    Json,
}

/// Everything a run needs, checked.
#[derive(Clone, Debug)]
pub struct RunPlan {
    pub db: PathBuf,
    pub template: RequestTemplate,
    pub http: HttpOptions,
    pub worker: WorkerOptions,
    pub limits: Limits,
    pub retry: RetryPolicy,
    pub criteria: InterruptionCriteria,
    pub cost_field: Option<String>,
    /// How long database work is retried through an outage.
    pub outage_tolerance: Duration,
    pub output: Option<PathBuf>,
    pub display: Display,
}

impl RunPlan {
    /// Checks `loaded` and fills in the defaults.
    pub fn new(loaded: &config::Loaded) -> Result<RunPlan, UsageError> {
        let c: &RunConfig = &loaded.config;
        let duration = |key: &str,
                        value: &Option<String>,
                        default: Option<&str>|
         -> Result<Option<Duration>, UsageError> {
            match value.as_deref().or(default) {
                None => Ok(None),
                Some(text) => humantime::parse_duration(text.trim()).map(Some).map_err(|e| {
                    loaded.bad(
                        key,
                        format!("`{text}` is not a duration ({e}); write e.g. 500ms, 30s, 2m"),
                    )
                }),
            }
        };
        let quota = |key: &str, value: &Option<String>| -> Result<Option<Quota>, UsageError> {
            value
                .as_deref()
                .map(|text| {
                    text.parse::<Quota>().map_err(|e| {
                        loaded.bad(
                            key,
                            format!("{e}; write COUNT/PERIOD, e.g. 100/s, 600/min, 90000/min"),
                        )
                    })
                })
                .transpose()
        };

        // A body given as text (a flag, an environment variable, a TOML string) is JSON text; a
        // TOML table is the JSON object itself.
        let body = match &c.body {
            Some(serde_json::Value::String(text)) => Some(serde_json::from_str(text).map_err(|e| {
                loaded.bad(
                    "body",
                    format!(
                        "not valid JSON ({e}); write a JSON template such as '{{\"input\": \"{{{{text}}}}\"}}' \
                         (a JSON string is quoted: '\"{{{{text}}}}\"')"
                    ),
                )
            })?),
            other => other.clone(),
        };
        let template = RequestTemplate {
            base_url: c.base_url.clone(),
            method: c.method.clone(),
            path: c.path.clone(),
            headers: c
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            body,
        };
        if let Err(e) = template.validate() {
            let key = match e.field.as_str() {
                "base_url" => "base_url",
                "method" => "method",
                _ => "headers",
            };
            return Err(loaded.bad(key, e.message));
        }
        if let Some(path) = &c.path
            && c.base_url.is_none()
            && !path.starts_with("http")
        {
            return Err(loaded.bad(
                "path",
                "a path needs --base-url (or TEM_BASE_URL, or base_url in tem.toml)",
            ));
        }

        let concurrency = c.concurrency.unwrap_or(defaults::CONCURRENCY);
        if concurrency == 0 {
            return Err(loaded.bad("concurrency", "must be at least 1"));
        }
        let max_attempts = c.max_attempts.unwrap_or(defaults::MAX_ATTEMPTS);
        if max_attempts == 0 {
            return Err(loaded.bad("max_attempts", "must be at least 1 (1 means no retries)"));
        }
        let retry = RetryPolicy {
            max_attempts,
            base: duration("backoff", &c.backoff, Some(defaults::BACKOFF))?.unwrap_or_default(),
            cap: duration("backoff_max", &c.backoff_max, Some(defaults::BACKOFF_MAX))?.unwrap_or_default(),
            jitter: Jitter::Full,
        };
        retry.validate().map_err(|e| loaded.bad("backoff", e))?;

        let timeout = duration("timeout", &c.timeout, Some(defaults::TIMEOUT))?.filter(|t| !t.is_zero());
        let lease = duration("lease", &c.lease, Some(defaults::LEASE))?.unwrap_or_default();
        if lease < Duration::from_secs(1) {
            return Err(loaded.bad("lease", "must be at least 1s (it is renewed every third of it)"));
        }
        let outage_tolerance = duration(
            "outage_tolerance",
            &c.outage_tolerance,
            Some(defaults::OUTAGE_TOLERANCE),
        )?
        .unwrap_or_default();
        let db = c.db.clone().unwrap_or_else(|| PathBuf::from(config::DEFAULT_DB));
        let mut worker = WorkerOptions::default().concurrency(concurrency).lease(lease);
        if config::is_shared_db(&db) {
            // On a database many machines share, --concurrency holds for the batch as a whole.
            worker.batch_concurrency = Some(u32::try_from(concurrency).unwrap_or(u32::MAX));
        }
        // A crashed run's tasks come back soon after their lease ends, not seconds later.
        worker.rescue_interval = (lease / 2).min(worker.rescue_interval);
        worker.timeout = timeout;
        if c.adaptive == Some(false) {
            worker = worker.fixed_concurrency();
        } else {
            worker.adaptive = Some(Aimd::default());
        }

        let mut limits = Limits {
            rate: quota("rate", &c.rate)?,
            budget: quota("budget", &c.budget)?,
            breaker: None,
        };
        if let Some(failures) = c.breaker_failures.filter(|n| *n > 0) {
            let cool_down = duration(
                "breaker_cool_down",
                &c.breaker_cool_down,
                Some(defaults::BREAKER_COOL_DOWN),
            )?
            .unwrap_or_default();
            let breaker = BreakerConfig {
                consecutive_failures: failures,
                cool_down,
                ..BreakerConfig::default()
            };
            breaker
                .validate()
                .map_err(|e| loaded.bad("breaker_failures", e))?;
            limits.breaker = Some(breaker);
        }
        if limits.budget.is_some() && c.cost_field.is_none() && c.response_cost_field.is_none() {
            return Err(loaded.bad(
                "budget",
                "a budget needs --cost-field (the estimate in each line) or --response-cost-field (the real cost in each response)",
            ));
        }

        let criteria = InterruptionCriteria {
            max_error_rate: c.max_error_rate,
            min_sample: c.min_sample,
            max_failed_tasks: c.max_failed,
            max_consecutive_failures: c.max_consecutive_failures,
            max_rate_limited: c.max_rate_limited,
            max_overloaded: c.max_overloaded,
            max_task_runtime_ms: None,
            max_batch_runtime_ms: duration("max_runtime", &c.max_runtime, None)?
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        criteria.validate().map_err(|e| match e {
            tem_core::Error::Invalid { field, reason } => loaded.bad(criterion_key(field), reason),
            other => loaded.bad("max_error_rate", other),
        })?;

        let http = HttpOptions {
            max_result_bytes: c.max_result_bytes.unwrap_or(defaults::MAX_RESULT_BYTES),
            response_cost_field: c.response_cost_field.clone(),
            connect_timeout: duration(
                "connect_timeout",
                &c.connect_timeout,
                Some(defaults::CONNECT_TIMEOUT),
            )?
            .unwrap_or_default(),
            ..HttpOptions::default()
        };
        let display = match (c.json.unwrap_or(false), c.quiet.unwrap_or(false)) {
            (true, true) => return Err(loaded.bad("json", "--json and --quiet cannot be used together")),
            (true, false) => Display::Json,
            (false, true) => Display::Quiet,
            (false, false) => Display::Human,
        };
        Ok(RunPlan {
            db,
            template,
            http,
            worker,
            limits,
            retry,
            criteria,
            cost_field: c.cost_field.clone(),
            outage_tolerance,
            output: c.output.clone(),
            display,
        })
    }
}

/// The setting behind an interruption criterion's field name.
fn criterion_key(field: &str) -> &'static str {
    match field {
        f if f.contains("error_rate") => "max_error_rate",
        f if f.contains("min_sample") => "min_sample",
        f if f.contains("failed") => "max_failed",
        f if f.contains("consecutive") => "max_consecutive_failures",
        f if f.contains("rate_limited") => "max_rate_limited",
        f if f.contains("overloaded") => "max_overloaded",
        _ => "max_runtime",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan from exactly `config` (no environment, no tem.toml: the tests are hermetic).
    fn plan(config: RunConfig) -> Result<RunPlan, String> {
        RunPlan::new(&config::Loaded::only(config)).map_err(|e| e.0)
    }

    #[test]
    fn defaults_make_a_sane_plan() {
        let plan = plan(RunConfig {
            base_url: Some("http://127.0.0.1:9".into()),
            ..RunConfig::default()
        })
        .unwrap();
        // The defaults `tem run-batch --help` documents, written out: a changed constant must
        // change the documentation (and this test) with it.
        assert_eq!(plan.worker.concurrency, 8);
        assert_eq!(plan.retry.max_attempts, 5);
        assert_eq!(plan.retry.base, Duration::from_millis(500));
        assert_eq!(plan.retry.cap, Duration::from_secs(30));
        assert_eq!(plan.worker.timeout, Some(Duration::from_secs(30)));
        assert_eq!(plan.http.connect_timeout, Duration::from_secs(10));
        assert_eq!(plan.worker.lease, Duration::from_secs(10));
        assert_eq!(plan.http.max_result_bytes, 1_048_576);
        assert!(plan.limits.rate.is_none() && plan.criteria.is_empty());
        assert_eq!(plan.display, Display::Human);
    }

    #[test]
    fn bad_settings_name_the_flag_and_the_fix() {
        let err = |config: RunConfig| plan(config).unwrap_err();
        let e = err(RunConfig {
            rate: Some("lots".into()),
            ..RunConfig::default()
        });
        assert!(e.starts_with("--rate:") && e.contains("100/s"), "{e}");
        let e = err(RunConfig {
            timeout: Some("30 parsecs".into()),
            ..RunConfig::default()
        });
        assert!(e.starts_with("--timeout:") && e.contains("30s"), "{e}");
        let e = err(RunConfig {
            base_url: Some("ftp://x".into()),
            ..RunConfig::default()
        });
        assert!(e.starts_with("--base-url:"), "{e}");
        let e = err(RunConfig {
            budget: Some("1000/min".into()),
            ..RunConfig::default()
        });
        assert!(e.contains("--cost-field"), "{e}");
        let e = err(RunConfig {
            max_error_rate: Some(1.5),
            ..RunConfig::default()
        });
        assert!(e.starts_with("--max-error-rate:"), "{e}");
        let e = err(RunConfig {
            path: Some("/v1/x".into()),
            ..RunConfig::default()
        });
        assert!(e.contains("--base-url"), "{e}");
        let e = err(RunConfig {
            body: Some(serde_json::json!("{input: 1}")),
            ..RunConfig::default()
        });
        assert!(e.starts_with("--body: not valid JSON"), "{e}");
        let quoted = plan(RunConfig {
            body: Some(serde_json::json!("\"{{text}}\"")),
            ..RunConfig::default()
        })
        .unwrap();
        assert_eq!(quoted.template.body, Some(serde_json::json!("{{text}}")));
    }
}
