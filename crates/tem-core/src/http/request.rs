//! Batches of HTTP calls: what a line of input becomes in the database, and the request it turns
//! into at call time.
//!
//! A line is either a full request (`{"method", "url" | "path", "headers", "body"}`) or a
//! payload substituted into the [`RequestTemplate`] (`{field}` in the path, `{{field}}` in the
//! body template). Header values may name environment variables as `${NAME}`; they are expanded
//! when the call is made, so secrets never reach the database or the logs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How a payload line becomes a request (and what a full-request line falls back to).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestTemplate {
    /// Prefix of every `path` (e.g. `https://api.example.com`).
    pub base_url: Option<String>,
    /// `POST` by default.
    pub method: Option<String>,
    /// Path template, e.g. `/v1/items/{id}`; `{field}` takes the payload's field, URL-encoded.
    pub path: Option<String>,
    /// Headers of every request; values may contain `${ENV_VAR}`.
    pub headers: BTreeMap<String, String>,
    /// Body template: JSON whose strings may contain `{{field}}`. Absent: the payload itself.
    pub body: Option<Value>,
}

/// What a line of input is stored as (the task payload).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredLine {
    /// 1-based line number in the input.
    pub line: u64,
    #[serde(flatten)]
    pub kind: LineKind,
}

/// A line's content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// A full request of its own.
    Request(FullRequest),
    /// A payload for the template.
    Payload(Value),
    /// A line that could not be read; its task fails at once with this reason.
    Invalid(String),
}

/// A request written out in full on its input line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FullRequest {
    pub method: Option<String>,
    pub url: Option<String>,
    pub path: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub body: Option<Value>,
}

/// A concrete request, ready to send.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedRequest {
    pub method: http::Method,
    pub url: String,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub body: Option<Value>,
}

/// Why a line could not become a request: the field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {field}: {message}")]
pub struct LineError {
    pub line: u64,
    pub field: String,
    pub message: String,
}

const REQUEST_KEYS: [&str; 5] = ["method", "url", "path", "headers", "body"];

/// Reads one input line. A line that is not valid is kept, as [`LineKind::Invalid`], so its
/// task fails with the reason instead of the whole run stopping.
pub fn parse_line(line: u64, text: &str) -> StoredLine {
    let kind = match serde_json::from_str::<Value>(text) {
        Err(e) => LineKind::Invalid(format!("line {line}: (line): not valid JSON: {e}")),
        Ok(Value::Object(object)) if is_full_request(&object) => match full_request(line, object) {
            Ok(request) => LineKind::Request(request),
            Err(e) => LineKind::Invalid(e.to_string()),
        },
        Ok(payload @ Value::Object(_)) => LineKind::Payload(payload),
        Ok(other) => LineKind::Invalid(format!(
            "line {line}: (line): must be a JSON object (a request or a payload), got {}",
            kind_of(&other)
        )),
    };
    StoredLine { line, kind }
}

/// A full request has `url` or `path`; the other request keys alone could be a payload's.
fn is_full_request(object: &Map<String, Value>) -> bool {
    object.contains_key("url") || object.contains_key("path")
}

fn full_request(line: u64, object: Map<String, Value>) -> Result<FullRequest, LineError> {
    let bad = |field: &str, message: String| LineError {
        line,
        field: field.to_owned(),
        message,
    };
    if let Some(unknown) = object.keys().find(|k| !REQUEST_KEYS.contains(&k.as_str())) {
        return Err(bad(
            unknown,
            format!(
                "is not a request field (a request line has only {})",
                REQUEST_KEYS.join(", ")
            ),
        ));
    }
    let text = |field: &str| -> Result<Option<String>, LineError> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(bad(field, format!("must be a string, got {}", kind_of(other)))),
        }
    };
    let method = text("method")?;
    if let Some(method) = &method {
        parse_method(method).map_err(|m| bad("method", m))?;
    }
    let url = text("url")?;
    if let Some(url) = &url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(bad(
            "url",
            format!("must start with http:// or https://, got `{url}`"),
        ));
    }
    let path = text("path")?;
    if url.is_some() && path.is_some() {
        return Err(bad("path", "give `url` or `path`, not both".to_owned()));
    }
    let headers = match object.get("headers") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(map)) => {
            let mut headers = BTreeMap::new();
            for (name, value) in map {
                let Value::String(value) = value else {
                    return Err(bad(&format!("headers.{name}"), "must be a string".to_owned()));
                };
                http::HeaderName::try_from(name.as_str()).map_err(|_| {
                    bad(
                        &format!("headers.{name}"),
                        "is not a valid header name".to_owned(),
                    )
                })?;
                headers.insert(name.clone(), value.clone());
            }
            headers
        }
        Some(other) => {
            return Err(bad(
                "headers",
                format!("must be an object of strings, got {}", kind_of(other)),
            ));
        }
    };
    Ok(FullRequest {
        method,
        url,
        path,
        headers,
        body: object.get("body").cloned().filter(|b| !b.is_null()),
    })
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A method name as the API will see it.
pub fn parse_method(method: &str) -> Result<http::Method, String> {
    let upper = method.trim().to_ascii_uppercase();
    match upper.as_str() {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => {
            http::Method::from_bytes(upper.as_bytes()).map_err(|e| e.to_string())
        }
        _ => Err(format!(
            "`{method}` is not one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
        )),
    }
}

impl RequestTemplate {
    /// Checks what does not depend on a line, naming the setting.
    pub fn validate(&self) -> Result<(), LineError> {
        let bad = |field: &str, message: String| LineError {
            line: 0,
            field: field.to_owned(),
            message,
        };
        if let Some(base) = &self.base_url
            && !(base.starts_with("http://") || base.starts_with("https://"))
        {
            return Err(bad(
                "base_url",
                format!("must start with http:// or https://, got `{base}`"),
            ));
        }
        if let Some(method) = &self.method {
            parse_method(method).map_err(|m| bad("method", m))?;
        }
        for name in self.headers.keys() {
            http::HeaderName::try_from(name.as_str())
                .map_err(|_| bad(&format!("header {name}"), "is not a valid header name".to_owned()))?;
        }
        Ok(())
    }

    /// The `${NAME}` variables the template's headers use, with their header: what must be set
    /// before a run starts.
    pub fn secret_names(&self) -> Vec<(String, String)> {
        let mut names = Vec::new();
        for (header, value) in &self.headers {
            let mut rest = value.as_str();
            while let Some(start) = rest.find("${") {
                let after = &rest[start + 2..];
                let Some(end) = after.find('}') else { break };
                names.push((header.clone(), after[..end].to_owned()));
                rest = &after[end + 1..];
            }
        }
        names
    }

    /// The request a stored line stands for, with `${ENV}` expanded now. `env` looks a variable
    /// up (the process environment, in production).
    pub fn prepare(
        &self,
        stored: &StoredLine,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PreparedRequest, String> {
        let line = stored.line;
        let (method, url, mut headers, body) = match &stored.kind {
            LineKind::Invalid(reason) => return Err(reason.clone()),
            LineKind::Request(request) => {
                let method = request
                    .method
                    .as_deref()
                    .or(self.method.as_deref())
                    .unwrap_or("POST");
                let url = match (&request.url, &request.path) {
                    (Some(url), _) => url.clone(),
                    (None, Some(path)) => join(self.base_url.as_deref(), path)
                        .ok_or_else(|| format!("line {line}: path: a relative path needs --base-url"))?,
                    (None, None) => return Err(format!("line {line}: url: missing")),
                };
                let mut headers = self.headers.clone();
                headers.extend(request.headers.clone());
                (method.to_owned(), url, headers, request.body.clone())
            }
            LineKind::Payload(payload) => {
                let path = self.path.as_deref().unwrap_or("");
                let path = fill_path(path, payload).map_err(|e| format!("line {line}: {e}"))?;
                let url = join(self.base_url.as_deref(), &path)
                    .ok_or_else(|| format!("line {line}: (template): a payload line needs --base-url"))?;
                let body = match &self.body {
                    Some(template) => {
                        Some(fill_body(template, payload).map_err(|e| format!("line {line}: {e}"))?)
                    }
                    None => Some(payload.clone()),
                };
                let method = self.method.as_deref().unwrap_or("POST");
                (method.to_owned(), url, self.headers.clone(), body)
            }
        };
        let method = parse_method(&method).map_err(|m| format!("line {line}: method: {m}"))?;
        let body = if matches!(method, http::Method::GET | http::Method::HEAD) {
            None
        } else {
            body
        };
        let mut prepared = Vec::with_capacity(headers.len());
        for (name, value) in std::mem::take(&mut headers) {
            let value = expand_env(&value, env)
                .map_err(|var| format!("header {name}: the environment variable `{var}` is not set"))?;
            let name =
                http::HeaderName::try_from(name.as_str()).map_err(|e| format!("header {name}: {e}"))?;
            let value = http::HeaderValue::try_from(value).map_err(|e| format!("header {name}: {e}"))?;
            prepared.push((name, value));
        }
        Ok(PreparedRequest {
            method,
            url,
            headers: prepared,
            body,
        })
    }
}

fn join(base: Option<&str>, path: &str) -> Option<String> {
    if path.starts_with("http://") || path.starts_with("https://") {
        return Some(path.to_owned());
    }
    let base = base?.trim_end_matches('/');
    if path.is_empty() {
        return Some(base.to_owned());
    }
    Some(format!("{base}/{}", path.trim_start_matches('/')))
}

/// `/items/{id}` with the payload's `id`, percent-encoded.
fn fill_path(template: &str, payload: &Value) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("path: unclosed `{{` in `{template}`"))?;
        let field = &after[..end];
        let value = payload
            .get(field)
            .ok_or_else(|| format!("{field}: the path template needs this payload field"))?;
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(format!(
                    "{field}: a path field must be a string or number, got {}",
                    kind_of(other)
                ));
            }
        };
        out.push_str(&percent_encode(&text));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The body template with `{{field}}` filled: a string that is exactly `{{field}}` becomes the
/// field's JSON value; inside a longer string, its text.
fn fill_body(template: &Value, payload: &Value) -> Result<Value, String> {
    Ok(match template {
        Value::String(s) => {
            let trimmed = s.trim();
            if let Some(field) = trimmed.strip_prefix("{{").and_then(|t| t.strip_suffix("}}"))
                && !field.contains("{{")
            {
                return payload
                    .get(field.trim())
                    .cloned()
                    .ok_or_else(|| format!("{}: the body template needs this payload field", field.trim()));
            }
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("{{") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let end = after
                    .find("}}")
                    .ok_or_else(|| format!("body: unclosed `{{{{` in `{s}`"))?;
                let field = after[..end].trim();
                let value = payload
                    .get(field)
                    .ok_or_else(|| format!("{field}: the body template needs this payload field"))?;
                match value {
                    Value::String(text) => out.push_str(text),
                    other => out.push_str(&other.to_string()),
                }
                rest = &after[end + 2..];
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| fill_body(i, payload))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), fill_body(v, payload)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// `Bearer ${TOKEN}` with the variable's value; errs with the name of a missing variable.
fn expand_env(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        out.push_str(&env(name).ok_or_else(|| name.to_owned())?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cret".to_owned())
    }

    fn template() -> RequestTemplate {
        RequestTemplate {
            base_url: Some("http://api.test/".into()),
            method: Some("post".into()),
            path: Some("/v1/items/{id}".into()),
            headers: [("authorization".to_owned(), "Bearer ${TOKEN}".to_owned())].into(),
            body: Some(json!({"model": "m", "input": "{{text}}", "note": "id={{id}}"})),
        }
    }

    #[test]
    fn payload_lines_fill_the_template_and_secrets_stay_out_of_storage() {
        let stored = parse_line(3, r#"{"id": "a b", "text": ["x", 1]}"#);
        let stored_json = serde_json::to_string(&stored).unwrap();
        assert!(!stored_json.contains("s3cret"));
        let request = template().prepare(&stored, &env).unwrap();
        assert_eq!(request.method, http::Method::POST);
        assert_eq!(request.url, "http://api.test/v1/items/a%20b");
        assert_eq!(
            request.body,
            Some(json!({"model": "m", "input": ["x", 1], "note": "id=a b"}))
        );
        assert_eq!(request.headers[0].1, "Bearer s3cret");
        assert_eq!(
            template().secret_names(),
            [("authorization".to_owned(), "TOKEN".to_owned())]
        );
    }

    #[test]
    fn full_request_lines_win_over_the_template() {
        let stored = parse_line(
            1,
            r#"{"method": "GET", "path": "/health", "headers": {"x-a": "1"}, "body": {"ignored": true}}"#,
        );
        let request = template().prepare(&stored, &env).unwrap();
        assert_eq!(
            (request.method, request.url.as_str()),
            (http::Method::GET, "http://api.test/health")
        );
        assert_eq!(request.body, None, "GET sends no body");
        assert_eq!(request.headers.len(), 2);
        let stored = parse_line(2, r#"{"url": "https://other.test/x"}"#);
        assert_eq!(
            template().prepare(&stored, &env).unwrap().url,
            "https://other.test/x"
        );
    }

    #[test]
    fn bad_lines_name_their_line_and_field() {
        let reason = |text: &str| match parse_line(7, text).kind {
            LineKind::Invalid(reason) => reason,
            other => panic!("expected an invalid line, got {other:?}"),
        };
        assert!(reason("{not json").starts_with("line 7: (line): not valid JSON"));
        assert!(reason("[1,2]").contains("must be a JSON object"));
        assert!(reason(r#"{"path": "/x", "method": "YELL"}"#).starts_with("line 7: method:"));
        assert!(reason(r#"{"url": "ftp://x"}"#).starts_with("line 7: url:"));
        assert!(reason(r#"{"path": "/x", "headers": {"a": 1}}"#).starts_with("line 7: headers.a:"));
        assert!(reason(r#"{"path": "/x", "color": "red"}"#).starts_with("line 7: color:"));
        let missing = template()
            .prepare(&parse_line(9, r#"{"text": "hi"}"#), &env)
            .unwrap_err();
        assert!(missing.starts_with("line 9: id:"), "{missing}");
        let no_env = RequestTemplate {
            headers: [("x-key".to_owned(), "${NOPE}".to_owned())].into(),
            ..template()
        };
        let err = no_env
            .prepare(&parse_line(1, r#"{"id": 1, "text": "x"}"#), &env)
            .unwrap_err();
        assert!(err.contains("`NOPE` is not set"), "{err}");
    }
}
