//! What can be wrong with a request, said once for both providers; each provider renders it in
//! its own error JSON (`openai::render`, `anthropic::render`), naming the field its own way
//! (`messages[0].role` or `messages.0.role`).

use std::time::Duration;

use serde_json::Value;

use super::quota::Refusal;

/// A path into the request body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Field(Vec<Step>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

impl Field {
    /// A top-level field.
    pub fn top(key: &str) -> Self {
        Field(vec![Step::Key(key.to_owned())])
    }

    /// `self.key`.
    pub fn key(&self, key: &str) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Key(key.to_owned()));
        Field(steps)
    }

    /// `self[index]`.
    pub fn index(&self, index: usize) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Index(index));
        Field(steps)
    }

    /// OpenAI's spelling: `messages[0].role`.
    pub fn brackets(&self) -> String {
        let mut out = String::new();
        for step in &self.0 {
            match step {
                Step::Key(k) if out.is_empty() => out.push_str(k),
                Step::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Step::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    /// Anthropic's spelling: `messages.0.role`.
    pub fn dots(&self) -> String {
        self.0
            .iter()
            .map(|s| match s {
                Step::Key(k) => k.clone(),
                Step::Index(i) => i.to_string(),
            })
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// Why a field is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Invalid {
    Missing,
    /// Expected `expected` ("an array"), got `got` ("a string").
    Type {
        expected: &'static str,
        got: &'static str,
    },
    /// One of `supported`, got `got`.
    Value {
        got: String,
        supported: &'static [&'static str],
    },
    /// An empty array where one item at least is needed.
    Empty,
    /// An integer below `min`.
    Below {
        min: u64,
    },
}

/// A request the service will not answer with 200.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    /// The body is not JSON (or not an object).
    Json(String),
    Invalid(Field, Invalid),
    /// No key, or the wrong one.
    Unauthorized {
        given: Option<String>,
    },
    /// Anthropic's `anthropic-version` header is missing.
    NoVersion,
    /// No such route.
    NoRoute {
        method: String,
        path: String,
    },
    /// No such model.
    NoModel(String),
    /// Over a rate limit.
    Limited(Refusal),
    /// Over the concurrency cap.
    Overloaded,
}

impl Problem {
    /// The field with `reason`.
    pub fn invalid(field: Field, reason: Invalid) -> Self {
        Problem::Invalid(field, reason)
    }

    /// How long a client should wait before trying again, when waiting helps.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Problem::Limited(refusal) => refusal.retry_after,
            _ => None,
        }
    }
}

/// "a string", "an array"… as error messages name JSON types.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a decimal",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reading a request body field by field, each failure naming its field.
pub(crate) mod read {
    use serde_json::{Map, Value};

    use super::{Field, Invalid, Problem, type_name};

    fn wrong(field: &Field, expected: &'static str, value: &Value) -> Problem {
        Problem::invalid(
            field.clone(),
            Invalid::Type {
                expected,
                got: type_name(value),
            },
        )
    }

    /// The body as a JSON object.
    pub fn object(body: &[u8]) -> Result<Map<String, Value>, Problem> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => Err(Problem::Json(format!(
                "the body must be a JSON object, got {}",
                type_name(&other)
            ))),
            Err(e) => Err(Problem::Json(e.to_string())),
        }
    }

    /// A present, non-null value.
    pub fn present<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
        object.get(key).filter(|v| !v.is_null())
    }

    /// A required string.
    pub fn string<'a>(object: &'a Map<String, Value>, key: &str, at: &Field) -> Result<&'a str, Problem> {
        match present(object, key) {
            None => Err(Problem::invalid(at.clone(), Invalid::Missing)),
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(wrong(at, "a string", v)),
        }
    }

    /// An optional string.
    pub fn opt_string<'a>(
        object: &'a Map<String, Value>,
        key: &str,
        at: &Field,
    ) -> Result<Option<&'a str>, Problem> {
        match present(object, key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(wrong(at, "a string", v)),
        }
    }

    /// An optional integer of at least `min`.
    pub fn opt_integer(
        object: &Map<String, Value>,
        key: &str,
        at: &Field,
        min: u64,
    ) -> Result<Option<u64>, Problem> {
        match present(object, key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n >= min => Ok(Some(n)),
                Some(_) => Err(Problem::invalid(at.clone(), Invalid::Below { min })),
                None if v.as_i64().is_some() => Err(Problem::invalid(at.clone(), Invalid::Below { min })),
                None => Err(wrong(at, "an integer", v)),
            },
        }
    }

    /// An optional boolean (absent is false).
    pub fn flag(object: &Map<String, Value>, key: &str, at: &Field) -> Result<bool, Problem> {
        match present(object, key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(wrong(at, "a boolean", v)),
        }
    }

    /// A required, non-empty array.
    pub fn array<'a>(object: &'a Map<String, Value>, key: &str, at: &Field) -> Result<&'a [Value], Problem> {
        match present(object, key) {
            None => Err(Problem::invalid(at.clone(), Invalid::Missing)),
            Some(Value::Array(items)) if items.is_empty() => {
                Err(Problem::invalid(at.clone(), Invalid::Empty))
            }
            Some(Value::Array(items)) => Ok(items),
            Some(v) => Err(wrong(at, "an array", v)),
        }
    }

    /// An array item that must be an object.
    pub fn item<'a>(value: &'a Value, at: &Field) -> Result<&'a Map<String, Value>, Problem> {
        value.as_object().ok_or_else(|| wrong(at, "an object", value))
    }

    /// A type error for a value that is none of the accepted shapes.
    pub fn not(value: &Value, at: &Field, expected: &'static str) -> Problem {
        wrong(at, expected, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_spelled_each_providers_way() {
        let f = Field::top("messages").index(0).key("role");
        assert_eq!(f.brackets(), "messages[0].role");
        assert_eq!(f.dots(), "messages.0.role");
    }
}
