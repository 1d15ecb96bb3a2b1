//! [`HttpHandler`]: the task handler that makes one HTTP call per task and turns the response
//! into an outcome — 2xx success, 429 rate-limited, 502/503/504 overloaded, 408 and other 5xx
//! and network errors retryable, other 4xx final — with the response body as the result.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::request::{RequestTemplate, StoredLine, origin};
use crate::handler::{Handler, HandlerFuture, TaskContext};
use crate::outcome::{ErrorKind, TaskError};

/// How calls are made and what is kept of a response.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Bytes of a response body kept as the task's result; the rest is cut and the result
    /// marked `truncated`.
    pub max_result_bytes: usize,
    /// Dotted path of a number in the response's JSON body that says what the call really cost
    /// against the weighted budget (e.g. `usage.total_tokens`).
    pub response_cost_field: Option<String>,
    /// Longest wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// The `User-Agent` header, unless the request sets its own.
    pub user_agent: String,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            max_result_bytes: 1 << 20,
            response_cost_field: None,
            connect_timeout: Duration::from_secs(10),
            user_agent: concat!("tem/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Longest error message kept from a response body.
const MESSAGE_CHARS: usize = 200;

/// Looks up the value of a `${NAME}` in a header.
pub type SecretSource = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Makes the HTTP call a task stands for. Cheap to clone; clones share one connection pool.
#[derive(Clone)]
pub struct HttpHandler {
    client: reqwest::Client,
    template: Arc<RequestTemplate>,
    options: Arc<HttpOptions>,
    secrets: SecretSource,
}

/// The client could not be built (TLS set-up).
#[derive(Debug, thiserror::Error)]
#[error("could not build the HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

impl HttpHandler {
    /// A handler that fills `template` with each task's line.
    pub fn new(template: RequestTemplate, options: HttpOptions) -> Result<Self, ClientError> {
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .user_agent(options.user_agent.clone())
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .redirect(same_origin_redirects())
            .build()?;
        Ok(HttpHandler {
            client,
            template: Arc::new(template),
            options: Arc::new(options),
            secrets: Arc::new(|name| std::env::var(name).ok()),
        })
    }

    /// Reads `${NAME}` from `secrets` instead of the process environment.
    pub fn with_secrets(mut self, secrets: SecretSource) -> Self {
        self.secrets = secrets;
        self
    }

    async fn call_line(self, payload: String, ctx: TaskContext) -> Result<Option<String>, TaskError> {
        let stored: StoredLine = serde_json::from_str(&payload)
            .map_err(|e| TaskError::non_retryable(format!("the task's payload is not an input line: {e}")))?;
        let request = self
            .template
            .prepare(&stored, &*self.secrets)
            .map_err(|e| TaskError::non_retryable(e.to_string()))?;
        let secrets = request.secrets;
        let mut builder = self.client.request(request.method, &request.url);
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let target = origin(&request.url);
        let response = builder.send().await.map_err(|e| network_error(e, &target))?;
        let status = response.status();
        let headers = response.headers().clone();
        let (bytes, truncated) = read_capped(response, self.options.max_result_bytes)
            .await
            .map_err(|e| network_error(e, &target))?;
        let body = body_value(&mask(bytes, &secrets), truncated);
        if status.is_redirection() {
            let to = headers
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(origin)
                .unwrap_or_else(|| "nowhere".into());
            return Err(TaskError::non_retryable(format!(
                "redirected to {to}: redirects are followed only within one origin, so headers \
                 (and any key in them) never go elsewhere"
            ))
            .with_status(status.as_u16()));
        }
        if let Some(error) = TaskError::from_response(status, &headers, summary(&body, status)) {
            return Err(error);
        }
        if let Some(path) = &self.options.response_cost_field
            && let Some(cost) = lookup(&body, path).and_then(Value::as_u64)
        {
            ctx.report_cost(cost);
        }
        let mut result = serde_json::json!({ "status": status.as_u16(), "body": body });
        if truncated {
            result["truncated"] = Value::Bool(true);
        }
        Ok(Some(result.to_string()))
    }
}

impl Handler for HttpHandler {
    fn call(&self, payload: &str, ctx: TaskContext) -> HandlerFuture {
        Box::pin(self.clone().call_line(payload.to_owned(), ctx))
    }
}

/// Reads at most `cap` bytes of the body; says whether there was more.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap.saturating_sub(bytes.len());
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok((bytes, true));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, false))
}

/// The body as JSON when it is JSON, else as text (an empty body is `null`).
fn body_value(bytes: &[u8], truncated: bool) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    if !truncated && let Ok(json) = serde_json::from_slice::<Value>(bytes) {
        return json;
    }
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

/// What an error response says, in one short line: its `error`/`message` field when it is JSON
/// (so the same error groups together in reports), else the start of its text.
fn summary(body: &Value, status: http::StatusCode) -> String {
    let said = ["error.message", "error", "message", "detail", "title"]
        .iter()
        .find_map(|path| lookup(body, path).and_then(Value::as_str).map(str::to_owned))
        .or_else(|| body.as_str().map(str::to_owned))
        .map(|text| text.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|text| !text.is_empty());
    match said {
        Some(text) if text.chars().count() > MESSAGE_CHARS => {
            format!("{}…", text.chars().take(MESSAGE_CHARS).collect::<String>())
        }
        Some(text) => text,
        None => status.canonical_reason().unwrap_or("no body").to_owned(),
    }
}

/// `usage.total_tokens` in `{"usage": {"total_tokens": 12}}`.
pub(crate) fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |value, key| value.get(key))
}

/// Follows a redirect only to the same origin (at most 5): reqwest drops `Authorization` on a
/// cross-host redirect but not an `x-api-key`, and the template's headers must not leave it.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().map(|u| u.origin());
        if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects")
        } else if first.is_some_and(|first| first == attempt.url().origin()) {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// The body with every expanded secret replaced by `***`: some APIs echo the key back, and the
/// body is stored.
fn mask(bytes: Vec<u8>, secrets: &[String]) -> Vec<u8> {
    let echoed =
        |secret: &String| secret.len() >= 4 && bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
    if !secrets.iter().any(echoed) {
        return bytes;
    }
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(secret.as_str(), "***");
    }
    text.into_bytes()
}

/// A failed call that got no response, with where it went but not the full URL.
fn network_error(error: reqwest::Error, origin: &str) -> TaskError {
    let kind = if error.is_timeout() {
        ErrorKind::Timeout
    } else if error.is_builder() {
        ErrorKind::NonRetryable
    } else {
        ErrorKind::Retryable
    };
    let error = error.without_url();
    let mut message = format!("{origin}: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    TaskError::new(kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_summaries_group_by_what_the_api_said() {
        let s = |body: Value| summary(&body, http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            s(json!({"error": "rate_limit_exceeded", "retryAfterMs": 12})),
            "rate_limit_exceeded"
        );
        assert_eq!(
            s(json!({"error": {"message": "slow down", "code": 7}})),
            "slow down"
        );
        assert_eq!(s(json!("upstream\n  timed out")), "upstream timed out");
        assert_eq!(s(Value::Null), "Too Many Requests");
        assert!(s(json!("x".repeat(500))).chars().count() <= MESSAGE_CHARS + 1);
    }

    #[test]
    fn bodies_are_json_when_they_parse_and_text_when_cut() {
        assert_eq!(body_value(br#"{"a":1}"#, false), json!({"a": 1}));
        assert_eq!(body_value(br#"{"a":1"#, true), json!(r#"{"a":1"#));
        assert_eq!(body_value(b"plain", false), json!("plain"));
        assert_eq!(body_value(b"", false), Value::Null);
        assert_eq!(
            lookup(&json!({"usage": {"total_tokens": 12}}), "usage.total_tokens"),
            Some(&json!(12))
        );
        assert_eq!(
            mask(br#"{"echo":"Bearer k3y-1"}"#.to_vec(), &["k3y-1".into()]),
            br#"{"echo":"Bearer ***"}"#
        );
    }
}
