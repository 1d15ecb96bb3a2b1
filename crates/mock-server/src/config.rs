//! A simulated service's configuration, as JSON (or TOML turned into JSON), in the original's
//! camelCase shape plus the extensions real providers need. Validation is strict and names the
//! field: `rateLimit.windowMs: must be an integer of at least 1`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::key_case::{self, KeyCase};
use crate::provider::{Provider, ProviderConfig};

/// How requests are counted against `rateLimit`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// The original's: capacity `limit`, starts full, refills `limit` per `windowMs` continuously.
    #[default]
    TokenBucket,
    /// At most `limit` per window aligned on multiples of `windowMs`.
    FixedWindow,
    /// At most `limit` in any `windowMs` ending now (an exact log).
    SlidingWindow,
}

/// Requests per window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    pub limit: u64,
    pub window_ms: u64,
    pub algorithm: Algorithm,
}

/// Random failures: `rate` of requests answer `statusCode` with `errorMessage`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorSimulation {
    pub rate: f64,
    pub status_code: u16,
    pub error_message: String,
}

/// A weighted budget (e.g. tokens per minute): each request costs what its header or JSON body
/// field says (1 if absent), and at most `limit` may be spent in any `windowMs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    pub limit: u64,
    pub window_ms: u64,
    /// Request header holding the cost (e.g. `x-cost`).
    pub cost_header: Option<String>,
    /// Top-level field of the JSON request body holding the cost (e.g. `tokens`).
    pub cost_field: Option<String>,
}

/// Which rate-limit headers the service sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Headers {
    /// `Retry-After` on 429 (seconds until a request would be accepted).
    pub retry_after: bool,
    /// `X-RateLimit-Limit/Remaining/Reset` (and `RateLimit-Policy` for whole-second windows) on 429.
    pub rate_limit_on_429: bool,
    /// `X-RateLimit-Limit/Remaining/Reset` (and `RateLimit-Policy`) on 2xx.
    pub rate_limit_on_success: bool,
}

impl Default for Headers {
    fn default() -> Self {
        Headers {
            retry_after: true,
            rate_limit_on_429: true,
            rate_limit_on_success: true,
        }
    }
}

/// One simulated service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceConfig {
    /// Requests in flight above this answer 503.
    pub max_concurrency: u64,
    pub rate_limit: RateLimit,
    /// Latency, uniform in `[min, max]` milliseconds.
    pub delay_ms: [u64; 2],
    pub error_simulation: Option<ErrorSimulation>,
    pub budget: Option<Budget>,
    pub headers: Headers,
    /// Answer 200 with the request itself (method, path, query, headers, body) instead of the
    /// original's body, so a client's templates can be checked.
    pub echo: bool,
}

/// A generic service's keys.
pub(crate) const SERVICE_KEYS: &[&str] = &[
    "maxConcurrency",
    "rateLimit",
    "delayMs",
    "errorSimulation",
    "budget",
    "headers",
    "echo",
];
/// `rateLimit`'s keys.
pub(crate) const RATE_LIMIT_KEYS: &[&str] = &["limit", "windowMs", "algorithm"];
/// `errorSimulation`'s keys.
pub(crate) const ERROR_SIMULATION_KEYS: &[&str] = &["rate", "statusCode", "errorMessage"];
/// `budget`'s keys.
pub(crate) const BUDGET_KEYS: &[&str] = &["limit", "windowMs", "costHeader", "costField"];
/// `headers`' keys.
pub(crate) const HEADERS_KEYS: &[&str] = &["retryAfter", "rateLimitOn429", "rateLimitOnSuccess"];

/// The original's default latency when `delayMs` is omitted.
pub const DEFAULT_DELAY_MS: [u64; 2] = [10, 200];

/// A bad field in a service configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The field's path, e.g. `rateLimit.windowMs`.
    pub field: String,
    pub message: String,
}

pub(crate) fn bad(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_owned(),
        message: message.into(),
    }
}

impl ServiceConfig {
    /// A service with no latency, no errors and no budget (handy for tests and benchmarks).
    pub fn new(max_concurrency: u64, limit: u64, window_ms: u64) -> Self {
        ServiceConfig {
            max_concurrency,
            rate_limit: RateLimit {
                limit,
                window_ms,
                algorithm: Algorithm::TokenBucket,
            },
            delay_ms: [0, 0],
            error_simulation: None,
            budget: None,
            headers: Headers::default(),
            echo: false,
        }
    }

    /// Parses and validates a configuration; unknown fields are refused too, so a typo does not
    /// silently fall back to a default.
    pub fn from_json(value: &Value) -> Result<Self, ConfigError> {
        let object = value
            .as_object()
            .ok_or_else(|| bad("(body)", "must be a JSON object"))?;
        known(object, "", SERVICE_KEYS)?;
        let max_concurrency = integer(object.get("maxConcurrency"), "maxConcurrency", 1)?;
        let rate = object
            .get("rateLimit")
            .ok_or_else(|| bad("rateLimit", "is required: {\"limit\": N, \"windowMs\": MS}"))?;
        let rate = rate
            .as_object()
            .ok_or_else(|| bad("rateLimit", "must be an object {\"limit\": N, \"windowMs\": MS}"))?;
        known(rate, "rateLimit.", RATE_LIMIT_KEYS)?;
        let rate_limit = RateLimit {
            limit: integer(rate.get("limit"), "rateLimit.limit", 1)?,
            window_ms: integer(rate.get("windowMs"), "rateLimit.windowMs", 1)?,
            algorithm: match rate.get("algorithm") {
                None | Some(Value::Null) => Algorithm::TokenBucket,
                Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
                    bad(
                        "rateLimit.algorithm",
                        "must be one of token_bucket, fixed_window, sliding_window",
                    )
                })?,
            },
        };
        let delay_ms = match object.get("delayMs") {
            None | Some(Value::Null) => DEFAULT_DELAY_MS,
            Some(Value::Array(items)) if items.len() == 2 => {
                let min = integer(Some(&items[0]), "delayMs[0]", 0)?;
                let max = integer(Some(&items[1]), "delayMs[1]", 0)?;
                if max < min {
                    return Err(bad("delayMs", format!("max {max} is below min {min}")));
                }
                [min, max]
            }
            Some(_) => return Err(bad("delayMs", "must be [min, max] in milliseconds")),
        };
        let error_simulation = match object.get("errorSimulation") {
            None | Some(Value::Null) => None,
            Some(Value::Object(e)) => {
                known(e, "errorSimulation.", ERROR_SIMULATION_KEYS)?;
                let rate = e
                    .get("rate")
                    .and_then(Value::as_f64)
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| bad("errorSimulation.rate", "must be a number from 0 to 1"))?;
                let status_code = match e.get("statusCode") {
                    None | Some(Value::Null) => 500,
                    Some(v) => u16::try_from(integer(Some(v), "errorSimulation.statusCode", 100)?)
                        .ok()
                        .filter(|s| (100..=599).contains(s))
                        .ok_or_else(|| {
                            bad("errorSimulation.statusCode", "must be an HTTP status, 100 to 599")
                        })?,
                };
                let error_message = match e.get("errorMessage") {
                    None | Some(Value::Null) => "internal_server_error".to_owned(),
                    Some(Value::String(m)) => m.clone(),
                    Some(_) => return Err(bad("errorSimulation.errorMessage", "must be a string")),
                };
                Some(ErrorSimulation {
                    rate,
                    status_code,
                    error_message,
                })
            }
            Some(_) => return Err(bad("errorSimulation", "must be an object {\"rate\": 0..1, …}")),
        };
        let budget = match object.get("budget") {
            None | Some(Value::Null) => None,
            Some(Value::Object(b)) => {
                known(b, "budget.", BUDGET_KEYS)?;
                let text = |key: &str| -> Result<Option<String>, ConfigError> {
                    match b.get(key) {
                        None | Some(Value::Null) => Ok(None),
                        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                        Some(_) => Err(bad(&format!("budget.{key}"), "must be a non-empty string")),
                    }
                };
                Some(Budget {
                    limit: integer(b.get("limit"), "budget.limit", 1)?,
                    window_ms: integer(b.get("windowMs"), "budget.windowMs", 1)?,
                    cost_header: text("costHeader")?,
                    cost_field: text("costField")?,
                })
            }
            Some(_) => {
                return Err(bad(
                    "budget",
                    "must be an object {\"limit\": N, \"windowMs\": MS, …}",
                ));
            }
        };
        let headers = match object.get("headers") {
            None | Some(Value::Null) => Headers::default(),
            Some(Value::Object(h)) => {
                known(h, "headers.", HEADERS_KEYS)?;
                let flag = |key: &str| -> Result<bool, ConfigError> {
                    match h.get(key) {
                        None | Some(Value::Null) => Ok(true),
                        Some(Value::Bool(b)) => Ok(*b),
                        Some(_) => Err(bad(&format!("headers.{key}"), "must be true or false")),
                    }
                };
                Headers {
                    retry_after: flag("retryAfter")?,
                    rate_limit_on_429: flag("rateLimitOn429")?,
                    rate_limit_on_success: flag("rateLimitOnSuccess")?,
                }
            }
            Some(_) => return Err(bad("headers", "must be an object of booleans")),
        };
        let echo = match object.get("echo") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("echo", "must be true or false")),
        };
        Ok(ServiceConfig {
            max_concurrency,
            rate_limit,
            delay_ms,
            error_simulation,
            budget,
            headers,
            echo,
        })
    }

    /// Checks a configuration built in code as strictly as one read from JSON.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Self::from_json(&self.to_json()).map(|_| ())
    }

    /// The configuration as JSON, in the shape [`ServiceConfig::from_json`] reads.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

pub(crate) fn known(
    object: &serde_json::Map<String, Value>,
    prefix: &str,
    fields: &[&str],
) -> Result<(), ConfigError> {
    match object.keys().find(|k| !fields.contains(&k.as_str())) {
        Some(unknown) => Err(bad(
            &format!("{prefix}{unknown}"),
            format!("is not a known field (expected one of: {})", fields.join(", ")),
        )),
        None => Ok(()),
    }
}

pub(crate) fn integer(value: Option<&Value>, field: &str, min: u64) -> Result<u64, ConfigError> {
    let message = || format!("must be an integer of at least {min}");
    let value = value.ok_or_else(|| bad(field, format!("is required and {}", message())))?;
    value
        .as_u64()
        .or_else(|| {
            value
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        })
        .filter(|n| *n >= min)
        .ok_or_else(|| bad(field, message()))
}

/// What a service is: the generic simulator (`kind` absent or `"generic"`), or an imitation of
/// an LLM provider (`"openai"`, `"anthropic"`).
#[derive(Clone, Debug, PartialEq)]
pub enum Definition {
    Generic(ServiceConfig),
    Provider(ProviderConfig),
}

/// The kinds a service may have.
const KINDS: &str = "generic, openai, anthropic";

impl Definition {
    /// Parses and validates a service of any kind, its keys in either case (`maxConcurrency` or
    /// `max_concurrency`); errors name keys in the case the service was written in, `prefer`
    /// when it used neither (or both).
    pub fn from_json_any_case(value: &Value, prefer: KeyCase) -> Result<Self, ConfigError> {
        let (camel, seen) = key_case::to_camel(value)?;
        Definition::from_json(&camel).map_err(|e| match seen.case(prefer) {
            KeyCase::Snake => key_case::snake_error(e),
            KeyCase::Camel => e,
        })
    }

    /// Parses and validates a service of any kind (camelCase keys).
    pub fn from_json(value: &Value) -> Result<Self, ConfigError> {
        let object = value
            .as_object()
            .ok_or_else(|| bad("(body)", "must be a JSON object"))?;
        match object.get("kind") {
            None | Some(Value::Null) => ServiceConfig::from_json(value).map(Definition::Generic),
            Some(Value::String(kind)) if kind == "generic" => {
                let mut object = object.clone();
                object.remove("kind");
                ServiceConfig::from_json(&Value::Object(object)).map(Definition::Generic)
            }
            Some(Value::String(kind)) if kind == "openai" => {
                ProviderConfig::from_json(Provider::Openai, object).map(Definition::Provider)
            }
            Some(Value::String(kind)) if kind == "anthropic" => {
                ProviderConfig::from_json(Provider::Anthropic, object).map(Definition::Provider)
            }
            Some(_) => Err(bad("kind", format!("must be one of {KINDS}"))),
        }
    }

    /// The definition as JSON, in the shape [`Definition::from_json`] reads.
    pub fn to_json(&self) -> Value {
        match self {
            Definition::Generic(config) => config.to_json(),
            Definition::Provider(config) => config.to_json(),
        }
    }

    /// Checks a definition built in code as strictly as one read from JSON.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Definition::Generic(config) => config.validate(),
            Definition::Provider(config) => config.validate(),
        }
    }

    /// `generic`, `openai` or `anthropic`.
    pub fn kind(&self) -> &'static str {
        match self {
            Definition::Generic(_) => "generic",
            Definition::Provider(config) => config.provider.kind(),
        }
    }
}

impl From<ServiceConfig> for Definition {
    fn from(config: ServiceConfig) -> Self {
        Definition::Generic(config)
    }
}

impl From<ProviderConfig> for Definition {
    fn from(config: ProviderConfig) -> Self {
        Definition::Provider(config)
    }
}

impl Serialize for Definition {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_of(value: Value) -> String {
        ServiceConfig::from_json(&value).unwrap_err().field
    }

    #[test]
    fn the_original_shape_parses_with_its_defaults() {
        let c = ServiceConfig::from_json(
            &json!({"maxConcurrency": 5, "rateLimit": {"limit": 10, "windowMs": 1000}}),
        )
        .unwrap();
        // The original's default (its router.ts), written out.
        assert_eq!(c.delay_ms, [10, 200]);
        assert_eq!(c.rate_limit.algorithm, Algorithm::TokenBucket);
        assert_eq!(c.error_simulation, None);
        assert_eq!(ServiceConfig::from_json(&c.to_json()).unwrap(), c, "round trip");
    }

    #[test]
    fn every_bad_field_is_named() {
        let ok = json!({"maxConcurrency": 5, "rateLimit": {"limit": 10, "windowMs": 1000}});
        let with = |path: &[&str], v: Value| {
            let mut x = ok.clone();
            let mut at = &mut x;
            for p in &path[..path.len() - 1] {
                at = at.get_mut(*p).unwrap();
            }
            at[path[path.len() - 1]] = v;
            x
        };
        assert_eq!(field_of(json!([])), "(body)");
        assert_eq!(field_of(with(&["maxConcurrency"], json!(0))), "maxConcurrency");
        assert_eq!(field_of(with(&["maxConcurrency"], json!(2.5))), "maxConcurrency");
        assert_eq!(field_of(with(&["maxConcurrency"], json!("5"))), "maxConcurrency");
        assert_eq!(
            field_of(with(&["rateLimit", "limit"], json!(0))),
            "rateLimit.limit"
        );
        assert_eq!(
            field_of(with(&["rateLimit", "windowMs"], json!(-1))),
            "rateLimit.windowMs"
        );
        assert_eq!(
            field_of(with(&["rateLimit", "algorithm"], json!("leaky"))),
            "rateLimit.algorithm"
        );
        assert_eq!(field_of(with(&["delayMs"], json!([5]))), "delayMs");
        assert_eq!(field_of(with(&["delayMs"], json!([50, 10]))), "delayMs");
        assert_eq!(field_of(with(&["delayMs"], json!(["a", 10]))), "delayMs[0]");
        assert_eq!(
            field_of(with(&["errorSimulation"], json!({"rate": 2}))),
            "errorSimulation.rate"
        );
        assert_eq!(
            field_of(with(
                &["errorSimulation"],
                json!({"rate": 0.1, "statusCode": 700})
            )),
            "errorSimulation.statusCode"
        );
        assert_eq!(
            field_of(with(&["budget"], json!({"limit": 0, "windowMs": 1}))),
            "budget.limit"
        );
        assert_eq!(
            field_of(with(&["headers"], json!({"retryAfter": "yes"}))),
            "headers.retryAfter"
        );
        assert_eq!(field_of(with(&["maxConcurency"], json!(3))), "maxConcurency");
        let missing = ServiceConfig::from_json(&json!({"maxConcurrency": 1})).unwrap_err();
        assert_eq!(missing.field, "rateLimit");
    }

    #[test]
    fn extensions_parse() {
        let c = ServiceConfig::from_json(&json!({
            "maxConcurrency": 2,
            "rateLimit": {"limit": 60, "windowMs": 60000, "algorithm": "sliding_window"},
            "delayMs": [0, 0],
            "errorSimulation": {"rate": 0.1, "statusCode": 503, "errorMessage": "busy"},
            "budget": {"limit": 1000, "windowMs": 60000, "costField": "tokens"},
            "headers": {"rateLimitOnSuccess": false}
        }))
        .unwrap();
        assert_eq!(c.rate_limit.algorithm, Algorithm::SlidingWindow);
        assert_eq!(c.error_simulation.unwrap().status_code, 503);
        assert_eq!(c.budget.unwrap().cost_field.as_deref(), Some("tokens"));
        assert!(c.headers.retry_after && !c.headers.rate_limit_on_success);
    }
}
