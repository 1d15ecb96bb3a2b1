//! Settings of `tem run-batch`, merged from four places, strongest first: command-line flags,
//! `TEM_*` environment variables, a `tem.toml` file, and built-in defaults. Every setting has
//! the same name everywhere: `--max-attempts`, `TEM_MAX_ATTEMPTS`, `max_attempts = 5`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::usage::UsageError;

/// The config file read when `--config` is not given (if it exists).
pub const DEFAULT_CONFIG_FILE: &str = "tem.toml";

/// The database used when none is given.
pub const DEFAULT_DB: &str = "tem.db";

/// Every run-batch setting; `None` means "not set here".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    // The request.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub base_url: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub method: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,

    // Where it runs.
    #[serde(
        default,
        deserialize_with = "lenient_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub db: Option<PathBuf>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub batch: Option<String>,

    // How hard it calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub rate: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub budget: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub cost_field: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_cost_field: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub connect_timeout: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub lease: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub outage_tolerance: Option<String>,

    // Retries and the circuit breaker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub backoff: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub backoff_max: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker_failures: Option<u32>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub breaker_cool_down: Option<String>,

    // When to give up on the whole batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_sample: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_failed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_consecutive_failures: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rate_limited: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_overloaded: Option<u64>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_runtime: Option<String>,

    // Results and output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_result_bytes: Option<usize>,
    #[serde(
        default,
        deserialize_with = "lenient_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub output: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiet: Option<bool>,
}

/// A text setting, also when the environment or the file wrote it as a number or a boolean
/// (`TEM_BATCH=2024`, `TEM_TIMEOUT=0`): figment reads environment values as typed values.
fn lenient<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        String(String),
        Signed(i64),
        Unsigned(u64),
        Float(f64),
        Bool(bool),
    }
    Ok(Option::<Text>::deserialize(deserializer)?.map(|text| match text {
        Text::String(s) => s,
        Text::Signed(n) => n.to_string(),
        Text::Unsigned(n) => n.to_string(),
        Text::Float(f) => f.to_string(),
        Text::Bool(b) => b.to_string(),
    }))
}

/// [`lenient`] for paths.
fn lenient_path<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(lenient(deserializer)?.map(PathBuf::from))
}

/// Every key, for the environment filter (so `TEM_LOG` and the like are not mistaken for one).
const KEYS: &[&str] = &[
    "base_url",
    "method",
    "path",
    "headers",
    "body",
    "db",
    "batch",
    "concurrency",
    "adaptive",
    "rate",
    "budget",
    "cost_field",
    "response_cost_field",
    "timeout",
    "connect_timeout",
    "lease",
    "outage_tolerance",
    "max_attempts",
    "backoff",
    "backoff_max",
    "breaker_failures",
    "breaker_cool_down",
    "max_error_rate",
    "min_sample",
    "max_failed",
    "max_consecutive_failures",
    "max_rate_limited",
    "max_overloaded",
    "max_runtime",
    "max_result_bytes",
    "output",
    "json",
    "quiet",
];

/// Merged settings, and where each came from (for error messages).
#[derive(Debug)]
pub struct Loaded {
    pub config: RunConfig,
    flags: RunConfig,
    file: Option<PathBuf>,
}

/// Merges `flags` over the environment over the config file (`explicit_file`, else
/// `./tem.toml` when present).
pub fn load(flags: RunConfig, explicit_file: Option<&Path>) -> Result<Loaded, UsageError> {
    let file = match explicit_file {
        Some(path) if !path.exists() => {
            return Err(UsageError(format!(
                "config file {} does not exist (given by --config or TEM_CONFIG)",
                path.display()
            )));
        }
        Some(path) => Some(path.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
    };
    let mut figment = Figment::new();
    if let Some(file) = &file {
        figment = figment.merge(Toml::file_exact(file));
    }
    let config: RunConfig = figment
        .merge(Env::prefixed("TEM_").only(KEYS))
        .merge(Serialized::defaults(&flags))
        .extract()
        .map_err(|e| UsageError(describe(e, file.as_deref())))?;
    Ok(Loaded { config, flags, file })
}

/// Whether `db` names a database shared by many processes and machines (Postgres).
pub fn is_shared_db(db: &Path) -> bool {
    let text = db.to_string_lossy();
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

/// `db` as messages show it: a URL without its password.
pub fn shown_db(db: &Path) -> String {
    tem_core::redact_url(&db.to_string_lossy())
}

/// The database path for commands that only read or steer: `--db`, `TEM_DB`, `db` in the
/// config file, else `tem.db`.
pub fn db_path(flag: Option<PathBuf>) -> Result<PathBuf, UsageError> {
    let flags = RunConfig {
        db: flag,
        ..RunConfig::default()
    };
    let config_file = std::env::var_os("TEM_CONFIG").map(PathBuf::from);
    let loaded = load(flags, config_file.as_deref())?;
    Ok(loaded.config.db.unwrap_or_else(|| PathBuf::from(DEFAULT_DB)))
}

impl Loaded {
    /// Exactly `config`, without reading the environment or a file (for `tem demo`, whose
    /// settings are its own).
    pub fn only(config: RunConfig) -> Loaded {
        Loaded {
            flags: config.clone(),
            config,
            file: None,
        }
    }

    /// Where `key` was set: the flag, the variable or the file (for error messages).
    pub fn origin(&self, key: &str) -> String {
        let flag_set = serde_json::to_value(&self.flags)
            .ok()
            .and_then(|v| v.get(key).cloned())
            .is_some();
        if flag_set {
            flag_name(key)
        } else if std::env::var_os(format!("TEM_{}", key.to_ascii_uppercase())).is_some() {
            format!("TEM_{}", key.to_ascii_uppercase())
        } else if let Some(file) = &self.file {
            format!("`{key}` in {}", file.display())
        } else {
            flag_name(key)
        }
    }

    /// A usage error about `key`, naming where it was set.
    pub fn bad(&self, key: &str, message: impl std::fmt::Display) -> UsageError {
        UsageError(format!("{}: {message}", self.origin(key)))
    }
}

/// The flag that sets `key`.
fn flag_name(key: &str) -> String {
    match key {
        "headers" => "--header".to_owned(),
        "adaptive" => "--fixed-concurrency".to_owned(),
        key => format!("--{}", key.replace('_', "-")),
    }
}

/// What is wrong with one setting, in words: the nearest key for a misspelt one, the type a
/// value should have.
fn explain(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::UnknownField(name, _) => {
            let guess = crate::suggest::nearest(name, KEYS.iter().copied())
                .map(|key| format!("did you mean `{key}`? "))
                .unwrap_or_default();
            format!(
                "`{name}` is not a setting; {guess}`tem run-batch --help` lists them all (a flag                  --some-name is the key some_name)"
            )
        }
        Kind::InvalidType(actual, expected) => {
            format!("expected {}, found {actual}", in_words(expected))
        }
        other => other.to_string(),
    }
}

/// A Rust type name as a person reads it.
fn in_words(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a boolean" | "bool" => "true or false".to_owned(),
        other => other.to_owned(),
    }
}

/// A figment error, with the key and the place that set it.
fn describe(error: figment::Error, file: Option<&Path>) -> String {
    let mut out = String::new();
    for e in error {
        let key = e.path.join(".");
        let place = match &e.metadata {
            Some(meta) if meta.name.contains("environment") => format!("TEM_{}", key.to_ascii_uppercase()),
            Some(meta) if meta.name.contains("TOML") => match file {
                Some(file) => format!("`{key}` in {}", file.display()),
                None => format!("`{key}` in the config file"),
            },
            _ if key.is_empty() => "config".to_owned(),
            _ => flag_name(&key),
        };
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("{place}: {}", explain(&e.kind)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_headers_merge() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tem.toml");
        std::fs::write(
            &file,
            "concurrency = 4\nrate = \"10/s\"\n[headers]\nx-a = \"1\"\nx-b = \"file\"\n",
        )
        .unwrap();
        let flags = RunConfig {
            concurrency: Some(16),
            headers: [("x-b".to_owned(), "flag".to_owned())].into(),
            ..RunConfig::default()
        };
        let loaded = load(flags, Some(&file)).unwrap();
        assert_eq!(loaded.config.concurrency, Some(16));
        assert_eq!(loaded.config.rate.as_deref(), Some("10/s"));
        assert_eq!(loaded.config.headers["x-a"], "1");
        assert_eq!(loaded.config.headers["x-b"], "flag");
        assert_eq!(loaded.origin("concurrency"), "--concurrency");
        assert_eq!(loaded.origin("rate"), format!("`rate` in {}", file.display()));
    }

    #[test]
    fn numbers_in_text_settings_are_text() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tem.toml");
        std::fs::write(&file, "batch = 2024\ntimeout = 0\ndb = 7\nbody = '{\"a\": 1}'\n").unwrap();
        let config = load(RunConfig::default(), Some(&file)).unwrap().config;
        assert_eq!(config.batch.as_deref(), Some("2024"));
        assert_eq!(config.timeout.as_deref(), Some("0"));
        assert_eq!(config.db, Some(PathBuf::from("7")));
        assert_eq!(
            config.body,
            Some(serde_json::json!("{\"a\": 1}")),
            "parsed as JSON by the plan"
        );
    }

    #[test]
    fn file_errors_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tem.toml");
        std::fs::write(&file, "concurency = 4\n").unwrap();
        let error = load(RunConfig::default(), Some(&file)).unwrap_err().0;
        assert!(error.contains("`concurency` is not a setting"), "{error}");
        assert!(error.contains("did you mean `concurrency`?"), "{error}");
        assert!(error.contains("tem run-batch --help"), "{error}");
        assert!(!error.contains("max_overloaded"), "no list of every key: {error}");
        std::fs::write(&file, "concurrency = \"many\"\n").unwrap();
        let error = load(RunConfig::default(), Some(&file)).unwrap_err().0;
        assert!(error.contains("`concurrency` in"), "{error}");
        assert!(error.contains("expected a whole number"), "{error}");
        let missing = load(RunConfig::default(), Some(&dir.path().join("nope.toml")))
            .unwrap_err()
            .0;
        assert!(missing.contains("does not exist"), "{missing}");
    }
}
