//! Batches of HTTP calls: what a line of input becomes in the database, and the request it turns
//! into at call time.
//!
//! A line is either a full request (`{"method", "url" | "path", "headers", "body"}`) or a
//! payload substituted into the [`RequestTemplate`] (`{field}` in the path, `{{field}}` in the
//! body template). The template's header values may name environment variables as `${NAME}`;
//! they are expanded when the call is made, so secrets never reach the database or the logs.
//!
//! Input lines are data, not configuration: they cannot read the environment (`${…}` in a
//! line's headers is refused), and the template's headers — which may carry a key — go only to
//! the template's own origin when it has one, so a line naming another host never receives them.

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
    /// The values `${VAR}`s expanded to, so they can be masked if the API echoes them.
    pub secrets: Vec<String>,
}

/// Why a line (or a template setting) cannot become a request: the field and what is wrong.
/// The line number is not part of it: it is the task's, and the same mistake on many lines is
/// one kind of error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct LineError {
    pub field: String,
    pub message: String,
}

impl LineError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        LineError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A JSON error of one line: its column, not "line 1" (the line number is the input's).
fn json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let what = text.rfind(" at line ").map_or(text.as_str(), |at| &text[..at]);
    format!("not valid JSON at column {}: {what}", e.column())
}

const REQUEST_KEYS: [&str; 5] = ["method", "url", "path", "headers", "body"];

/// Reads one input line. A line that is not valid is kept, as [`LineKind::Invalid`], so its
/// task fails with the reason instead of the whole run stopping.
pub fn parse_line(line: u64, text: &str) -> StoredLine {
    let kind = match serde_json::from_str::<Value>(text) {
        Err(e) => LineKind::Invalid(format!("(line): {}", json_error(&e))),
        Ok(Value::Object(object)) if is_full_request(&object) => match full_request(object) {
            Ok(request) => LineKind::Request(request),
            Err(e) => LineKind::Invalid(e.to_string()),
        },
        Ok(payload @ Value::Object(_)) => LineKind::Payload(payload),
        Ok(other) => LineKind::Invalid(format!(
            "(line): must be a JSON object (a request or a payload), got {}",
            kind_of(&other)
        )),
    };
    StoredLine { line, kind }
}

/// A full request has `url` or `path`; the other request keys alone could be a payload's.
fn is_full_request(object: &Map<String, Value>) -> bool {
    object.contains_key("url") || object.contains_key("path")
}

fn full_request(object: Map<String, Value>) -> Result<FullRequest, LineError> {
    let bad = |field: &str, message: String| LineError::new(field, message);
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
                if value.contains("${") {
                    return Err(bad(
                        &format!("headers.{name}"),
                        "`${…}` is expanded only in --header values, never in input lines (a line \
                         could otherwise send any environment variable anywhere)"
                            .to_owned(),
                    ));
                }
                headers.insert(name.to_ascii_lowercase(), value.clone());
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
        let bad = |field: &str, message: String| LineError::new(field, message);
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
    ) -> Result<PreparedRequest, LineError> {
        let (method, url, line_headers, body) = match &stored.kind {
            LineKind::Invalid(reason) => {
                let (field, message) = reason.split_once(": ").unwrap_or(("(line)", reason));
                return Err(LineError::new(field, message));
            }
            LineKind::Request(request) => {
                let method = request
                    .method
                    .as_deref()
                    .or(self.method.as_deref())
                    .unwrap_or("POST");
                let url = match (&request.url, &request.path) {
                    (Some(url), _) => url.clone(),
                    (None, Some(path)) => join(self.base_url.as_deref(), path)
                        .ok_or_else(|| LineError::new("path", "a relative path needs --base-url"))?,
                    (None, None) => return Err(LineError::new("url", "missing")),
                };
                (
                    method.to_owned(),
                    url,
                    request.headers.clone(),
                    request.body.clone(),
                )
            }
            LineKind::Payload(payload) => {
                let path = fill_path(self.path.as_deref().unwrap_or(""), payload)?;
                let url = join(self.base_url.as_deref(), &path)
                    .ok_or_else(|| LineError::new("(template)", "a payload line needs --base-url"))?;
                let body = match &self.body {
                    Some(template) => Some(fill_body(template, payload)?),
                    None => Some(payload.clone()),
                };
                let method = self.method.as_deref().unwrap_or("POST");
                (method.to_owned(), url, BTreeMap::new(), body)
            }
        };
        let method = parse_method(&method).map_err(|m| LineError::new("method", m))?;
        let body = if matches!(method, http::Method::GET | http::Method::HEAD) {
            None
        } else {
            body
        };
        // The template's headers (perhaps a key) go only to the template's origin, when it has
        // one; a line's own headers win over them, name for name.
        let template_headers = match self.base_url.as_deref() {
            Some(base) if origin(base) != origin(&url) => None,
            _ => Some(&self.headers),
        };
        let mut secrets = Vec::new();
        let mut merged: BTreeMap<String, String> = BTreeMap::new();
        let overridden = |name: &str| line_headers.keys().any(|k| k.eq_ignore_ascii_case(name));
        for (name, value) in template_headers.into_iter().flatten() {
            if overridden(name) {
                continue;
            }
            let value = expand_env(value, env, &mut secrets).map_err(|var| {
                LineError::new(
                    format!("header {name}"),
                    format!("the environment variable `{var}` is not set"),
                )
            })?;
            merged.insert(name.to_ascii_lowercase(), value);
        }
        for (name, value) in line_headers {
            merged.insert(name.to_ascii_lowercase(), value);
        }
        let mut headers = Vec::with_capacity(merged.len());
        for (name, value) in merged {
            let bad = |e: &dyn std::fmt::Display| LineError::new(format!("header {name}"), e.to_string());
            let header_name = http::HeaderName::try_from(name.as_str()).map_err(|e| bad(&e))?;
            let header_value = http::HeaderValue::try_from(value).map_err(|e| bad(&e))?;
            headers.push((header_name, header_value));
        }
        Ok(PreparedRequest {
            method,
            url,
            headers,
            body,
            secrets,
        })
    }
}

/// `https://api.example.com:8443` of a URL, without user info, path, query or fragment: where a
/// call goes, safe to show (a query or user info may carry a key).
pub fn origin(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[after_scheme..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{}{}", &url[..after_scheme], host.to_ascii_lowercase())
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
fn fill_path(template: &str, payload: &Value) -> Result<String, LineError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| LineError::new("path", format!("unclosed `{{` in `{template}`")))?;
        let field = &after[..end];
        let value = payload
            .get(field)
            .ok_or_else(|| LineError::new(field, "the path template needs this payload field"))?;
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(LineError::new(
                    field,
                    format!("a path field must be a string or number, got {}", kind_of(other)),
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
fn fill_body(template: &Value, payload: &Value) -> Result<Value, LineError> {
    Ok(match template {
        Value::String(s) => {
            let trimmed = s.trim();
            if let Some(field) = trimmed.strip_prefix("{{").and_then(|t| t.strip_suffix("}}"))
                && !field.contains("{{")
            {
                return payload.get(field.trim()).cloned().ok_or_else(|| {
                    LineError::new(field.trim(), "the body template needs this payload field")
                });
            }
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("{{") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let end = after
                    .find("}}")
                    .ok_or_else(|| LineError::new("body", format!("unclosed `{{{{` in `{s}`")))?;
                let field = after[..end].trim();
                let value = payload
                    .get(field)
                    .ok_or_else(|| LineError::new(field, "the body template needs this payload field"))?;
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
                .collect::<Result<_, LineError>>()?,
        ),
        other => other.clone(),
    })
}

/// `Bearer ${TOKEN}` with the variable's value (also pushed to `secrets`); errs with the name of
/// a missing variable.
pub fn expand_env(
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Vec<String>,
) -> Result<String, String> {
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
        let secret = env(name).ok_or_else(|| name.to_owned())?;
        out.push_str(&secret);
        secrets.push(secret);
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
            r#"{"method": "GET", "path": "/health", "headers": {"X-A": "1", "Authorization": "mine"}, "body": {"ignored": true}}"#,
        );
        let request = template().prepare(&stored, &env).unwrap();
        assert_eq!(
            (request.method, request.url.as_str()),
            (http::Method::GET, "http://api.test/health")
        );
        assert_eq!(request.body, None, "GET sends no body");
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            headers,
            [("authorization", "mine"), ("x-a", "1")],
            "names compare case-blind"
        );
        assert!(request.secrets.is_empty());
    }

    #[test]
    fn lines_cannot_read_the_environment_or_take_the_template_headers_elsewhere() {
        let elsewhere = template()
            .prepare(&parse_line(2, r#"{"url": "https://other.test/x"}"#), &env)
            .unwrap();
        assert_eq!(elsewhere.url, "https://other.test/x");
        assert!(
            elsewhere.headers.is_empty(),
            "the key stays with the template's origin"
        );
        let same = template()
            .prepare(&parse_line(3, r#"{"url": "http://API.test/y"}"#), &env)
            .unwrap();
        assert_eq!(same.headers.len(), 1);
        assert_eq!(same.secrets, ["s3cret"]);
        let reason = match parse_line(4, r#"{"path": "/x", "headers": {"x-leak": "${HOME}"}}"#).kind {
            LineKind::Invalid(reason) => reason,
            other => panic!("expected an invalid line, got {other:?}"),
        };
        assert!(reason.starts_with("headers.x-leak: `${…}`"), "{reason}");
        assert_eq!(
            origin("https://user:pw@Api.test:8443/v1?key=k"),
            "https://api.test:8443"
        );
    }

    #[test]
    fn bad_lines_name_their_field() {
        let reason = |text: &str| match parse_line(7, text).kind {
            LineKind::Invalid(reason) => reason,
            other => panic!("expected an invalid line, got {other:?}"),
        };
        assert!(reason("{not json").starts_with("(line): not valid JSON"));
        // The input names the line; the parser's own "line 1" would mislead.
        let bad = reason(r#"{"a": 1, "b": }"#);
        assert!(bad.contains("at column 15") && !bad.contains("line 1"), "{bad}");
        assert!(reason("[1,2]").contains("must be a JSON object"));
        assert!(reason(r#"{"path": "/x", "method": "YELL"}"#).starts_with("method:"));
        assert!(reason(r#"{"url": "ftp://x"}"#).starts_with("url:"));
        assert!(reason(r#"{"path": "/x", "headers": {"a": 1}}"#).starts_with("headers.a:"));
        assert!(reason(r#"{"path": "/x", "color": "red"}"#).starts_with("color:"));
        let missing = template()
            .prepare(&parse_line(9, r#"{"text": "hi"}"#), &env)
            .unwrap_err();
        assert_eq!(missing.field, "id");
        let invalid = template().prepare(&parse_line(9, "{not json"), &env).unwrap_err();
        assert_eq!(invalid.field, "(line)");
        let no_env = RequestTemplate {
            headers: [("x-key".to_owned(), "${NOPE}".to_owned())].into(),
            ..template()
        };
        let err = no_env
            .prepare(&parse_line(1, r#"{"id": 1, "text": "x"}"#), &env)
            .unwrap_err();
        assert!(err.to_string().contains("`NOPE` is not set"), "{err}");
    }
}
