//! An LLM-shaped service's configuration (`"kind": "openai"` or `"anthropic"`), in the same
//! camelCase JSON as the generic simulator's and validated as strictly, naming the field:
//!
//! ```json
//! {"kind": "openai", "maxConcurrency": 8,
//!  "limits": {"rpm": 3000, "tpm": 200000}, "windowMs": 60000,
//!  "models": {"gpt-4o-mini": {"rpm": 500, "tpm": 30000}},
//!  "latency": {"firstTokenMs": [100, 300], "perTokenMs": [5, 15]},
//!  "apiKey": "sk-test", "rateLimitHeaders": true, "seed": 7, "defaultMaxTokens": 256}
//! ```

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::config::{ConfigError, bad, integer, known};

/// Which provider a service imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Openai,
    Anthropic,
}

impl Provider {
    /// The `kind` it is configured by.
    pub fn kind(self) -> &'static str {
        match self {
            Provider::Openai => "openai",
            Provider::Anthropic => "anthropic",
        }
    }

    /// The limits this provider has: OpenAI counts tokens together, Anthropic input and output apart.
    fn limit_fields(self) -> &'static [&'static str] {
        match self {
            Provider::Openai => &["rpm", "tpm"],
            Provider::Anthropic => &["rpm", "itpm", "otpm"],
        }
    }
}

/// Per-window limits; an absent one does not limit. "Per minute" unless `windowMs` says otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Requests.
    pub rpm: Option<u64>,
    /// OpenAI: tokens, a request counting its prompt plus its `max_tokens`.
    pub tpm: Option<u64>,
    /// Anthropic: input tokens.
    pub itpm: Option<u64>,
    /// Anthropic: output tokens (a request must fit its `max_tokens`; its answer is counted).
    pub otpm: Option<u64>,
}

/// Time to first token and time per further output token, each uniform in `[min, max]` ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    pub first_token_ms: [u64; 2],
    pub per_token_ms: [u64; 2],
}

impl Latency {
    /// No latency at all (tests and benchmarks).
    pub const NONE: Latency = Latency {
        first_token_ms: [0, 0],
        per_token_ms: [0, 0],
    };

    /// The default of a service configured by JSON: a fast model's pace.
    pub const DEFAULT: Latency = Latency {
        first_token_ms: [100, 300],
        per_token_ms: [5, 15],
    };
}

/// An LLM-shaped service.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderConfig {
    pub provider: Provider,
    /// Requests in flight above this are refused (OpenAI 503, Anthropic 529 `overloaded_error`).
    pub max_concurrency: Option<u64>,
    /// Service-wide limits.
    pub limits: Limits,
    /// Each model's own limits; when any are listed, other models answer 404.
    pub models: BTreeMap<String, Limits>,
    /// The length of every limit's window (a minute, as the providers count).
    pub window_ms: u64,
    pub latency: Latency,
    /// When set, requests must carry it (`Authorization: Bearer` / `x-api-key`).
    pub api_key: Option<String>,
    /// Send the provider's rate-limit headers (some real answers lack them).
    pub rate_limit_headers: bool,
    /// Answers are drawn from this seed and the request, so the same request gets the same answer.
    pub seed: u64,
    /// The `max_tokens` of an OpenAI request that names none (what it reserves and may answer).
    pub default_max_tokens: u64,
}

/// An LLM-shaped service's keys.
pub(crate) const PROVIDER_KEYS: &[&str] = &[
    "kind",
    "maxConcurrency",
    "limits",
    "models",
    "windowMs",
    "latency",
    "apiKey",
    "rateLimitHeaders",
    "seed",
    "defaultMaxTokens",
];
/// `latency`'s keys.
pub(crate) const LATENCY_KEYS: &[&str] = &["firstTokenMs", "perTokenMs"];

/// The providers' window: a minute.
pub const MINUTE_MS: u64 = 60_000;

impl ProviderConfig {
    /// A service with no limits, no latency and no key.
    pub fn new(provider: Provider) -> Self {
        ProviderConfig {
            provider,
            max_concurrency: None,
            limits: Limits::default(),
            models: BTreeMap::new(),
            window_ms: MINUTE_MS,
            latency: Latency::NONE,
            api_key: None,
            rate_limit_headers: true,
            seed: 0,
            default_max_tokens: 256,
        }
    }

    /// Parses and validates; unknown fields, and limits the provider does not have, are refused.
    pub fn from_json(provider: Provider, object: &Map<String, Value>) -> Result<Self, ConfigError> {
        known(object, "", PROVIDER_KEYS)?;
        let mut config = ProviderConfig::new(provider);
        config.latency = Latency::DEFAULT;
        let present = |key: &str| object.get(key).filter(|v| !v.is_null());
        if let Some(v) = present("maxConcurrency") {
            config.max_concurrency = Some(integer(Some(v), "maxConcurrency", 1)?);
        }
        if let Some(v) = present("limits") {
            config.limits = limits(provider, v, "limits.")?;
        }
        if let Some(v) = present("models") {
            let models = v
                .as_object()
                .ok_or_else(|| bad("models", "must be an object of MODEL = {\"rpm\": N, …}"))?;
            for (name, v) in models {
                if name.is_empty() {
                    return Err(bad("models", "a model name must not be empty"));
                }
                config
                    .models
                    .insert(name.clone(), limits(provider, v, &format!("models.{name}."))?);
            }
        }
        if let Some(v) = present("windowMs") {
            config.window_ms = integer(Some(v), "windowMs", 1)?;
        }
        if let Some(v) = present("latency") {
            let l = v.as_object().ok_or_else(|| {
                bad(
                    "latency",
                    "must be an object {\"firstTokenMs\": [min, max], \"perTokenMs\": [min, max]}",
                )
            })?;
            known(l, "latency.", LATENCY_KEYS)?;
            if let Some(v) = l.get("firstTokenMs").filter(|v| !v.is_null()) {
                config.latency.first_token_ms = range(v, "latency.firstTokenMs")?;
            }
            if let Some(v) = l.get("perTokenMs").filter(|v| !v.is_null()) {
                config.latency.per_token_ms = range(v, "latency.perTokenMs")?;
            }
        }
        if let Some(v) = present("apiKey") {
            match v {
                Value::String(key) if !key.is_empty() => config.api_key = Some(key.clone()),
                _ => return Err(bad("apiKey", "must be a non-empty string")),
            }
        }
        if let Some(v) = present("rateLimitHeaders") {
            config.rate_limit_headers = v
                .as_bool()
                .ok_or_else(|| bad("rateLimitHeaders", "must be true or false"))?;
        }
        if let Some(v) = present("seed") {
            config.seed = integer(Some(v), "seed", 0)?;
        }
        if let Some(v) = present("defaultMaxTokens") {
            config.default_max_tokens = integer(Some(v), "defaultMaxTokens", 1)?;
        }
        Ok(config)
    }

    /// The configuration as JSON, in the shape [`ProviderConfig::from_json`] reads.
    pub fn to_json(&self) -> Value {
        let limits_json = |l: &Limits| {
            let mut m = Map::new();
            for (key, value) in [("rpm", l.rpm), ("tpm", l.tpm), ("itpm", l.itpm), ("otpm", l.otpm)] {
                if let Some(value) = value {
                    m.insert(key.to_owned(), json!(value));
                }
            }
            Value::Object(m)
        };
        json!({
            "kind": self.provider.kind(),
            "maxConcurrency": self.max_concurrency,
            "limits": limits_json(&self.limits),
            "models": self.models.iter().map(|(n, l)| (n.clone(), limits_json(l))).collect::<Map<_, _>>(),
            "windowMs": self.window_ms,
            "latency": self.latency,
            "apiKey": self.api_key,
            "rateLimitHeaders": self.rate_limit_headers,
            "seed": self.seed,
            "defaultMaxTokens": self.default_max_tokens,
        })
    }

    /// Checks a configuration built in code as strictly as one read from JSON.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.to_json() {
            Value::Object(object) => Self::from_json(self.provider, &object).map(|_| ()),
            _ => Err(bad("(body)", "must be a JSON object")),
        }
    }

    /// The limits that apply to `model`: its own where configured, else none of its own.
    pub fn model_limits(&self, model: &str) -> Option<&Limits> {
        self.models.get(model)
    }
}

fn limits(provider: Provider, value: &Value, prefix: &str) -> Result<Limits, ConfigError> {
    let field = prefix.trim_end_matches('.');
    let object = value.as_object().ok_or_else(|| {
        bad(
            field,
            format!("must be an object of {}", provider.limit_fields().join(", ")),
        )
    })?;
    if let Some(unknown) = object
        .keys()
        .find(|k| !provider.limit_fields().contains(&k.as_str()))
    {
        let hint = match (provider, unknown.as_str()) {
            (Provider::Openai, "itpm" | "otpm") => " (OpenAI counts input and output together: use tpm)",
            (Provider::Anthropic, "tpm") => " (Anthropic counts input and output apart: use itpm and otpm)",
            _ => "",
        };
        return Err(bad(
            &format!("{prefix}{unknown}"),
            format!(
                "is not an {} limit{hint}; expected one of: {}",
                provider.kind(),
                provider.limit_fields().join(", ")
            ),
        ));
    }
    let get = |key: &str| -> Result<Option<u64>, ConfigError> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => integer(Some(v), &format!("{prefix}{key}"), 1).map(Some),
        }
    };
    Ok(Limits {
        rpm: get("rpm")?,
        tpm: get("tpm")?,
        itpm: get("itpm")?,
        otpm: get("otpm")?,
    })
}

fn range(value: &Value, field: &str) -> Result<[u64; 2], ConfigError> {
    match value {
        Value::Array(items) if items.len() == 2 => {
            let min = integer(Some(&items[0]), &format!("{field}[0]"), 0)?;
            let max = integer(Some(&items[1]), &format!("{field}[1]"), 0)?;
            if max < min {
                return Err(bad(field, format!("max {max} is below min {min}")));
            }
            Ok([min, max])
        }
        _ => Err(bad(field, "must be [min, max] in milliseconds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(provider: Provider, value: Value) -> Result<ProviderConfig, ConfigError> {
        ProviderConfig::from_json(provider, value.as_object().unwrap())
    }

    #[test]
    fn a_full_configuration_round_trips() {
        let c = parse(
            Provider::Openai,
            json!({"kind": "openai", "maxConcurrency": 8, "limits": {"rpm": 3000, "tpm": 200000},
                   "models": {"gpt-4o-mini": {"tpm": 30000}}, "latency": {"perTokenMs": [1, 2]},
                   "apiKey": "sk-test", "rateLimitHeaders": false, "seed": 7}),
        )
        .unwrap();
        assert_eq!(c.limits.tpm, Some(200_000));
        assert_eq!(c.models["gpt-4o-mini"].tpm, Some(30_000));
        assert_eq!(c.latency.first_token_ms, Latency::DEFAULT.first_token_ms);
        assert_eq!(parse(Provider::Openai, c.to_json()).unwrap(), c);
    }

    #[test]
    fn bad_fields_are_named_with_the_fix() {
        let field = |p, v| parse(p, v).unwrap_err().field;
        assert_eq!(
            field(Provider::Openai, json!({"limits": {"rpm": 0}})),
            "limits.rpm"
        );
        let e = parse(Provider::Openai, json!({"limits": {"itpm": 5}})).unwrap_err();
        assert_eq!(e.field, "limits.itpm");
        assert!(e.message.contains("use tpm"), "{e}");
        assert_eq!(
            field(Provider::Anthropic, json!({"models": {"claude": {"tpm": 5}}})),
            "models.claude.tpm"
        );
        assert_eq!(
            field(Provider::Openai, json!({"latency": {"firstTokenMs": [5, 1]}})),
            "latency.firstTokenMs"
        );
        assert_eq!(field(Provider::Openai, json!({"apiKey": 3})), "apiKey");
        assert_eq!(field(Provider::Openai, json!({"rateLimit": {}})), "rateLimit");
    }
}
