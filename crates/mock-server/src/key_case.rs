//! A service's keys in either case: the HTTP API's camelCase (`maxConcurrency`, the original's)
//! or the snake_case of `tem.toml` (`max_concurrency`). Parsing happens in camelCase; an error is
//! then rewritten in the case the user wrote, so it names the key as it stands in their file.

use serde_json::{Map, Value};

use crate::config::{
    BUDGET_KEYS, ConfigError, ERROR_SIMULATION_KEYS, HEADERS_KEYS, RATE_LIMIT_KEYS, SERVICE_KEYS, bad,
};
use crate::provider::config::{LATENCY_KEYS, PROVIDER_KEYS};

/// How keys are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyCase {
    /// `maxConcurrency`: the HTTP API's and the original's.
    Camel,
    /// `max_concurrency`: `tem.toml`'s.
    Snake,
}

/// Which cases a service's keys were written in.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Seen {
    camel: bool,
    snake: bool,
}

impl Seen {
    /// The case the service was written in; `prefer` when it shows neither or both.
    pub fn case(self, prefer: KeyCase) -> KeyCase {
        match (self.camel, self.snake) {
            (true, false) => KeyCase::Camel,
            (false, true) => KeyCase::Snake,
            _ => prefer,
        }
    }
}

/// The objects inside a service whose keys are config keys too. `models` and `limits` are not:
/// they hold model names and limit names, which are never renamed.
const NESTED: &[&str] = &["rateLimit", "errorSimulation", "budget", "headers", "latency"];

/// `max_concurrency` → `maxConcurrency`, `rate_limit_on_429` → `rateLimitOn429`.
pub fn camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `maxConcurrency` → `max_concurrency`, `rateLimitOn429` → `rate_limit_on_429`; a word that is
/// not camelCase (no capital, or a capital first: `JSON`, `gpt-4o`) is kept.
pub fn snake(word: &str) -> String {
    let is_camel =
        word.starts_with(|c: char| c.is_ascii_lowercase()) && word.chars().any(|c| c.is_ascii_uppercase());
    if !is_camel {
        return word.to_owned();
    }
    let mut out = String::with_capacity(word.len() + 4);
    let mut previous: Option<char> = None;
    for c in word.chars() {
        let boundary = match previous {
            Some(p) => {
                (c.is_ascii_uppercase() && !p.is_ascii_uppercase())
                    || (c.is_ascii_digit() && p.is_ascii_alphabetic())
            }
            None => false,
        };
        if boundary {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
        previous = Some(c);
    }
    out
}

/// A service's JSON with its snake_case keys in camelCase, and which cases it used. A key given
/// in both cases is refused, naming both.
pub(crate) fn to_camel(value: &Value) -> Result<(Value, Seen), ConfigError> {
    let mut seen = Seen::default();
    let Value::Object(object) = value else {
        return Ok((value.clone(), seen));
    };
    let mut out = rename(object, "", &mut seen)?;
    for key in NESTED {
        if let Some(Value::Object(inner)) = out.get(*key) {
            let prefix = format!("{}.", original_key(object, key));
            let renamed = rename(inner, &prefix, &mut seen)?;
            out.insert((*key).to_owned(), Value::Object(renamed));
        }
    }
    Ok((Value::Object(out), seen))
}

/// The key of `object` (as written) that renames to `camel_key`.
fn original_key(object: &Map<String, Value>, camel_key: &str) -> String {
    object
        .keys()
        .find(|k| camel(k) == camel_key)
        .cloned()
        .unwrap_or_else(|| camel_key.to_owned())
}

fn rename(
    object: &Map<String, Value>,
    prefix: &str,
    seen: &mut Seen,
) -> Result<Map<String, Value>, ConfigError> {
    let mut out = Map::new();
    for (key, value) in object {
        if key.contains('_') {
            seen.snake = true;
        } else if key.chars().any(|c| c.is_ascii_uppercase()) {
            seen.camel = true;
        }
        let target = camel(key);
        if out.contains_key(&target) {
            let other = object
                .keys()
                .find(|k| *k != key && camel(k) == target)
                .cloned()
                .unwrap_or_else(|| target.clone());
            return Err(bad(
                &format!("{prefix}{key}"),
                format!("is given twice (also as `{prefix}{other}`): keep one"),
            ));
        }
        out.insert(target, value.clone());
    }
    Ok(out)
}

/// `error` with every camelCase word (in its field and its message) in snake_case.
pub(crate) fn snake_error(error: ConfigError) -> ConfigError {
    ConfigError {
        field: snake_words(&error.field),
        message: snake_words(&error.message),
    }
}

/// `text` with each word made of letters, digits and `_` passed through [`snake`].
fn snake_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut word = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            out.push_str(&snake(&word));
            word.clear();
            out.push(c);
        }
    }
    out.push_str(&snake(&word));
    out
}

/// Every key a service may have, as `path` in snake_case (`rate_limit.window_ms`): what
/// `tem mock-server --help` must list.
pub fn config_keys() -> Vec<String> {
    let mut keys = vec!["kind".to_owned()];
    let nested: [(&str, &[&str]); 5] = [
        ("rateLimit", RATE_LIMIT_KEYS),
        ("errorSimulation", ERROR_SIMULATION_KEYS),
        ("budget", BUDGET_KEYS),
        ("headers", HEADERS_KEYS),
        ("latency", LATENCY_KEYS),
    ];
    for key in SERVICE_KEYS.iter().chain(PROVIDER_KEYS) {
        let path = snake(key);
        if !keys.contains(&path) {
            keys.push(path);
        }
    }
    for (parent, children) in nested {
        for child in children {
            keys.push(format!("{}.{}", snake(parent), snake(child)));
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Definition;
    use serde_json::json;

    #[test]
    fn cases_convert_both_ways() {
        for (camel_key, snake_key) in [
            ("maxConcurrency", "max_concurrency"),
            ("rateLimitOn429", "rate_limit_on_429"),
            ("windowMs", "window_ms"),
            ("limit", "limit"),
        ] {
            assert_eq!(camel(snake_key), camel_key);
            assert_eq!(snake(camel_key), snake_key);
        }
        assert_eq!(snake("JSON"), "JSON");
        assert_eq!(snake("gpt"), "gpt");
    }

    #[test]
    fn a_snake_case_service_parses_like_its_camel_case_twin() {
        let snake_form = json!({"max_concurrency": 2,
            "rate_limit": {"limit": 5, "window_ms": 1000, "algorithm": "sliding_window"},
            "delay_ms": [0, 0], "error_simulation": {"rate": 0.5, "status_code": 503},
            "headers": {"rate_limit_on_success": false}, "echo": true});
        let camel_form = json!({"maxConcurrency": 2,
            "rateLimit": {"limit": 5, "windowMs": 1000, "algorithm": "sliding_window"},
            "delayMs": [0, 0], "errorSimulation": {"rate": 0.5, "statusCode": 503},
            "headers": {"rateLimitOnSuccess": false}, "echo": true});
        assert_eq!(
            Definition::from_json_any_case(&snake_form, KeyCase::Snake).unwrap(),
            Definition::from_json(&camel_form).unwrap()
        );
        let provider = json!({"kind": "openai", "window_ms": 1000, "api_key": "k",
            "latency": {"first_token_ms": [0, 0]}, "models": {"my_model": {"rpm": 1}}});
        let Definition::Provider(p) = Definition::from_json_any_case(&provider, KeyCase::Snake).unwrap()
        else {
            panic!("an openai service")
        };
        assert_eq!(p.window_ms, 1000);
        assert_eq!(p.latency.first_token_ms, [0, 0]);
        assert!(p.models.contains_key("my_model"), "model names are never renamed");
    }

    #[test]
    fn errors_name_the_key_as_written() {
        let error = |value: Value| Definition::from_json_any_case(&value, KeyCase::Snake).unwrap_err();
        let e = error(json!({"max_concurrency": 1, "rate_limit": {"limit": 1, "window_ms": 0}}));
        assert_eq!(e.field, "rate_limit.window_ms");
        let e = error(json!({"maxConcurrency": 1, "rateLimit": {"limit": 1, "windowMs": 0}}));
        assert_eq!(e.field, "rateLimit.windowMs", "camelCase stays camelCase");
        let e = error(json!({"max_concurency": 1}));
        assert_eq!(e.field, "max_concurency");
        assert!(e.message.contains("max_concurrency, rate_limit"), "{e}");
        let e = error(json!({"max_concurrency": 1, "maxConcurrency": 2}));
        assert!(e.message.contains("given twice"), "{e}");
        let e = error(
            json!({"max_concurrency": 1, "rate_limit": {"limit": 1, "window_ms": 1},
                             "headers": {"rate_limit_on_429": "yes"}}),
        );
        assert_eq!(e.field, "headers.rate_limit_on_429");
    }

    #[test]
    fn every_key_is_listed() {
        let keys = config_keys();
        for key in [
            "max_concurrency",
            "rate_limit.window_ms",
            "headers.rate_limit_on_success",
            "latency.per_token_ms",
            "default_max_tokens",
            "echo",
            "kind",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
        }
    }
}
